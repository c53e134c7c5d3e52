"""Unit tests of sglang_llada.algorithms: one `step` at a time on a fake forward batch.

The fake batch carries only what the steps read (input_ids [B*S], batch_size, dllm_prompt_mask,
positions, sampling_info, rids); logits are built so that each position's argmax and its softmax
probability are chosen by hand. `llada2_threshold` is also checked against SGLang's own
`LowConfidence.step` on random greedy batches, commit for commit. Runs on CPU (the kernels' torch
twins) or, when CUDA is available, on the GPU (the Triton kernels); most of the wall time is
importing SGLang's dLLM package (about 18 s on a busy 2-core machine).
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, Optional

import pytest
import torch
from sglang.srt.dllm.algorithm.low_confidence import LowConfidence
from sglang.srt.dllm.config import DllmConfig

from sglang_llada.algorithms import CLASS_PATHS, register
from sglang_llada.algorithms.edit import EditAlgorithm, EditState
from sglang_llada.algorithms.exact import ExactAlgorithm
from sglang_llada.algorithms.knobs import REQUEST_STEP_CAP
from sglang_llada.algorithms.levenshtein import LevenshteinAlgorithm
from sglang_llada.algorithms.unmask import (
    FactorAlgorithm,
    StaticAlgorithm,
    ThresholdAlgorithm,
    factor_count,
)
from sglang_llada.kernels.testing import host_syncs

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CUDA: the Triton kernels
M = 99  # mask id
V = 40  # vocabulary


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def make(cls: type, knobs: Optional[dict[str, Any]] = None, s: int = 4) -> Any:
    """The algorithm with SGLang's block semantics (a block is done once a forward saw it final):
    fold_store off unless the test sets it (its own tests: test_folded_store.py)."""
    knobs = dict(knobs or {})
    if any(k.name == "fold_store" for k in cls.KNOBS):
        knobs.setdefault("fold_store", "off")
    return cls(DllmConfig(algorithm=cls.NAME, algorithm_config=knobs, block_size=s, mask_id=M, max_running_requests=8))


def batch(ids: list[list[int]], prompt_mask: Optional[torch.Tensor] = None, **extra: Any) -> SimpleNamespace:
    t = torch.tensor(ids, dtype=torch.int64, device=DEVICE)
    b, s = t.shape
    fields = dict(input_ids=t.reshape(-1).clone(), batch_size=b,
                  dllm_prompt_mask=None if prompt_mask is None else prompt_mask.to(DEVICE),
                  positions=torch.arange(b * s, dtype=torch.int32, device=DEVICE), sampling_info=None,
                  rids=[f"r{i}" for i in range(b)])
    fields.update(extra)
    return SimpleNamespace(**fields)


def logits_for(tokens: list[list[int]], probs: list[list[float]]) -> torch.Tensor:
    """[B*S, V] logits whose argmax is `tokens` with softmax probability `probs` (all others equal)."""
    t, p = torch.tensor(tokens), torch.tensor(probs, dtype=torch.float64)
    a = torch.log(p * (V - 1) / (1 - p))  # e^a / (e^a + V - 1) = p
    out = torch.zeros(*t.shape, V, dtype=torch.float64)
    out.scatter_(-1, t.unsqueeze(-1), a.unsqueeze(-1))
    return out.reshape(-1, V).to(device=DEVICE, dtype=torch.float32)


def ids_of(fb: SimpleNamespace) -> list[list[int]]:
    return fb.input_ids.view(fb.batch_size, -1).tolist()


# ----------------------------------------------------------------------------------------------
# threshold
# ----------------------------------------------------------------------------------------------


def test_threshold_commits_confident_positions_else_top1() -> None:
    algo = make(ThresholdAlgorithm)
    fb = batch([[5, M, M, M], [M, M, M, M], [1, 2, 3, 4]])
    logits = logits_for(
        [[9, 10, 11, 12], [20, 21, 22, 23], [30, 31, 32, 33]],
        [[0.99, 0.97, 0.5, 0.96], [0.3, 0.8, 0.6, 0.8], [0.99, 0.99, 0.99, 0.99]],
    )
    done = algo.step(fb, logits, [None] * 3)
    # row 0: prompt kept, 0.97 and 0.96 pass, 0.5 stays masked; row 1: fallback to the most
    # confident, lower index on the 0.8 tie; row 2: nothing masked, nothing written, done.
    assert ids_of(fb) == [[5, 10, M, 12], [M, 21, M, M], [1, 2, 3, 4]]
    assert done == [False, False, True]


def test_threshold_passes_at_equality() -> None:
    """prob == threshold commits (`>=`, the kernels' contract); LowConfidence's `>` would not."""
    algo = make(ThresholdAlgorithm, {"threshold": 1.0})
    fb = batch([[M, M, M, M]])
    logits = torch.full((4, V), float("-inf"))
    logits[:, 3] = 0.0  # probability exactly 1 at positions 0, 1
    logits[2:, 4] = 0.0  # probability 1/2 at positions 2, 3
    algo.step(fb, logits.to(DEVICE), [None])
    assert ids_of(fb) == [[3, 3, M, M]]


def test_threshold_done_only_after_the_forward_that_saw_the_final_block() -> None:
    algo = make(ThresholdAlgorithm)
    fb = batch([[5, M, M, M]])
    logits = logits_for([[0, 1, 2, 3]], [[0.99] * 4])
    assert algo.step(fb, logits, [None]) == [False]  # commits all 3, still not done
    assert ids_of(fb) == [[5, 1, 2, 3]]
    assert algo.step(fb, logits, [None]) == [True]  # next forward saw no mask
    assert ids_of(fb) == [[5, 1, 2, 3]]


def test_threshold_respects_dllm_prompt_mask() -> None:
    algo = make(ThresholdAlgorithm)
    prompt = torch.tensor([[True, True, False, False]])  # a literal mask id inside the prompt
    fb = batch([[M, 7, M, M]], prompt_mask=prompt)
    algo.step(fb, logits_for([[1, 2, 3, 4]], [[0.99] * 4]), [None])
    assert ids_of(fb) == [[M, 7, 3, 4]]


@pytest.mark.parametrize("seed", range(6))
def test_threshold_matches_sglang_low_confidence(seed: int) -> None:
    """Whole greedy trajectories on random batches: same input_ids and done flags at every step."""
    g = torch.Generator().manual_seed(seed)
    b, s = 5, 8
    ours, theirs = make(ThresholdAlgorithm, {"threshold": 0.9}, s), LowConfidence(
        DllmConfig("LowConfidence", {"threshold": 0.9}, s, M, 8)
    )
    start = torch.randint(0, V, (b, s), generator=g)
    start[torch.rand(b, s, generator=g) < 0.7] = M
    start[0] = torch.randint(0, V, (s,), generator=g)  # a block with nothing to do
    start[1] = M
    prompt = None
    if seed % 2:  # SGLang's literal-mask-id path: the prompt part is given explicitly
        prompt = torch.zeros(b, s, dtype=torch.bool)
        prompt[2, :3] = True
        start[2, 1] = M
    fb_ours = batch(start.tolist(), prompt)
    fb_theirs = batch(start.tolist(), prompt)
    for _ in range(s + 1):
        scale = torch.rand(b * s, 1, generator=g) * 12  # confidences from ~1/V to ~1
        logits = (torch.randn(b * s, V, generator=g) * scale).to(DEVICE)
        d_ours = ours.step(fb_ours, logits.clone(), [None] * b)
        d_theirs = theirs.step(fb_theirs, logits.clone(), [None] * b)
        assert d_ours == d_theirs
        assert torch.equal(fb_ours.input_ids, fb_theirs.input_ids)
        if all(d_ours):
            break
    assert all(d_ours)


def test_step_reads_device_data_on_the_host_once() -> None:
    for cls in (ThresholdAlgorithm, StaticAlgorithm, FactorAlgorithm, EditAlgorithm):
        algo = make(cls)
        fb = batch([[5, M, M, M], [M, M, M, M]])
        states = algo.init_step_state(fb)
        logits = logits_for([[1, 2, 3, 4]] * 2, [[0.6] * 4] * 2)
        assert host_syncs(lambda: algo.step(fb, logits, states)) == ["tolist"], cls.NAME


# ----------------------------------------------------------------------------------------------
# static, factor
# ----------------------------------------------------------------------------------------------


def test_static_commits_n_per_step() -> None:
    algo = make(StaticAlgorithm, {"tokens_per_step": 2}, s=6)
    fb = batch([[M, M, M, M, M, 4], [M, 3, 3, 3, 3, 3]])
    logits = logits_for([[10, 11, 12, 13, 14, 15]] * 2, [[0.999, 0.2, 0.7, 0.7, 0.1, 0.9]] * 2)
    assert algo.step(fb, logits, [None] * 2) == [False, False]
    # top-2 despite 0.999 alone passing any threshold; 0.7 tie -> lower index; row 1 has only 1 left
    assert ids_of(fb) == [[10, M, 12, M, M, 4], [10, 3, 3, 3, 3, 3]]
    assert algo.step(fb, logits, [None] * 2) == [False, True]
    assert ids_of(fb) == [[10, 11, 12, 13, M, 4], [10, 3, 3, 3, 3, 3]]  # 0.7 then 0.2 (> 0.1)


@pytest.mark.parametrize(
    ("confs", "factor", "n"),
    [
        ([0.99, 0.9, 0.8, 0.3], 1.0, 3),  # 2*.01, 3*.1, 4*.2 < 1; 5*.7 is not
        ([0.99, 0.9, 0.8, 0.3], 0.5, 2),  # 4*.2 = .8 fails
        ([0.99, 0.9, 0.8, 0.3], 4.0, 4),  # everything
        ([0.4, 0.3, 0.2, 0.1], 1.0, 1),  # 2*.6 = 1.2 fails: at least one
        ([0.8, 0.75, 0.7, 0.6], 1.0, 2),  # 3*.25 = .75 passes, 4*.3 = 1.2 does not
    ],
)
def test_factor_rule(confs: list[float], factor: float, n: int) -> None:
    algo = make(FactorAlgorithm, {"factor": factor})
    fb = batch([[M, M, M, M]])
    order = [2, 0, 3, 1]  # confidences scattered over the block
    probs = [0.0] * 4
    for rank, pos in enumerate(order):
        probs[pos] = confs[rank]
    algo.step(fb, logits_for([[1, 2, 3, 4]], [probs]), [None])
    committed = [pos for pos in range(4) if ids_of(fb)[0][pos] != M]
    assert sorted(committed) == sorted(order[:n])


def test_factor_count_matches_plain_definition() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        prob = torch.rand(3, 8, generator=g) ** 0.3
        masked = torch.rand(3, 8, generator=g) < 0.7
        masked[0, 0] = True
        factor = float(torch.rand(1, generator=g) * 3 + 0.05)
        got = factor_count(prob, masked, factor).tolist()
        for row in range(3):
            c = sorted(prob[row][masked[row]].tolist(), reverse=True)
            n = max([k for k in range(1, len(c) + 1) if all((j + 1) * (1 - c[j - 1]) < factor for j in range(1, k + 1))], default=0)
            assert got[row] == max(n, 1)


# ----------------------------------------------------------------------------------------------
# edit
# ----------------------------------------------------------------------------------------------


def test_edit_replaces_tokens_only_above_edit_threshold() -> None:
    algo = make(EditAlgorithm)  # threshold 0.95, edit_threshold 0.9
    fb = batch([[5, M, M, M]])  # position 0 is prompt
    states = algo.init_step_state(fb)
    algo.step(fb, logits_for([[9, 6, 7, 8]], [[0.99, 0.99, 0.99, 0.3]]), states)
    assert ids_of(fb) == [[5, 6, 7, M]]
    # the prompt (0.99 for another token) is never edited; 6 -> 16 at 0.95 >= 0.9; 7 kept at 0.85
    done = algo.step(fb, logits_for([[15, 16, 17, 18]], [[0.99, 0.95, 0.85, 0.96]]), states)
    assert ids_of(fb) == [[5, 16, 7, 18]]
    assert done == [False]
    # same prediction as the current token: not an edit, whatever its probability
    done = algo.step(fb, logits_for([[15, 16, 7, 18]], [[0.99, 0.99, 0.99, 0.99]]), states)
    assert ids_of(fb) == [[5, 16, 7, 18]] and done == [True]
    # the trajectory: which forward chose each position's first and last write (0: none, the prompt)
    rows = states[0].rows
    assert rows.forward_no.tolist() == [3]
    assert rows.first_at.tolist() == [[0, 1, 1, 2]] and rows.last_at.tolist() == [[0, 2, 1, 2]]


def test_edit_stops_after_max_edit_steps() -> None:
    algo = make(EditAlgorithm, {"max_edit_steps": 3})
    fb = batch([[5, M, M, M]])
    states = algo.init_step_state(fb)
    assert algo.step(fb, logits_for([[0, 1, 2, 3]], [[0.99] * 4]), states) == [False]  # masks gone
    flips = []
    for i in range(10):
        tok = 20 + i  # always a confident new token at position 1
        done = algo.step(fb, logits_for([[0, tok, 2, 3]], [[0.99] * 4]), states)
        flips.append(ids_of(fb)[0][1])
        if done[0]:
            break
    # 3 edit-only steps, then the step that exceeds the budget finishes without writing
    assert flips == [20, 21, 22, 22]
    # the largest budget a request may ask for (custom_params.dllm), or the server's if larger
    assert algo.max_steps(4) == 4 + REQUEST_STEP_CAP + 1
    assert make(EditAlgorithm, {"max_edit_steps": 100}).max_steps(4) == 4 + 100 + 1


def test_edit_with_zero_budget_ends_blocks_like_threshold() -> None:
    edit, thr = make(EditAlgorithm, {"max_edit_steps": 0}), make(ThresholdAlgorithm)
    fb_e, fb_t = batch([[5, M, M, M]]), batch([[5, M, M, M]])
    states = edit.init_step_state(fb_e)
    for probs in ([0.99, 0.99, 0.99, 0.2], [0.99, 0.99, 0.99, 0.99], [0.99] * 4):
        logits = logits_for([[1, 2, 3, 4]], [probs])
        assert edit.step(fb_e, logits, states) == thr.step(fb_t, logits, [None])
        assert ids_of(fb_e) == ids_of(fb_t)


def test_edit_finished_rows_stay_untouched_and_fdfo_rows_regroup() -> None:
    algo = make(EditAlgorithm)
    fb1 = batch([[5, M, M, M], [6, 7, 8, 9]])
    st1 = algo.init_step_state(fb1)
    logits = logits_for([[1, 2, 3, 4]] * 2, [[0.99] * 4] * 2)
    assert algo.step(fb1, logits, st1) == [False, True]  # row 1 is all prompt: nothing to do
    assert ids_of(fb1) == [[5, 2, 3, 4], [6, 7, 8, 9]]
    assert algo.step(fb1, logits, st1) == [True, True]  # no edits proposed: converged
    # FDFO: a carried state (row 0 of fb1, finished) next to a fresh one, in another order
    fb2 = batch([[M, M, M, M], [5, 2, 3, 4]])
    fresh = algo.init_step_state(fb2)
    states: list[EditState] = [fresh[0], st1[0]]
    done = algo.step(fb2, logits_for([[11, 12, 13, 14]] * 2, [[0.99] * 4] * 2), states)
    assert done == [False, True]
    assert ids_of(fb2) == [[11, 12, 13, 14], [5, 2, 3, 4]]
    assert states[0].rows is states[1].rows and [st.index for st in states] == [0, 1]


# ----------------------------------------------------------------------------------------------
# per-request sampling
# ----------------------------------------------------------------------------------------------


def sampling_info(temps: list[float], top_ks: list[int], seeds: Optional[list[int]] = None) -> SimpleNamespace:
    return SimpleNamespace(
        temperatures=torch.tensor(temps, device=DEVICE).view(-1, 1),
        top_ps=torch.ones(len(temps), device=DEVICE),
        top_ks=torch.tensor(top_ks, dtype=torch.int32, device=DEVICE),
        sampling_seed=None if seeds is None else torch.tensor(seeds, dtype=torch.int64, device=DEVICE),
        is_all_greedy=all(k <= 1 for k in top_ks),
        need_top_p_sampling=False,
        need_top_k_sampling=any(k != 1 << 30 for k in top_ks),
    )


def test_request_sampling_greedy_rows_and_seeds() -> None:
    g = torch.Generator().manual_seed(0)
    s, b = 8, 3
    logits = (torch.randn(b * s, V, generator=g) * 0.1).to(DEVICE)  # flat: sampled tokens differ from argmax
    start = [[M] * s] * b

    def run(knobs: dict[str, Any], info: Optional[SimpleNamespace]) -> list[list[int]]:
        algo = make(StaticAlgorithm, {"tokens_per_step": s, **knobs}, s)
        fb = batch(start, sampling_info=info)
        algo.step(fb, logits, [None] * b)
        return ids_of(fb)

    greedy = run({"sampling": "greedy"}, None)
    assert run({"sampling": "greedy"}, sampling_info([1.0] * b, [1 << 30] * b)) == greedy  # ignores requests
    assert run({}, None) == greedy  # no sampling info: greedy
    info = sampling_info([1.0, 1.0, 1.0], [1, 1 << 30, 5], seeds=[7, 7, 7])
    a, again = run({"sampling": "request"}, info), run({"sampling": "request"}, info)
    assert a == again  # counter-based noise: reproducible
    assert a[0] == greedy[0]  # top_k = 1 is SGLang's greedy
    assert a[1] != greedy[1]
    top5 = logits.view(b, s, V)[2].topk(5, dim=-1).indices
    assert all(a[2][p] in top5[p].tolist() for p in range(s))
    other = run({"sampling": "request"}, sampling_info([1.0] * 3, [1, 1 << 30, 5], seeds=[8, 8, 8]))
    assert other[1] != a[1]
    no_seed = sampling_info([1.0] * 3, [1, 1 << 30, 5])  # seeds from the request ids instead
    assert run({"sampling": "request"}, no_seed) == run({"sampling": "request"}, no_seed)


# ----------------------------------------------------------------------------------------------
# knobs, registration
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "knobs", "words"),
    [
        (ThresholdAlgorithm, {"threshold": 1.5}, ["`threshold`", "[0, 1]", "1.5"]),
        (ThresholdAlgorithm, {"threshold": "0.9"}, ["`threshold`", "a number"]),
        (ThresholdAlgorithm, {"treshold": 0.9}, ["unknown key", "treshold"]),
        (StaticAlgorithm, {"tokens_per_step": 0}, ["`tokens_per_step`", "an integer in [1, inf)"]),
        (StaticAlgorithm, {"tokens_per_step": 2.5}, ["`tokens_per_step`", "an integer"]),
        (StaticAlgorithm, {"tokens_per_step": True}, ["`tokens_per_step`"]),
        (FactorAlgorithm, {"factor": 0}, ["`factor`", "(0, inf)"]),
        (FactorAlgorithm, {"factor": math.inf}, ["`factor`"]),
        (EditAlgorithm, {"edit_threshold": -0.1}, ["`edit_threshold`", "[0, 1]"]),
        (EditAlgorithm, {"max_edit_steps": -1}, ["`max_edit_steps`", "[0, inf)"]),
        (EditAlgorithm, {"sampling": "nucleus"}, ["`sampling`", "'greedy', 'request'"]),
    ],
)
def test_knob_validation(cls: type, knobs: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ValueError) as err:
        make(cls, knobs)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert cls.NAME in str(err.value)


def test_knob_defaults_and_sglang_keys() -> None:
    assert make(ThresholdAlgorithm).knobs == {"threshold": 0.95, "fold_store": "off", "sampling": "request"}
    assert ThresholdAlgorithm(DllmConfig("llada2_threshold", {}, 4, M, 8)).knobs["fold_store"] == "auto"
    assert make(StaticAlgorithm).knobs["tokens_per_step"] == 2
    assert make(FactorAlgorithm).knobs["factor"] == 1.0
    edit = make(EditAlgorithm, {"block_size": 4, "capture_input_preparation": False})
    assert (edit.threshold, edit.edit_threshold, edit.max_edit_steps) == (0.95, 0.9, 4)


def test_register_adds_names_to_sglang_registry() -> None:
    from sglang.srt.dllm.algorithm import (
        algo_name_to_cls,
        get_algorithm,
        get_algorithm_cls,
    )

    register()
    register()  # idempotent
    expected = {"llada2_threshold": ThresholdAlgorithm, "llada2_static": StaticAlgorithm,
                "llada2_factor": FactorAlgorithm, "llada2_edit": EditAlgorithm,
                "llada2_levenshtein": LevenshteinAlgorithm, "llada2_exact": ExactAlgorithm}
    assert set(CLASS_PATHS) == set(expected)
    for name, cls in expected.items():
        assert algo_name_to_cls[name] is cls and get_algorithm_cls(name) is cls
        # llada2_levenshtein needs the DELETE / SPLIT ids (the others ignore them)
        algo = get_algorithm(DllmConfig(name, {}, 32, M, 1, delete_token_id=97, split_token_id=98))
        assert isinstance(algo, cls) and algo.block_size == 32 and algo.mask_id == M
    assert "LowConfidence" in algo_name_to_cls  # SGLang's own entries are kept
