"""Unit tests of `llada2_levenshtein` (LLaDA2.2 DELETE / SPLIT editing) and of the `mode` knob.

As tests/units/test_algorithms_units.py: one `step` at a time on a fake forward batch, logits built by
hand over a small vocabulary (V = 16: ordinary tokens 0..12, DELETE 13, SPLIT 14, MASK 15). The
device compaction is also checked against a list-based reference of the edit application, and
whole random trajectories (batched, adversarial) against the invariants: prompt untouched, no
control token or mask left in a finished block, done within `max_steps`, done only after a forward
that saw the final block, rows independent of their batch. Runs on CPU (torch twins of the kernels)
or on CUDA (Triton kernels) when available.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, Optional, Sequence

import pytest
import torch
from sglang.srt.dllm.config import DllmConfig

from sglang_llada.algorithms.edit import EditAlgorithm
from sglang_llada.algorithms.knobs import REQUEST_STEP_CAP
from sglang_llada.algorithms.levenshtein import (
    LevenshteinAlgorithm,
    apply_indel,
    scatter_moved,
)
from sglang_llada.algorithms.unmask import (
    FactorAlgorithm,
    StaticAlgorithm,
    ThresholdAlgorithm,
)
from sglang_llada.kernels.testing import host_syncs
from sglang_llada.testing.batch_knobs import with_request_knobs

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
V = 16
D, P, M = 13, 14, 15  # DELETE, SPLIT, MASK
ORD = V - 3  # ordinary tokens: 0 .. 12
NEG = float("-inf")

# (token, probability) of one position's prediction
Pred = tuple[int, float]


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def config(name: str, knobs: Optional[dict[str, Any]] = None, s: int = 6, **ids: Any) -> DllmConfig:
    ids = {"delete_token_id": D, "split_token_id": P, **ids}
    return DllmConfig(algorithm=name, algorithm_config=knobs or {}, block_size=s, mask_id=M,
                      max_running_requests=8, **ids)


def make(knobs: Optional[dict[str, Any]] = None, s: int = 6) -> LevenshteinAlgorithm:
    return LevenshteinAlgorithm(config(LevenshteinAlgorithm.NAME, knobs, s))


def batch(ids: Sequence[Sequence[int]], prompt_mask: Optional[torch.Tensor] = None, **extra: Any) -> SimpleNamespace:
    t = torch.tensor(ids, dtype=torch.int64, device=DEVICE)
    b, s = t.shape
    fields = dict(input_ids=t.reshape(-1).clone(), batch_size=b,
                  dllm_prompt_mask=None if prompt_mask is None else prompt_mask.to(DEVICE),
                  positions=torch.arange(b * s, dtype=torch.int32, device=DEVICE), sampling_info=None,
                  rids=[f"r{i}" for i in range(b)])
    fields.update(extra)
    return SimpleNamespace(**fields)


def position_logits(token: int, prob: float) -> torch.Tensor:
    """[V] fp64: argmax `token` with softmax probability `prob` over the finite entries.

    MASK, DELETE and SPLIT are -inf unless `token` is one of them; the ordinary tokens other than
    `token` are 0 (so where a predicted DELETE / SPLIT is excluded, the choice falls to token 0).
    """
    out = torch.zeros(V, dtype=torch.float64)
    out[[D, P, M]] = NEG
    n_other = ORD - (0 if token in (D, P, M) else 1)
    out[token] = math.log(prob * n_other / (1 - prob))
    return out


def control_with_runner_up(control: int, runner_up: int) -> torch.Tensor:
    """[V] fp64: `control` first (probability ~0.76), `runner_up` second; with `control` excluded,
    `runner_up` has probability ~0.97."""
    out = position_logits(control, 0.99)  # logit ~7.16 against 13 ordinary zeros
    out[runner_up] = 6.0
    return out


def logits_for(preds: Sequence[Sequence[Any]]) -> torch.Tensor:
    """[B*S, V] fp32 logits from one (token, prob) -- or a ready [V] row -- per position."""
    rows = [x if isinstance(x, torch.Tensor) else position_logits(*x) for row in preds for x in row]
    return torch.stack(rows).to(device=DEVICE, dtype=torch.float32)


def keep(ids: Sequence[int], prob: float = 0.99) -> list[Pred]:
    """Predictions that agree with the current tokens (a mask predicts token 0)."""
    return [(0 if t == M else t, prob) for t in ids]


def ids_of(fb: SimpleNamespace) -> list[list[int]]:
    return fb.input_ids.view(fb.batch_size, -1).tolist()


def start(algo: LevenshteinAlgorithm, block: list[list[int]], now: Optional[list[list[int]]] = None,
          prompt_mask: Optional[torch.Tensor] = None) -> tuple[SimpleNamespace, list[Any]]:
    """A fresh block's state (prompt / original masks from `block`), then input_ids set to `now`
    (as if earlier steps had written those tokens)."""
    fb = batch(block, prompt_mask)
    states = algo.init_step_state(fb)
    if now is not None:
        fb.input_ids.copy_(torch.tensor(now, device=DEVICE).reshape(-1))
    return fb, states


# ----------------------------------------------------------------------------------------------
# DELETE / SPLIT
# ----------------------------------------------------------------------------------------------


def test_delete_shifts_left_and_pads_with_mask() -> None:
    algo = make()  # Q: threshold 0.7, edit_threshold 0.5
    fb, states = start(algo, [[5, M, M, M, M, M]], now=[[5, 1, 2, 3, 4, M]])
    preds = [[(5, 0.99), (1, 0.99), (D, 0.9), (3, 0.99), (4, 0.99), (9, 0.99)]]
    done = algo.step(fb, logits_for(preds), states)
    # T2T DELETE at 2 (0.9 > 0.5), M2T 9 at 5; the tail is padded with a (non-original) mask
    assert ids_of(fb) == [[5, 1, 3, 4, 9, M]]
    assert done == [False]
    rows = states[0].rows
    assert rows.orig.tolist() == [[False, True, True, True, True, False]]
    assert rows.prompt.tolist() == [[True, False, False, False, False, False]]
    lp = rows.logprobs[0].tolist()
    assert lp[4] == pytest.approx(math.log(0.99), abs=1e-5) and lp[5] == 0.0  # 9 moved from 5 to 4
    assert rows.indel_steps.tolist() == [1]
    # the trajectory moves with the tokens too: 9, written by this step's forward (1), is now at 4
    assert rows.first_at.tolist() == [[0, 0, 0, 0, 1, 0]] and rows.last_at.tolist() == [[0, 0, 0, 0, 1, 0]]


def test_delete_below_edit_threshold_is_not_applied() -> None:
    algo = make()
    fb, states = start(algo, [[5, M, M, M, M, M]], now=[[5, 1, 2, 3, 4, 6]])
    algo.step(fb, logits_for([[(5, 0.99), (1, 0.99), (D, 0.4), (3, 0.99), (4, 0.99), (6, 0.99)]]), states)
    assert ids_of(fb) == [[5, 1, 2, 3, 4, 6]]


def test_split_inserts_a_mask_before_the_token_and_cuts_the_tail() -> None:
    algo = make()
    fb, states = start(algo, [[5, M, M, M, M, M]], now=[[5, 1, 2, 3, 4, 9]])
    preds = [[(5, 0.99), (1, 0.99), (P, 0.9), (3, 0.99), (4, 0.99), (9, 0.99)]]
    assert algo.step(fb, logits_for(preds), states) == [False]
    assert ids_of(fb) == [[5, 1, M, 2, 3, 4]]  # [.., MASK, old token 2, ..]; 9 pushed out
    rows = states[0].rows
    assert rows.orig.tolist() == [[False, True, False, True, True, True]]  # the new mask is introduced
    # no original mask left: the next step commits every mask whatever its confidence
    assert algo.step(fb, logits_for([keep([5, 1]) + [(7, 0.1)] + keep([2, 3, 4])]), states) == [False]
    assert ids_of(fb) == [[5, 1, 7, 2, 3, 4]]
    assert rows.logprobs[0, 2].item() == pytest.approx(math.log(0.1), abs=1e-5)
    # then a step that changes nothing, with no mask: done
    assert algo.step(fb, logits_for([keep([5, 1, 7, 2, 3, 4])]), states) == [True]


def test_split_at_a_mask_keeps_the_original_mask_and_commits_one_more() -> None:
    algo = make()
    fb, states = start(algo, [[5, M, M, M, M, M]])
    # the most confident position (1) predicts SPLIT; nothing else passes the threshold
    preds = [[(5, 0.99), (P, 0.6), (1, 0.2), (2, 0.3), (3, 0.2), (4, 0.2)]]
    algo.step(fb, logits_for(preds), states)
    assert ids_of(fb) == [[5, M, M, M, M, M]]  # [MASK, old MASK]: the block looks the same
    rows = states[0].rows
    assert rows.orig.tolist() == [[False, False, True, True, True, True]]
    # 4 original masks + 1 introduced: 2 commits are needed; only one passes the threshold, so
    # the two most confident ones
    preds = [[(5, 0.99), (6, 0.5), (7, 0.2), (8, 0.8), (9, 0.2), (10, 0.2)]]
    algo.step(fb, logits_for(preds), states)
    assert ids_of(fb) == [[5, 6, M, 8, M, M]]
    # 2 original + 1 introduced left: 2 pass the threshold, which is enough
    preds = [[(5, 0.99), (6, 0.99), (7, 0.9), (8, 0.99), (9, 0.9), (10, 0.6)]]
    algo.step(fb, logits_for(preds), states)
    assert ids_of(fb) == [[5, 6, 7, 8, 9, M]]


def test_control_tokens_are_consumed_in_the_step_that_writes_them() -> None:
    algo = make(s=8)
    fb, states = start(algo, [[5, M, M, M, M, M, M, M]])
    preds = [[(5, 0.99), (D, 0.9), (1, 0.9), (P, 0.9), (2, 0.9), (D, 0.9), (3, 0.9), (P, 0.9)]]
    algo.step(fb, logits_for(preds), states)
    # 1: deleted; 3: [M, M]; 5: deleted; 7: [M, M]; then 2 masks of padding
    assert ids_of(fb) == [[5, 1, M, M, 2, 3, M, M]]
    assert not any(t in (D, P) for t in ids_of(fb)[0])


# ----------------------------------------------------------------------------------------------
# prompt, final round, termination
# ----------------------------------------------------------------------------------------------


def test_prompt_positions_never_move_nor_change() -> None:
    algo = make()
    prompt = torch.tensor([[True, True, True, False, False, False]])
    # a literal mask id and a literal DELETE inside the prompt
    fb, states = start(algo, [[M, D, 4, M, M, M]], prompt_mask=prompt)
    preds = [[(D, 0.99), (P, 0.99), (D, 0.99), (D, 0.9), (7, 0.99), (8, 0.99)]]
    algo.step(fb, logits_for(preds), states)
    assert ids_of(fb) == [[M, D, 4, 7, 8, M]]  # only the non-prompt DELETE at 3 took effect
    preds = [[(P, 0.99), (P, 0.99), (P, 0.99), (P, 0.9), (8, 0.99), (9, 0.99)]]
    algo.step(fb, logits_for(preds), states)
    assert ids_of(fb) == [[M, D, 4, M, 7, 8]]


def test_control_tokens_excluded_where_nothing_may_move() -> None:
    """A non-prompt position before the last prompt position (not a prefix prompt): no DELETE / SPLIT."""
    algo = make()
    prompt = torch.tensor([[True, False, True, False, False, False]])
    fb, states = start(algo, [[5, M, 6, M, M, M]], prompt_mask=prompt)
    preds = [[(5, 0.99), control_with_runner_up(D, 11), (6, 0.99), (7, 0.99), (8, 0.99), (9, 0.99)]]
    algo.step(fb, logits_for(preds), states)
    assert ids_of(fb) == [[5, 11, 6, 7, 8, 9]]  # DELETE (0.76 >= 0.7) excluded at 1: 11 at 0.97 instead
    # the same logits after the prompt: the DELETE is committed and consumed
    fb, states = start(algo, [[5, M, M, M, M, M]])
    algo.step(fb, logits_for(preds), states)
    assert ids_of(fb) == [[5, 6, 7, 8, 9, M]]


def test_final_round_excludes_control_tokens_and_fills_every_mask() -> None:
    algo = make({"max_edit_steps": 1})
    fb, states = start(algo, [[5, M, M, M, M, M]], now=[[5, 1, 2, 3, 4, 9]])
    # post-edit step 1 = the last budgeted one = the final round: SPLIT is excluded
    done = algo.step(fb, logits_for([keep([5, 1]) + [control_with_runner_up(P, 11)] + keep([3, 4, 9])]), states)
    assert ids_of(fb) == [[5, 1, 11, 3, 4, 9]]  # T2T to the runner-up (0.97 > 0.5)
    assert done == [False]
    # the next step reports done without writing, whatever the logits
    done = algo.step(fb, logits_for([[(D, 0.99)] * 6]), states)
    assert done == [True] and ids_of(fb) == [[5, 1, 11, 3, 4, 9]]
    # without the budget cut, the same SPLIT is applied
    fb, states = start(make({"max_edit_steps": 2}), [[5, M, M, M, M, M]], now=[[5, 1, 2, 3, 4, 9]])
    algo2 = make({"max_edit_steps": 2})
    algo2.step(fb, logits_for([keep([5, 1]) + [control_with_runner_up(P, 11)] + keep([3, 4, 9])]), states)
    assert ids_of(fb) == [[5, 1, M, 2, 3, 4]]


def test_final_round_commits_introduced_masks_with_ordinary_tokens() -> None:
    algo = make({"max_edit_steps": 0})
    fb, states = start(algo, [[5, M, M, M, M, M]], now=[[5, 1, 2, 3, 4, 9]])
    states[0].rows.orig.zero_()  # pretend an earlier SPLIT introduced the masks below
    fb.input_ids.view(1, -1)[0, 2] = M
    fb.input_ids.view(1, -1)[0, 4] = M
    done = algo.step(fb, logits_for([[(5, 0.99), (1, 0.99), (P, 0.99), (3, 0.99), (D, 0.99), (9, 0.99)]]), states)
    # budget 0 and masks left: a final round -- every mask committed, DELETE / SPLIT excluded
    assert ids_of(fb) == [[5, 1, 0, 3, 0, 9]] and done == [False]
    assert algo.step(fb, logits_for([keep([5, 1, 0, 3, 0, 9])]), states) == [True]


@pytest.mark.parametrize("control", [P, D])
@pytest.mark.parametrize(
    "knobs", [{}, {"mode": "S"}, {"max_indel_steps": 3}, {"max_edit_steps": 0}, {"max_indel_steps": 0}]
)
def test_adversarial_control_tokens_finish_within_max_steps(control: int, knobs: dict[str, Any]) -> None:
    """Logits that always predict `control` with certainty at every position, FDFO-style calls."""
    s = 8
    algo = make(knobs, s=s)
    fb, states = start(algo, [[5, 6, M, M, M, M, M, M], [M] * s])
    logits = logits_for([[(control, 0.999)] * s] * 2)
    done = [False, False]
    for n in range(1, algo.max_steps(s) + 1):  # noqa: B007 (n is read after the loop)
        done = algo.step(fb, logits, states)
        if all(done):
            break
    assert all(done), (n, ids_of(fb))
    assert n <= algo.max_steps(s)
    final = ids_of(fb)
    assert final[0][:2] == [5, 6]
    for row, lo in ((final[0], 2), (final[1], 0)):
        assert all(t < ORD for t in row[lo:]), final  # no mask, no control token


def test_t2t_is_strict() -> None:
    for edit_threshold, want in ((0.5, [5, 1, 2, 3]), (0.49, [5, 4, 4, 4])):
        algo = make({"edit_threshold": edit_threshold}, s=4)
        fb, states = start(algo, [[5, M, M, M]], now=[[5, 1, 2, 3]])
        x = torch.full((4, V), NEG)
        x[:, 4] = x[:, 6] = 0.0  # predicts 4 with probability exactly 0.5
        algo.step(fb, x.to(DEVICE), states)
        assert ids_of(fb) == [want]


def test_mask_is_never_written() -> None:
    algo = make()
    fb, states = start(algo, [[5, M, M, M, M, M]], now=[[5, 1, 2, M, M, M]])
    mask_first = control_with_runner_up(M, 11)  # MASK first (it would pass 0.7), 11 second
    preds = [[(5, 0.99), mask_first, mask_first, mask_first, (3, 0.2), (4, 0.2)]]
    algo.step(fb, logits_for(preds), states)
    # no re-mask of 1, 2 (T2T goes to 11 instead); the mask at 3 gets 11, not MASK
    assert ids_of(fb) == [[5, 11, 11, 11, M, M]]


def test_indel_budget_excludes_control_tokens_once_spent() -> None:
    algo = make({"max_indel_steps": 1})
    fb, states = start(algo, [[5, M, M, M, M, M]])
    logits = logits_for([[(5, 0.99)] + [control_with_runner_up(P, 11)] * 5])
    algo.step(fb, logits, states)  # every mask SPLIT: still all masks, 1 step of the budget spent
    assert ids_of(fb) == [[5, M, M, M, M, M]] and states[0].rows.indel_steps.tolist() == [1]
    algo.step(fb, logits, states)  # SPLIT excluded now: the runner-up everywhere (0.97 >= 0.7)
    assert ids_of(fb) == [[5, 11, 11, 11, 11, 11]]


def test_hard_cap_forces_a_final_round() -> None:
    algo = make(s=6)
    fb, states = start(algo, [[5, M, M, M, M, M]])
    states[0].rows.steps.fill_(algo.final_step)  # as if the row had used every step but two
    logits = logits_for([[(5, 0.99), (P, 0.99), (1, 0.1), (2, 0.1), (D, 0.99), (3, 0.1)]])
    assert algo.step(fb, logits, states) == [False]
    # every original mask committed, whatever its confidence, DELETE / SPLIT excluded (-> token 0)
    assert ids_of(fb) == [[5, 0, 1, 2, 0, 3]]
    # then done without writing, even with confident edits on offer
    assert algo.step(fb, logits_for([[(9, 0.99)] * 6]), states) == [True]
    assert ids_of(fb) == [[5, 0, 1, 2, 0, 3]]


def test_done_only_after_the_forward_that_saw_the_final_block() -> None:
    algo = make()
    fb, states = start(algo, [[5, M, M, M, M, M]])
    first = [[(5, 0.99), (1, 0.99), (2, 0.99), (3, 0.99), (4, 0.99), (6, 0.99)]]
    assert algo.step(fb, logits_for(first), states) == [False]  # wrote all 5 masks
    assert algo.step(fb, logits_for(first), states) == [True]  # saw them, changed nothing
    assert ids_of(fb) == [[5, 1, 2, 3, 4, 6]]


def test_logits_are_restored() -> None:
    algo = make()
    fb, states = start(algo, [[5, M, M, M, M, M]] * 2)
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(12, V, generator=g) * 3).to(DEVICE)
    before = logits.clone()
    algo.step(fb, logits, states)
    assert torch.equal(logits, before)


# ----------------------------------------------------------------------------------------------
# list-based reference and random trajectories
# ----------------------------------------------------------------------------------------------


def reference_apply(written: list[int], old: list[int], orig: list[bool], lp_new: list[float], lp_old: list[float],
                    frozen: int) -> tuple[list[int], list[bool], list[float]]:
    """The edit application, one position at a time (positions < `frozen` never take an edit)."""
    s = len(written)
    toks: list[int] = []
    flags: list[bool] = []
    lps: list[float] = []
    for i, tok in enumerate(written):
        if i >= frozen and tok == D:
            continue
        if i >= frozen and tok == P:
            toks += [M, old[i]]
            flags += [False, orig[i]]
            lps += [0.0, lp_old[i]]
        else:
            toks.append(tok)
            flags.append(orig[i])
            lps.append(lp_new[i])
    pad = max(0, s - len(toks))
    return (toks + [M] * pad)[:s], (flags + [False] * pad)[:s], (lps + [0.0] * pad)[:s]


@pytest.mark.parametrize("seed", range(4))
def test_device_compaction_matches_the_list_reference(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    b, s = 16, 12
    written = torch.randint(0, V, (b, s), generator=g)
    heavy = torch.rand(b, s, generator=g) < 0.3  # many DELETE / SPLIT
    written = torch.where(heavy, torch.randint(D, P + 1, (b, s), generator=g), written)
    old = torch.randint(0, V, (b, s), generator=g)
    orig = torch.rand(b, s, generator=g) < 0.5
    lp_new, lp_old = -torch.rand(b, s, generator=g), -torch.rand(b, s, generator=g)
    frozen = torch.randint(0, s + 1, (b,), generator=g)
    editable = torch.arange(s)[None, :] >= frozen[:, None]
    is_del, is_split = editable & (written == D), editable & (written == P)

    dev = [t.to(DEVICE) for t in (written, old, orig, lp_new, lp_old, is_del, is_split)]
    tokens, first, second = apply_indel(dev[0], dev[1], dev[5], dev[6], M)
    flags = scatter_moved(first, second, dev[2] & ~dev[6], dev[2], False)
    lps = scatter_moved(first, second, torch.where(dev[6], 0.0, dev[3]), dev[4], 0.0)
    for r in range(b):
        want = reference_apply(written[r].tolist(), old[r].tolist(), orig[r].tolist(), lp_new[r].tolist(),
                               lp_old[r].tolist(), int(frozen[r]))
        assert tokens[r].tolist() == want[0], r
        assert flags[r].tolist() == want[1], r
        assert lps[r].tolist() == pytest.approx(want[2]), r


def random_logits(g: torch.Generator, n: int) -> torch.Tensor:
    """[n, V]: random, often confident, with DELETE / SPLIT (and MASK) favoured."""
    scale = torch.rand(n, 1, generator=g) * 8
    x = torch.randn(n, V, generator=g) * scale
    x[:, [D, P, M]] += torch.rand(n, 3, generator=g) * 8
    return x


@pytest.mark.parametrize("seed", range(6))
def test_random_trajectories_invariants_and_row_independence(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    b, s = 4, 8
    knobs = [{}, {"mode": "S"}, {"max_indel_steps": 4, "max_edit_steps": 2}][seed % 3]
    algo = make(knobs, s=s)
    blocks = []
    for _ in range(b):
        p = int(torch.randint(0, s, (1,), generator=g))
        prompt = torch.randint(0, V, (p,), generator=g).tolist()  # literal DELETE / SPLIT / MASK possible
        blocks.append([t if t != M else 1 for t in prompt] + [M] * (s - p))
    fb, states = start(algo, blocks)
    solo_algos = [make(knobs, s=s) for _ in range(b)]
    singles = [start(a, [blk]) for a, blk in zip(solo_algos, blocks)]
    prompt_lens = [sum(1 for t in blk if t != M) for blk in blocks]

    seen_before: list[Optional[list[int]]] = [None] * b  # block the forward saw at the step that said done
    done_at: list[Optional[int]] = [None] * b
    for t in range(algo.max_steps(s)):
        logits = random_logits(g, b * s).to(DEVICE)
        before = ids_of(fb)
        done = algo.step(fb, logits, states)
        after = ids_of(fb)
        for r in range(b):
            # the same row alone in its own batch: same tokens, same done flag
            sfb, sst = singles[r]
            sdone = solo_algos[r].step(sfb, logits[r * s:(r + 1) * s].clone(), sst)
            assert ids_of(sfb)[0] == after[r] and sdone == [done[r]], (t, r)
            assert after[r][:prompt_lens[r]] == blocks[r][:prompt_lens[r]]  # prompt untouched
            assert not any(tok in (D, P) for tok in after[r][prompt_lens[r]:])  # never a control token
            if done[r] and done_at[r] is None:
                done_at[r], seen_before[r] = t, before[r]
            if done_at[r] is not None:
                assert after[r] == seen_before[r]  # done: that forward saw the final block, no more writes
        if all(done):
            break
    assert all(d is not None for d in done_at), done_at
    for r in range(b):
        assert M not in after[r][prompt_lens[r]:]  # finished blocks are complete


def test_step_reads_device_data_on_the_host_once() -> None:
    for knobs in ({}, {"sampling": "greedy"}):
        algo = make(knobs)
        info = SimpleNamespace(
            temperatures=torch.tensor([1.0, 0.7], device=DEVICE).view(-1, 1),
            top_ps=torch.ones(2, device=DEVICE),
            top_ks=torch.tensor([1 << 30, 5], dtype=torch.int32, device=DEVICE),
            sampling_seed=None, is_all_greedy=False, need_top_p_sampling=False, need_top_k_sampling=True,
        )
        fb = batch([[5, M, M, M, M, M], [M] * 6], sampling_info=info)
        states = algo.init_step_state(fb)
        g = torch.Generator().manual_seed(1)
        for _ in range(3):
            logits = random_logits(g, 12).to(DEVICE)
            assert host_syncs(lambda: algo.step(fb, logits, states)) == ["tolist"]


def test_fdfo_rows_regroup() -> None:
    algo = make()
    fb1, st1 = start(algo, [[5, M, M, M, M, M], [6, M, M, M, M, M]])
    algo.step(fb1, logits_for([[(5, 0.99), (P, 0.9)] + [(1, 0.99)] * 4] * 2), st1)
    assert ids_of(fb1) == [[5, M, M, 1, 1, 1], [6, M, M, 1, 1, 1]]
    fb2 = batch([[7, M, M, M, M, M], ids_of(fb1)[1]])
    fresh = algo.init_step_state(fb2)
    states = [fresh[0], st1[1]]
    algo.step(fb2, logits_for([[(7, 0.99)] + [(2, 0.99)] * 5, [(6, 0.99)] + [(3, 0.99)] * 5]), states)
    # row 1 carried its state: its masks are the introduced one (1) and the original one (2);
    # T2T (0.99 > 0.5) rewrites the 1s to 3s as well
    assert ids_of(fb2) == [[7, 2, 2, 2, 2, 2], [6, 3, 3, 3, 3, 3]]
    assert states[0].rows is states[1].rows and [st.index for st in states] == [0, 1]
    assert states[1].rows.orig[1].tolist() == [False, False, True, True, True, True]


# ----------------------------------------------------------------------------------------------
# knobs: modes, overrides, control ids
# ----------------------------------------------------------------------------------------------


def knob_values(algo: Any) -> tuple[float, float, int]:
    return (algo.threshold, algo.edit_threshold, algo.max_edit_steps)


@pytest.mark.parametrize(
    ("cls", "knobs", "want"),
    [
        (EditAlgorithm, {}, (0.95, 0.9, 4)),
        (EditAlgorithm, {"mode": "none"}, (0.95, 0.9, 4)),
        (EditAlgorithm, {"mode": "Q"}, (0.7, 0.5, 16)),
        (EditAlgorithm, {"mode": "S"}, (0.5, 0.0, 16)),
        (EditAlgorithm, {"mode": "S", "threshold": 0.9}, (0.9, 0.0, 16)),
        (EditAlgorithm, {"mode": "Q", "edit_threshold": 0.8, "max_edit_steps": 2}, (0.7, 0.8, 2)),
        (EditAlgorithm, {"edit_threshold": 0.6}, (0.95, 0.6, 4)),
        (LevenshteinAlgorithm, {}, (0.7, 0.5, 16)),
        (LevenshteinAlgorithm, {"mode": "Q"}, (0.7, 0.5, 16)),
        (LevenshteinAlgorithm, {"mode": "S"}, (0.5, 0.0, 16)),
        (LevenshteinAlgorithm, {"mode": "S", "max_edit_steps": 3}, (0.5, 0.0, 3)),
        (LevenshteinAlgorithm, {"threshold": 0.95}, (0.95, 0.5, 16)),
    ],
)
def test_modes_and_explicit_overrides(cls: type, knobs: dict[str, Any], want: tuple[float, float, int]) -> None:
    algo = cls(config(cls.NAME, knobs, s=32))
    assert knob_values(algo) == want
    assert (algo.knobs["threshold"], algo.knobs["edit_threshold"], algo.knobs["max_edit_steps"]) == want


@pytest.mark.parametrize(("cls", "allowed"), [(EditAlgorithm, "'none', 'Q', 'S'"), (LevenshteinAlgorithm, "'Q', 'S'")])
def test_unknown_mode_names_the_allowed_values(cls: type, allowed: str) -> None:
    for bad in ("q", "fast", 1):
        with pytest.raises(ValueError) as err:
            cls(config(cls.NAME, {"mode": bad}))
        assert "`mode`" in str(err.value) and allowed in str(err.value) and cls.NAME in str(err.value)


def test_levenshtein_knob_ranges() -> None:
    with pytest.raises(ValueError, match="max_indel_steps"):
        make({"max_indel_steps": -1})
    with pytest.raises(ValueError, match="unknown key"):
        make({"max_post_edit_steps": 4})  # SGLang's spelling is not ours
    algo = make({"max_indel_steps": 5, "max_edit_steps": 3}, s=8)
    assert algo.final_step == 8 + 5 + 3  # the server's budgets bound its rows
    # max_steps covers the largest budgets a request may ask for (custom_params.dllm)
    assert algo.max_steps(8) == 8 + REQUEST_STEP_CAP + REQUEST_STEP_CAP + 2
    big = make({"max_indel_steps": 100, "max_edit_steps": 70}, s=8)
    assert big.max_steps(8) == 8 + 100 + 70 + 2


def test_missing_control_ids_is_a_clear_error() -> None:
    for ids in ({"delete_token_id": None}, {"split_token_id": None}):
        with pytest.raises(ValueError) as err:
            LevenshteinAlgorithm(config(LevenshteinAlgorithm.NAME, **ids))
        text = str(err.value)
        assert "delete_token_id" in text and "split_token_id" in text and "config.json" in text
        assert '--json-model-override-args \'{"delete_token_id": 156930, "split_token_id": 156931}\'' in text
    with pytest.raises(ValueError, match="must differ"):
        LevenshteinAlgorithm(config(LevenshteinAlgorithm.NAME, split_token_id=M))
    with pytest.raises(ValueError, match="token id"):
        LevenshteinAlgorithm(config(LevenshteinAlgorithm.NAME, delete_token_id=True))


# ----------------------------------------------------------------------------------------------
# llada2_edit: strict T2T comparison, S mode
# ----------------------------------------------------------------------------------------------


def two_way_logits(n: int, a: int, b: int) -> torch.Tensor:
    """[n, V]: tokens a and b tied at logit 0, the rest -inf: argmax min(a, b), probability exactly 0.5."""
    x = torch.full((n, V), NEG)
    x[:, a] = 0.0
    x[:, b] = 0.0
    return x.to(DEVICE)


def test_edit_t2t_is_strict_and_s_mode_edits_every_disagreement() -> None:
    def run(knobs: dict[str, Any], logits: torch.Tensor) -> list[list[int]]:
        algo = EditAlgorithm(config(EditAlgorithm.NAME, knobs, s=4))
        fb = batch([[5, M, M, M]])
        states = algo.init_step_state(fb)
        fb.input_ids.copy_(torch.tensor([5, 9, 9, M], device=DEVICE))  # two written positions
        algo.step(fb, logits, states)
        return ids_of(fb)

    at_half = two_way_logits(4, 2, 3)  # predicts 2 with probability exactly 0.5
    assert run({"edit_threshold": 0.5}, at_half) == [[5, 9, 9, 2]]  # 0.5 > 0.5 is false: no edit
    assert run({"edit_threshold": 0.49}, at_half) == [[5, 2, 2, 2]]
    flat = torch.zeros(4, V, device=DEVICE)  # uniform: argmax 0 at probability 1/V
    assert run({"mode": "S"}, flat) == [[5, 0, 0, 0]]  # edit_threshold 0: every disagreeing position
    assert run({"mode": "Q"}, flat) == [[5, 9, 9, 0]]
    assert run({"edit_threshold": 1.0}, torch.nn.functional.one_hot(torch.tensor([4] * 4), V).to(DEVICE) * 200.0) == [
        [5, 9, 9, 4]
    ]  # probability 1.0 (saturated) does not pass 1.0: editing off


# ----------------------------------------------------------------------------------------------
# the other algorithms on a LLaDA2.2 checkpoint: DELETE / SPLIT are never written
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ThresholdAlgorithm, StaticAlgorithm, FactorAlgorithm, EditAlgorithm],
                         ids=lambda c: c.NAME)
def test_other_algorithms_never_write_control_tokens(cls: type) -> None:
    """DELETE / SPLIT are the argmax at two masked positions: with their ids in the DllmConfig the
    runner-up is written instead (base.py `scored`), and the logits are left as they were."""
    preds = [[(5, 0.99), control_with_runner_up(D, 11), control_with_runner_up(P, 12), (7, 0.99)]]

    def decode(**ids: Any) -> list[list[int]]:
        algo = cls(config(cls.NAME, {}, s=4, **ids))
        fb = batch([[5, M, M, M]])
        states = algo.init_step_state(fb)
        logits = logits_for(preds)
        before = logits.clone()
        for _ in range(algo.max_steps(4)):
            done = algo.step(fb, logits, states)
            assert torch.equal(logits, before)
            if all(done):
                break
        assert all(done)
        return ids_of(fb)

    assert decode() == [[5, 11, 12, 7]]
    # not a LLaDA2.2 checkpoint (no control ids): the argmax is written, as before
    assert decode(delete_token_id=None, split_token_id=None) == [[5, D, P, 7]]


def test_edit_never_edits_into_a_control_token() -> None:
    algo = EditAlgorithm(config(EditAlgorithm.NAME, {"mode": "S"}, s=4))
    fb = batch([[5, M, M, M]])
    states = algo.init_step_state(fb)
    fb.input_ids.copy_(torch.tensor([5, 9, 9, 9], device=DEVICE))  # written positions, no mask left
    preds = [[(5, 0.99), control_with_runner_up(P, 11), (D, 0.99), (9, 0.99)]]
    algo.step(fb, logits_for(preds), states)
    # T2T to the runner-up at 1; at 2 (DELETE excluded, the ordinary tokens tie) the draw is token 0
    assert ids_of(fb) == [[5, 11, 0, 9]]


@pytest.mark.parametrize("request_knobs", [False, True], ids=["server", "per-request"])
def test_budgets_near_int32_max_never_force_the_final_round(request_knobs: bool) -> None:
    """A row's forced-final-round step is s + max_indel_steps + max_edit_steps: with the server's
    indel budget at 2**31 - 1 that sum is computed in int64 (in int32 it wrapped negative whenever a row
    of the batch set a knob, and every mask was committed in the first step)."""
    algo = make({"max_indel_steps": 2**31 - 1, "max_edit_steps": 10})
    info = with_request_knobs(SimpleNamespace(is_all_greedy=True), [{"dllm": {"threshold": 0.7}} if request_knobs else None])
    fb = batch([[5, M, M, M, M, M]], sampling_info=info)
    states = algo.init_step_state(fb)
    algo.step(fb, logits_for([[(5, 0.99), (1, 0.2), (2, 0.3), (3, 0.2), (4, 0.2), (6, 0.2)]]), states)
    assert ids_of(fb) == [[5, M, 2, M, M, M]]  # one commit (the most confident), not all five
