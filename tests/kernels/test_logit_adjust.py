"""The `logit_adjust` Triton kernel vs its torch twin vs SGLang's own penalizers, and the per-step
plumbing that feeds it (sampling.py `LogitAdjuster`).

On a GPU-less machine the kernel runs in the Triton interpreter via `interpreted(...)` (see
kernels/testing.py); on a CUDA machine the compiled kernel runs on the GPU. The references are the
formulas row by row (`logit_adjust_reference` in kernels/logit_adjust.py) and SGLang 0.5.23's
penaltylib itself: its frequency / presence / repetition penalizers, fed the seen tokens one at a
time through `cumulate_output_tokens` as its scheduler does, applied in the overlap scheduler's
order (additive penalties, then `apply_scaling_penalties`, then `logit_bias`).
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any, Optional

import pytest
import torch

import sglang_llada.kernels.logit_adjust as la
from sglang_llada.algorithms.sampling import LogitAdjuster, SeedCache, sampling_kwargs
from sglang_llada.kernels.testing import host_syncs, interpreted

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
V_REAL = 157184


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _case(b: int, s: int, v: int, seed: int, dtype: torch.dtype = torch.float32, bias: bool = True):
    """Random logits [B*S, V], counts, per-request penalties, own tokens, live rows and a sparse bias."""
    g = torch.Generator().manual_seed(seed)
    n = b * s
    logits = (torch.randn(n, v, generator=g) * 3.0).to(dtype)
    logits[0, :3] = float("-inf")  # banned columns stay banned
    counts = torch.zeros(b, v, dtype=torch.int32)
    for i in range(b):
        toks = torch.randint(0, min(v, 64), (int(torch.randint(0, 40, (1,), generator=g)),), generator=g)
        counts[i].index_add_(0, toks, torch.ones_like(toks, dtype=torch.int32))
    own = torch.where(torch.rand(n, generator=g) < 0.5, torch.randint(0, min(v, 64), (n,), generator=g), -1)
    counts.view(-1).index_add_(0, (torch.arange(n) // s * v + own.clamp(min=0)), (own >= 0).to(torch.int32))
    frequency = torch.tensor([0.0, 0.5, -0.7, 2.0, 0.0, 1.3][:b] + [0.4] * max(0, b - 6))
    presence = torch.tensor([0.0, 1.0, 0.0, -1.5, 2.0, 0.2][:b] + [0.1] * max(0, b - 6))
    repetition = torch.tensor([1.0, 1.3, 0.6, 2.0, 1.0, 1.1][:b] + [1.2] * max(0, b - 6))
    live = torch.rand(n, generator=g) < 0.7
    live[0] = True
    dense_bias = None
    if bias:
        dense_bias = torch.zeros(b, v)
        cols = torch.randint(0, v, (b, 5), generator=g)
        dense_bias.scatter_(1, cols, torch.randn(b, 5, generator=g) * 20)
        dense_bias[0, 1] = 100.0  # a bias on a -inf logit keeps it -inf
    to = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
    return (
        to(logits), to(live), la.Penalties(to(counts), to(frequency), to(presence), to(repetition)),
        to(own), to(dense_bias),
    )


def _both(logits, live, s, penalties, own, bias, block_v: int = 128):
    tri, ref = logits.clone(), logits.clone()
    with interpreted(la):
        out = la.logit_adjust_triton(tri, live, s, penalties, own, bias, block_v=block_v)
    assert out is tri
    out = la.logit_adjust_torch(ref, live, s, penalties, own, bias)
    assert out is ref
    return tri, ref


def _assert_same(tri: torch.Tensor, ref: torch.Tensor) -> None:
    """Bit for bit -- except that the Triton INTERPRETER rounds fp32 -> bf16 stores toward zero
    (numpy has no bf16; the compiled kernel's fptrunc rounds to nearest even, as torch): one bf16
    ulp then."""
    if tri.dtype == torch.bfloat16 and not CUDA:
        finite = torch.isfinite(ref)
        assert torch.equal(tri[~finite], ref[~finite])
        torch.testing.assert_close(tri[finite].float(), ref[finite].float(), rtol=2.0**-7, atol=0)
    else:
        assert torch.equal(tri, ref)


def _sglang_reference(logits: torch.Tensor, s: int, pen: la.Penalties, own, bias) -> torch.Tensor:
    """Row by row, SGLang's penalizers fed the row's seen tokens, then logit_bias (fp32 on CPU)."""
    pytest.importorskip("sglang.srt.sampling.penaltylib")  # absent only on the GPU check machine (bench/gpu_check.py)
    from sglang.srt.sampling.penaltylib import (
        BatchedFrequencyPenalizer,
        BatchedPresencePenalizer,
        BatchedRepetitionPenalizer,
    )
    from sglang.srt.sampling.penaltylib.repetition_penalty import (
        apply_scaling_penalties,
    )

    scaling = getattr(apply_scaling_penalties, "_torchdynamo_orig_callable", apply_scaling_penalties)
    out = logits.detach().cpu().to(torch.float32).clone()
    counts = pen.counts.cpu()
    n, v = out.shape
    for row in range(n):
        b = row // s
        sp = SimpleNamespace(
            frequency_penalty=float(pen.frequency[b]),
            presence_penalty=float(pen.presence[b]),
            repetition_penalty=float(pen.repetition[b]),
        )
        orch = SimpleNamespace(reqs=lambda sp=sp: [SimpleNamespace(sampling_params=sp)], vocab_size=v, device="cpu")
        pens = []
        for cls in (BatchedFrequencyPenalizer, BatchedPresencePenalizer, BatchedRepetitionPenalizer):
            p = cls.__new__(cls)
            p._orchestrator_ref = lambda orch=orch: orch
            p._is_prepared = False
            p.prepare()
            pens.append(p)
        c = counts[b].clone()
        if own is not None and int(own[row]) >= 0:
            c[int(own[row])] -= 1
        for tok in range(v):
            for _ in range(int(c[tok])):
                for p in pens:
                    p.cumulate_output_tokens(torch.tensor([tok]))
        x = out[row : row + 1]
        pens[0].apply(x)  # additive: frequency, presence
        pens[1].apply(x)
        scaling(x, pens[2].get_scaling_penalties())
        if bias is not None:
            x.add_(bias[b].cpu())
    return out


# ----------------------------------------------------------------------------------------------
# kernel vs twin vs SGLang
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("b,s,v,block_v", [(3, 4, 300, 128), (6, 2, 1000, 256), (2, 3, 97, 512), (1, 1, 1, 128)])
def test_kernel_matches_twin_bit_for_bit(dtype, b, s, v, block_v) -> None:
    logits, live, pen, own, bias = _case(b, s, v, seed=b * 100 + v, dtype=dtype, bias=v > 1)
    for args in ((pen, own, bias), (pen, own, None), (None, None, bias), (pen, None, bias)):
        tri, ref = _both(logits, live, s, *args, block_v=block_v)
        _assert_same(tri, ref)
        # rows that are not live are untouched, bit for bit
        assert torch.equal(tri[~live], logits[~live])


def test_kernel_real_vocab() -> None:
    logits, live, pen, own, bias = _case(2, 2, V_REAL, seed=3)
    tri, ref = _both(logits, live, 2, pen, own, bias, block_v=8192)
    assert torch.equal(tri, ref)


def test_twin_matches_sglang_penalizers() -> None:
    b, s, v = 6, 3, 70
    logits, live, pen, own, bias = _case(b, s, v, seed=11)
    live = torch.ones_like(live)
    got = la.logit_adjust_torch(logits.clone(), live, s, pen, own, bias).cpu()
    want = _sglang_reference(logits, s, pen, own, bias)
    # x * (1 / r) instead of SGLang's x / r: at most an ulp apart
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert torch.isneginf(got[0, :3]).all()
    # the module's plain reference (x / r, as SGLang) is within the same tolerance of the twin
    torch.testing.assert_close(got, la.logit_adjust_reference(logits, live, s, pen, own, bias).cpu(), rtol=1e-6, atol=1e-6)


def test_no_request_params_is_identity() -> None:
    logits = torch.randn(8, 50, device=DEVICE)
    live = torch.ones(8, dtype=torch.bool, device=DEVICE)
    pen = la.Penalties(
        torch.randint(0, 3, (2, 50), dtype=torch.int32, device=DEVICE),
        torch.zeros(2, device=DEVICE), torch.zeros(2, device=DEVICE), torch.ones(2, device=DEVICE),
    )
    tri, ref = _both(logits, live, 4, pen, None, torch.zeros(2, 50, device=DEVICE))
    assert torch.equal(tri, logits) and torch.equal(ref, logits)


def test_torch_path_has_no_host_sync_and_runs_on_meta() -> None:
    logits, live, pen, own, bias = _case(4, 8, 3000, seed=5)
    logits, live, own, bias = logits.cpu(), live.cpu(), own.cpu(), bias.cpu()
    pen = la.Penalties(pen.counts.cpu(), pen.frequency.cpu(), pen.presence.cpu(), pen.repetition.cpu())
    assert host_syncs(lambda: la.logit_adjust_torch(logits, live, 8, pen, own, bias)) == []
    assert host_syncs(lambda: la.logit_adjust(logits, live, 8, pen, own, bias)) == []
    meta = lambda t: torch.empty_like(t, device="meta")  # noqa: E731
    mpen = la.Penalties(meta(pen.counts), meta(pen.frequency), meta(pen.presence), meta(pen.repetition))
    out = la.logit_adjust(meta(logits), meta(live), 8, mpen, meta(own), meta(bias))
    assert out.device.type == "meta" and out.shape == logits.shape


def test_shape_checks() -> None:
    logits = torch.zeros(6, 10)
    live = torch.ones(6, dtype=torch.bool)
    with pytest.raises(ValueError, match="multiple"):
        la.logit_adjust_torch(logits, live, 4, None, None, torch.zeros(1, 10))
    with pytest.raises(ValueError, match="bias"):
        la.logit_adjust_torch(logits, live, 3, None, None, torch.zeros(3, 10))
    with pytest.raises(ValueError, match="counts"):
        la.logit_adjust_torch(logits, live, 3, la.Penalties(torch.zeros(2, 9, dtype=torch.int32), *[torch.zeros(2)] * 3))


# ----------------------------------------------------------------------------------------------
# the plumbing: LogitAdjuster on a fake forward batch (what sampling_info / the scheduler's Reqs carry)
# ----------------------------------------------------------------------------------------------

M = 99  # mask id


def _req(rid: str, prompt: list[int], output: list[int], freq=0.0, pres=0.0, rep=1.0) -> SimpleNamespace:
    sp = SimpleNamespace(frequency_penalty=freq, presence_penalty=pres, repetition_penalty=rep)
    return SimpleNamespace(rid=rid, origin_input_ids=prompt, output_ids=output, sampling_params=sp)


def _fb(ids: list[list[int]], starts: list[int], reqs: Optional[list] = None, bias=None, **info: Any):
    """A fake forward batch: block ids [B, S], each block's absolute start position."""
    t = torch.tensor(ids, dtype=torch.int64, device=DEVICE)
    b, s = t.shape
    positions = torch.tensor([st + j for st in starts for j in range(s)], dtype=torch.int32, device=DEVICE)
    orch = None
    if reqs is not None:
        orch = SimpleNamespace(
            is_required=any((r.sampling_params.frequency_penalty, r.sampling_params.presence_penalty,
                             r.sampling_params.repetition_penalty - 1.0) != (0, 0, 0) for r in reqs),
            reqs=lambda: reqs,
        )
    sampling_info = SimpleNamespace(penalizer_orchestrator=orch, logit_bias=bias, **info)
    return SimpleNamespace(input_ids=t.reshape(-1).clone(), batch_size=b, positions=positions, dllm_prompt_mask=None,
                           sampling_info=sampling_info, rids=[f"r{i}" for i in range(b)])


def test_counts_are_outputs_plus_written_block_tokens_minus_own() -> None:
    s, v = 4, 20
    # request 0: prompt of 6 tokens, first block starts at 4 (positions 4, 5 are prompt tail)
    # request 1: prompt of 3, output [7, 7, 8, 9] from its first block, second block starts at 8
    reqs = [_req("a", [1, 2, 3, 4, 5, 6], [], freq=1.0), _req("b", [1, 2, 3], [7, 7, 8, 9], freq=1.0)]
    fb = _fb([[5, 6, 3, M], [M, 7, 11, M]], [4, 8], reqs)
    pens = LogitAdjuster()._batch_penalties(fb.sampling_info, 2, v, DEVICE)
    assert pens.counts[0].sum() == 0 and pens.counts[1].tolist() == [0] * 7 + [2, 1, 1] + [0] * 10
    counts, own = LogitAdjuster._step_counts(fb, pens, M, s, v)
    want0 = [0] * v
    want0[3] = 1  # position 6 is output (6 >= prompt length 6); 5, 6 at positions 4, 5 are prompt
    assert counts[0].tolist() == want0
    want1 = pens.counts[1].tolist()
    want1[7] += 1
    want1[11] += 1
    assert counts[1].tolist() == want1
    assert own.tolist() == [-1, -1, 3, -1, -1, 7, 11, -1]


def test_adjuster_applies_penalties_and_bias_in_place() -> None:
    s, v = 2, 12
    reqs = [_req("a", [0], [3, 3, 5], freq=0.5, pres=0.25, rep=2.0), _req("b", [0], [3], rep=1.0)]
    bias = torch.zeros(2, v, device=DEVICE)
    bias[1, 4] = 10.0
    fb = _fb([[M, 3], [M, M]], [4, 2], reqs, bias=bias)
    logits = torch.linspace(-3, 3, 2 * s * v, device=DEVICE).reshape(2 * s, v)
    live = torch.tensor([True, False, True, True], device=DEVICE)
    orig = logits.clone()
    out = LogitAdjuster()(fb, logits, live, M, s)
    assert out is logits  # in place
    # row 0 (request a, masked position): token 3 seen 3 times (2 outputs + the block's), 5 once
    x = orig[0].clone()
    for tok, c in ((3, 3), (5, 1)):
        y = x[tok] - 0.5 * c - 0.25
        x[tok] = y * 2.0 if y < 0 else y * 0.5
    torch.testing.assert_close(out[0], x)
    assert torch.equal(out[1], orig[1])  # not live
    # request b sets no penalty but a bias: only the bias applies
    want = orig[2:].clone()
    want[:, 4] += 10.0
    torch.testing.assert_close(out[2:], want)


def test_adjuster_fast_path_and_cache() -> None:
    s, v = 2, 12
    logits = torch.randn(4, v, device=DEVICE)
    live = torch.ones(4, dtype=torch.bool, device=DEVICE)
    adj = LogitAdjuster()
    plain = _fb([[M, M], [M, M]], [0, 0], [_req("a", [0], []), _req("b", [0], [])])
    orig = logits.clone()
    assert adj(plain, logits, live, M, s) is logits and torch.equal(logits, orig)
    assert adj._penalties is None
    reqs = [_req("a", [0], [1, 2], rep=1.5), _req("b", [0], [])]
    fb = _fb([[M, 1], [M, M]], [2, 0], reqs)
    adj(fb, logits.clone(), live, M, s)
    first = adj._penalties
    adj(fb, logits.clone(), live, M, s)  # the next step of the same block: no rebuild
    assert adj._penalties is first
    reqs[0].output_ids = [1, 2, 1, 5]  # the block was committed: rebuilt
    adj(_fb([[M, M], [M, M]], [4, 0], reqs), logits.clone(), live, M, s)
    assert adj._penalties is not first and adj._penalties.counts[0, 1] == 2
    adj(plain, logits.clone(), live, M, s)  # a batch without penalties releases the counts
    assert adj._penalties is None


def test_adjuster_warns_when_penalties_unreachable(caplog) -> None:
    fb = _fb([[M, M]], [0], None)
    fb.sampling_info.acc_additive_penalties = torch.zeros(1, 5)
    logits = torch.randn(2, 5, device=DEVICE)
    with caplog.at_level(logging.WARNING):
        out = LogitAdjuster()(fb, logits, torch.ones(2, dtype=torch.bool, device=DEVICE), M, 2)
    assert out is logits and "NOT applied" in caplog.text


def test_adjuster_has_no_host_sync() -> None:
    s, v = 4, 500
    reqs = [_req("a", list(range(6)), [1, 2, 3] * 20, freq=0.3, pres=0.2, rep=1.2), _req("b", [0], [7], rep=1.1)]
    bias = torch.zeros(2, v)
    bias[0, 9] = 5.0
    fb = _fb([[5, M, 3, M], [M, 7, 11, M]], [4, 8], reqs, bias=bias.to(DEVICE))
    fb.input_ids, fb.positions = fb.input_ids.cpu(), fb.positions.cpu()
    fb.sampling_info.logit_bias = bias
    logits = torch.randn(2 * s, v)
    adj = LogitAdjuster()

    def one() -> None:
        adj._penalties = None  # the per-block build too
        adj(fb, logits, torch.ones(2 * s, dtype=torch.bool), M, s)

    # on CPU the adjuster's device is the logits' (CPU), so nothing is pinned or copied
    adj._batch_penalties(fb.sampling_info, 2, v, torch.device("cpu"))
    assert host_syncs(one) == []


def test_sampling_kwargs_carry_min_p() -> None:
    info = SimpleNamespace(
        is_all_greedy=False, temperatures=torch.ones(2, 1), top_ks=torch.tensor([1 << 30, 1 << 30]),
        top_ps=torch.ones(2), min_ps=torch.tensor([0.0, 0.5]), need_top_k_sampling=False,
        need_top_p_sampling=False, need_min_p_sampling=True, sampling_seed=None,
    )
    fb = SimpleNamespace(batch_size=2, sampling_info=info, positions=torch.arange(6), rids=["a", "b"])
    kw = sampling_kwargs(fb, 3, torch.zeros(2, dtype=torch.int64), SeedCache())
    assert kw["min_p"].tolist() == [0.0] * 3 + [0.5] * 3
    info.need_min_p_sampling = False
    assert sampling_kwargs(fb, 3, torch.zeros(2, dtype=torch.int64), SeedCache())["min_p"] is None


# ----------------------------------------------------------------------------------------------
# every algorithm scores the adjusted logits
# ----------------------------------------------------------------------------------------------


def _algorithms(s: int):
    pytest.importorskip("sglang.srt.dllm.config")  # absent only on the GPU check machine (bench/gpu_check.py)
    from sglang.srt.dllm.config import DllmConfig

    from sglang_llada.algorithms.edit import EditAlgorithm
    from sglang_llada.algorithms.levenshtein import LevenshteinAlgorithm
    from sglang_llada.algorithms.unmask import (
        FactorAlgorithm,
        StaticAlgorithm,
        ThresholdAlgorithm,
    )

    for cls in (ThresholdAlgorithm, StaticAlgorithm, FactorAlgorithm, EditAlgorithm, LevenshteinAlgorithm):
        extra = {"delete_token_id": 30, "split_token_id": 31} if cls is LevenshteinAlgorithm else {}
        yield cls(DllmConfig(algorithm=cls.NAME, algorithm_config={}, block_size=s, mask_id=M,
                             max_running_requests=8, **extra))


@pytest.mark.parametrize("seed", range(8))
def test_no_algorithm_writes_the_mask_id_even_when_biased_to_it(seed: int) -> None:
    """A step that wrote the mask id would leave its position masked for ever (a hung request);
    every algorithm scores with the mask column at -inf (base.py `scored`), whatever the bias."""
    s, v = 2, 120
    for algo in _algorithms(s):
        bias = torch.zeros(2, v, device=DEVICE)
        bias[0, M] = 100.0  # request 0 biased towards the mask id; request 1's model prefers it anyway
        fb = _fb([[M] * s, [M] * s], [4, 4], [_req("a", [0], []), _req("b", [0], [])], bias=bias, is_all_greedy=True)
        logits = torch.randn(2 * s, v, generator=torch.Generator().manual_seed(seed)).to(DEVICE)
        logits[:, M] += 20.0
        states = algo.init_step_state(fb)
        # levenshtein may draw DELETE/SPLIT (ids 30/31), which reopen masked slots: its
        # max_indel_steps budget bounds the steps, so loop to completion rather than a fixed 3*s
        done = [False]
        for _ in range(200):
            done = algo.step(fb, logits.clone(), states)
            if all(done):
                break
        assert all(done), (algo.NAME, seed, fb.input_ids.tolist())
        assert M not in fb.input_ids.tolist(), (algo.NAME, seed, fb.input_ids.tolist())


def test_every_algorithm_decodes_from_the_adjusted_logits() -> None:
    s, v = 4, 40
    for algo in _algorithms(s):
        # request 0: a +50 bias on token 9 beats the model's favourite (token 3) everywhere;
        # request 1: frequency penalty 10 on its output token 3 (seen once in an earlier block)
        bias = torch.zeros(2, v, device=DEVICE)
        bias[0, 9] = 50.0
        reqs = [_req("a", [0], []), _req("b", [0], [3], freq=10.0)]
        fb = _fb([[M] * s, [M] * s], [1, 2], reqs, bias=bias, is_all_greedy=True)
        logits = torch.zeros(2 * s, v, device=DEVICE)
        logits[:, 3] = 8.0
        logits[:, 5] = 6.0
        states = algo.init_step_state(fb)
        for _ in range(3 * s):
            done = algo.step(fb, logits.clone(), states)
            if all(done):
                break
        ids = fb.input_ids.view(2, s).tolist()
        assert ids[0] == [9] * s, (algo.NAME, ids)
        # 3 is penalised below 5 (8 - 10 < 6), and a written 5 then counts as seen within the block
        assert ids[1][0] == 5 and 3 not in ids[1], (algo.NAME, ids)
        if algo.NAME == "llada2_threshold":  # one commit per step: 5, then 0, 1, 2 (each seen once after)
            assert ids[1] == [5, 0, 1, 2]
