"""LLaDA2.2 edit labels (sglang_llada/toy/edit_labels.py): alignment labels repair drafts."""

from __future__ import annotations

import random

import pytest

from sglang_llada.toy.edit_labels import apply_labels, edit_labels, indel_draft

MASK, DELETE, SPLIT = 0, 1, 2
KW = {"mask": MASK, "delete": DELETE, "split": SPLIT}


def test_each_kind_of_edit_gets_its_label() -> None:
    target = [10, 11, 12, 13]
    assert edit_labels([10, 11, 12, 13], target, **KW) == [10, 11, 12, 13]  # keep
    assert edit_labels([10, MASK, 12, MASK], target, **KW) == [10, 11, 12, 13]  # fill
    assert edit_labels([10, 19, 12, 13], target, **KW) == [10, 11, 12, 13]  # substitute
    assert edit_labels([10, 19, 11, 12], target, **KW) == [10, DELETE, 11, 12]  # an extra token
    assert edit_labels([10, 12, 13, MASK], target, **KW) == [10, SPLIT, 13, DELETE]  # a missing one
    # Equal cost (substitute 8 -> 7, or SPLIT then DELETE the last 8): the substitution wins ties.
    assert edit_labels([7, 7, 8, 8], [7, 7, 7, 8], **KW) == [7, 7, 7, 8]
    # Two missing, with masks behind: cheaper to delete the token and fill the masks in order.
    assert edit_labels([10, 13, MASK, MASK], target, **KW) == [10, DELETE, 11, 12]


@pytest.mark.parametrize("seed", range(20))
def test_writing_the_labels_step_by_step_repairs_the_draft(seed: int) -> None:
    """Applying the labels as `llada2_levenshtein` would (every position written, DELETE and
    SPLIT consumed in the step) and relabelling reaches the target block within a few steps."""
    rng = random.Random(seed)
    target = [rng.choice(range(10, 16)) for _ in range(32)]  # few symbols: many repeats
    draft = indel_draft(target, rng, mask=MASK, alphabet=range(10, 16), rate=0.3, mask_ratio=0.2)
    assert len(draft) == 32
    for _ in range(40):
        labels = edit_labels(draft, target, **KW)
        if labels == draft:
            break
        draft = apply_labels(draft, labels, **KW)
    assert draft == target


def test_drafts_are_seeded_and_keep_the_length() -> None:
    target = list(range(10, 42))
    a = indel_draft(target, random.Random(3), mask=MASK, alphabet=range(10, 16), rate=0.5, mask_ratio=0.25)
    b = indel_draft(target, random.Random(3), mask=MASK, alphabet=range(10, 16), rate=0.5, mask_ratio=0.25)
    assert a == b and len(a) == 32 and a.count(MASK) >= 8 and a != target
