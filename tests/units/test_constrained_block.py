"""One constrained denoising step (sglang_llada/constrained/block.py): the logit mask equals the block
dynamic program's allowed sets, and whatever the logits and however many positions a step commits,
decoding block by block ends in a word of the language within max_new_tokens."""

from __future__ import annotations

import random

import pytest
import torch

from sglang_llada.constrained.automaton import DONE, allowed_tokens
from sglang_llada.constrained.block import RowConstraint, admit_commits, constrain_logits
from sglang_llada.kernels.select_commit import select_commit_torch
from sglang_llada.testing.char_automata import CHARS, EOS, char_automaton

MASK = EOS + 1
V = MASK + 1  # the characters, the end token, the mask token
S = 6


def test_logit_mask_is_the_allowed_sets_at_constrained_positions_only() -> None:
    fsm = char_automaton("a(b|c)*d")
    a = CHARS.index("a")
    # row 0: prompt tail at position 0, output from position 1, positions 1..4 within max_new_tokens
    # (position 5 is past it: never returned, so free); row 1: no constraint
    ids = [[3, a, MASK, MASK, MASK, MASK], [MASK] * S]
    rows = [RowConstraint(fsm, fsm.initial, offset=1, length=4, budget_after=0), None]
    logits = torch.randn(2 * S, V)
    out = constrain_logits(logits.clone(), ids, rows, MASK)
    want = allowed_tokens(fsm, fsm.initial, [a, None, None, None], 0)
    for p in range(S):
        got = set(torch.nonzero(out[p] > float("-inf")).flatten().tolist())
        if 2 <= p <= 4:
            assert got == want[p - 1], p
        else:
            assert torch.equal(out[p], logits[p]), p
    assert torch.equal(out[S:], logits[S:])


def _decode(pattern: str, max_new: int, offset: int, seed: int, threshold: float) -> list[int]:
    """Greedy block decoding of random logits under the constraint, as the algorithm runs it:
    constrain, select_commit, admit; blocks of S, the first starting `offset` positions in."""
    fsm = char_automaton(pattern)
    gen = torch.Generator().manual_seed(seed)
    out: list[int] = []
    state = fsm.initial
    first = True
    while len(out) < max_new and state != DONE:
        off = offset if first else 0
        first = False
        length = min(S - off, max_new - len(out))
        row = RowConstraint(fsm, state, off, length, max(0, max_new - len(out) - length))
        ids = torch.tensor([7] * off + [MASK] * (S - off))
        steps = 0
        while (ids == MASK).any():
            before = [ids.tolist()]
            masked = ids == MASK
            logits = constrain_logits(torch.randn(S, V, generator=gen) * 3, before, [row], MASK)
            logits[:, MASK] = float("-inf")
            prob, token = torch.softmax(logits, dim=-1).max(dim=-1)
            prob = torch.where(masked, prob, torch.tensor(float("-inf")))
            th = torch.tensor([threshold])
            committed, _, _ = select_commit_torch(ids, token, prob, masked, th, torch.tensor([1]), S)
            n_before = int(masked.sum())
            committed = admit_commits(ids, committed, prob, before, [row], MASK)
            assert int((ids == MASK).sum()) < n_before  # every step commits at least one position
            steps += 1
        block = ids.tolist()[off : off + length]
        nxt = fsm.walk(state, block)
        assert nxt is not None, (pattern, out, block)
        out += block
        state = nxt
    return out


@pytest.mark.parametrize("pattern", ["a(b|c)*d", "\\{(ab|cd)*\\}", "(abc|dd)+", "a{3,9}", "(a|b)c?d*"])
def test_decoding_random_logits_under_the_constraint_always_yields_a_word(pattern: str) -> None:
    fsm = char_automaton(pattern)
    rng = random.Random(pattern)
    for trial in range(25):
        max_new = rng.randint(4, 20)
        offset = rng.randint(0, S - 1)
        threshold = rng.choice([0.0, 0.3, 0.9])  # 0.0: the step commits every masked position at once
        out = _decode(pattern, max_new, offset, seed=trial, threshold=threshold)
        assert len(out) <= max_new
        end = fsm.walk(fsm.initial, out)
        assert end is not None and fsm.accepts(end), (pattern, out)
        text = "".join(CHARS[t] for t in out if t != EOS)
        assert all(t == EOS for t in out[len(text):])  # after the end token, only end tokens
