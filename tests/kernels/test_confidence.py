"""Parity of the `confidence` Triton kernel with its torch twin, and of the twin with plain definitions
(`confidence_reference`, `row_key_reference`, `gumbel_reference` in kernels/confidence.py).

On a GPU-less machine the kernel runs in the Triton interpreter via `interpreted(...)`; on a CUDA
machine the compiled kernel runs on the GPU. See kernels/testing.py for why TRITON_INTERPRET is not
simply set.
"""

from __future__ import annotations

import pytest
import torch

import sglang_llada.kernels.confidence as conf
from sglang_llada.kernels.testing import host_syncs, interpreted

V_REAL = 157184  # LLaDA2 vocabulary
CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-3}


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _garbage_out(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.full((n,), -12345, dtype=torch.int64, device=DEVICE),
        torch.full((n,), float("nan"), dtype=torch.float32, device=DEVICE),
    )


def _run_both(logits: torch.Tensor, is_masked: torch.Tensor, *args, block_v: int = 256, **kwargs):
    """Runs the Triton path and the torch twin on NaN/garbage-filled out= buffers."""
    n = logits.shape[0]
    out_tri, out_ref = _garbage_out(n), _garbage_out(n)
    with interpreted(conf):
        got = conf.confidence_triton(logits, is_masked, *args, out=out_tri, block_v=block_v, **kwargs)
    ref = conf.confidence_torch(logits, is_masked, *args, out=out_ref, **kwargs)
    assert got[0] is out_tri[0] and got[1] is out_tri[1]
    assert ref[0] is out_ref[0] and ref[1] is out_ref[1]
    return got, ref


def _assert_parity(got, ref, is_masked: torch.Tensor, dtype: torch.dtype) -> None:
    (tok, prob), (tok_ref, prob_ref) = got, ref
    assert torch.equal(tok, tok_ref), (tok, tok_ref)
    assert not torch.isnan(prob).any() and not torch.isnan(prob_ref).any()
    m = is_masked
    torch.testing.assert_close(prob[m], prob_ref[m], atol=TOL[dtype], rtol=0)
    assert (tok[~m] == -1).all() and torch.isneginf(prob[~m]).all()


def _logits(n: int, v: int, dtype: torch.dtype, seed: int, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, v, generator=g) * scale
    # a few confident rows: one spiked token each
    spikes = torch.randint(0, v, (n,), generator=g)
    x[torch.arange(n)[::2], spikes[::2]] += 12.0
    return x.to(dtype).to(DEVICE)


def _mask(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(n, generator=g) < 0.7
    m[0] = True
    if n > 1:
        m[-1] = False
    return m.to(DEVICE)


# ----------------------------------------------------------------------------------------------
# greedy
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_greedy_parity_real_vocab(dtype: torch.dtype) -> None:
    n = 4
    logits = _logits(n, V_REAL, dtype, seed=1)
    is_masked = torch.tensor([True, False, True, True], device=DEVICE)
    got, ref = _run_both(logits, is_masked, block_v=8192)
    _assert_parity(got, ref, is_masked, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,v,block_v", [(7, 1000, 256), (13, 261, 128), (1, 261, 512), (3, 1, 128), (5, 4096, 1024)])
def test_greedy_parity_awkward_shapes(dtype: torch.dtype, n: int, v: int, block_v: int) -> None:
    logits = _logits(n, v, dtype, seed=n * v)
    is_masked = _mask(n, seed=v)
    got, ref = _run_both(logits, is_masked, block_v=block_v)
    _assert_parity(got, ref, is_masked, dtype)


def test_greedy_ties_pick_lowest_index_across_tiles() -> None:
    v, block_v = 700, 128
    logits = torch.zeros(3, v)
    logits[0, [300, 5, 650]] = 4.0  # equal maxima in tiles 2, 0 and 5
    logits[1, [650, 299]] = 4.0
    logits[2, :] = 1.0  # all equal: index 0, prob 1 / v
    logits = logits.to(DEVICE)
    is_masked = torch.ones(3, dtype=torch.bool, device=DEVICE)
    got, ref = _run_both(logits, is_masked, block_v=block_v)
    _assert_parity(got, ref, is_masked, torch.float32)
    assert got[0].tolist() == [5, 299, 0]
    assert abs(got[1][2].item() - 1.0 / v) < 1e-7


def test_non_contiguous_rows() -> None:
    base = _logits(6, 1200, torch.float32, seed=3)
    logits = base[::2, 100:1100]  # row stride 2400, unit column stride
    is_masked = torch.ones(3, dtype=torch.bool, device=DEVICE)
    got, ref = _run_both(logits, is_masked)
    _assert_parity(got, ref, is_masked, torch.float32)


# ----------------------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------------------


def _sampling_params(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    temperature = torch.tensor([0.0, 0.7, 1.0, 1.5, 0.3, 1.0, 2.0, 0.9] * n)[:n]
    seeds = torch.randint(-(2**62), 2**62, (n,), generator=g)
    offsets = torch.randint(0, 2**40, (n,), generator=g)
    return temperature.to(DEVICE), seeds.to(DEVICE), offsets.to(DEVICE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,v,block_v", [(3, V_REAL, 8192), (11, 1000, 256), (6, 261, 128)])
def test_sampled_parity(dtype: torch.dtype, n: int, v: int, block_v: int) -> None:
    logits = _logits(n, v, dtype, seed=7 + v, scale=1.0)
    is_masked = torch.ones(n, dtype=torch.bool, device=DEVICE)
    is_masked[-1] = n < 4  # keep all real-vocab rows, skip one elsewhere
    temperature, seeds, offsets = _sampling_params(n, seed=v)
    got, ref = _run_both(logits, is_masked, temperature, None, None, seeds, offsets, block_v=block_v)
    _assert_parity(got, ref, is_masked, dtype)


def test_same_seed_repeats_other_seed_differs() -> None:
    n, v = 16, 1000
    logits = torch.zeros(n, v, device=DEVICE)  # flat: the noise alone decides
    is_masked = torch.ones(n, dtype=torch.bool, device=DEVICE)
    temperature = torch.ones(n, device=DEVICE)
    seeds = torch.full((n,), 1234, dtype=torch.int64, device=DEVICE)
    offsets = torch.arange(n, device=DEVICE) + 10_000
    first, _ = _run_both(logits, is_masked, temperature, None, None, seeds, offsets)
    again, _ = _run_both(logits, is_masked, temperature, None, None, seeds, offsets)
    other, _ = _run_both(logits, is_masked, temperature, None, None, seeds + 1, offsets)
    moved, _ = _run_both(logits, is_masked, temperature, None, None, seeds, offsets + 1)
    assert torch.equal(first[0], again[0])
    assert (first[0] != other[0]).sum() >= n - 2  # a collision among 1000 tokens is rare, not impossible
    assert (first[0] != moved[0]).sum() >= n - 2
    assert first[0].unique().numel() >= n - 2  # rows with the same seed but other offsets differ


# ----------------------------------------------------------------------------------------------
# top-k / top-p
# ----------------------------------------------------------------------------------------------


def _filter_params(n: int):
    top_k = torch.tensor([0, 5, 1, 50, 0, 3, 2000, 7] * n, dtype=torch.int32)[:n]
    top_p = torch.tensor([1.0, 1.0, 0.5, 0.9, 0.3, 0.8, 0.95, 1.0] * n)[:n]
    return top_k.to(DEVICE), top_p.to(DEVICE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,v,block_v", [(3, V_REAL, 8192), (9, 1000, 256), (8, 261, 128)])
def test_filtered_parity(dtype: torch.dtype, n: int, v: int, block_v: int) -> None:
    logits = _logits(n, v, dtype, seed=11 + v, scale=2.0)
    is_masked = torch.ones(n, dtype=torch.bool, device=DEVICE)
    temperature, seeds, offsets = _sampling_params(n, seed=3 * v)
    top_k, top_p = _filter_params(n)
    got, ref = _run_both(logits, is_masked, temperature, top_k, top_p, seeds, offsets, block_v=block_v)
    _assert_parity(got, ref, is_masked, dtype)
    cut = conf.filter_cutoff(logits, temperature, top_k, top_p)
    chosen = logits.float().gather(1, got[0][:, None]).squeeze(1)
    assert (chosen >= cut).all()


# ----------------------------------------------------------------------------------------------
# min-p
# ----------------------------------------------------------------------------------------------


def _min_p(n: int) -> torch.Tensor:
    return torch.tensor([0.0, 0.1, 0.5, 1.0, 0.05, 0.3, 0.9, 0.2] * n)[:n].to(DEVICE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,v,block_v", [(3, V_REAL, 8192), (9, 1000, 256), (8, 261, 128)])
@pytest.mark.parametrize("with_top", [False, True])
def test_min_p_parity(dtype: torch.dtype, n: int, v: int, block_v: int, with_top: bool) -> None:
    logits = _logits(n, v, dtype, seed=13 + v, scale=2.0)
    is_masked = torch.ones(n, dtype=torch.bool, device=DEVICE)
    temperature, seeds, offsets = _sampling_params(n, seed=5 * v)
    top_k, top_p = _filter_params(n) if with_top else (None, None)
    min_p = _min_p(n)
    got, ref = _run_both(logits, is_masked, temperature, top_k, top_p, seeds, offsets, min_p, block_v=block_v)
    _assert_parity(got, ref, is_masked, dtype)
    # every sampled token passes min-p: p >= min_p * p_max of the tempered distribution
    x = logits.float()
    t = torch.where(temperature > 0, temperature, 1.0)
    chosen = x.gather(1, got[0][:, None]).squeeze(1)
    ratio = torch.exp((chosen - x.amax(1)) / t)
    sampled = temperature > 0
    assert (ratio[sampled] >= min_p[sampled] * (1 - 1e-5)).all()


def test_twin_min_p_definition() -> None:
    row = torch.tensor([3.0, 2.0, 2.0, 1.0, 0.0, -2.0])
    p = torch.softmax(row, 0)
    for min_p in (0.01, 0.1, 0.3, 0.4, 0.99, 1.0):
        cut = conf.filter_cutoff(row[None], torch.ones(1), None, None, torch.tensor([min_p]))
        kept = {i for i in range(6) if row[i] >= cut[0]}
        assert kept == {i for i in range(6) if p[i] >= min_p * p[0] * (1 - 1e-6)}, (min_p, cut)
    # the ratio is taken at the request's temperature: at T = 0.5, p_i / p_max = exp(2 (x_i - x_max))
    for t, min_p, want in ((0.5, 0.1, {0, 1, 2}), (0.5, 0.2, {0}), (2.0, 0.2, {0, 1, 2, 3, 4})):
        cut = conf.filter_cutoff(row[None], torch.full((1,), t), None, None, torch.tensor([min_p]))
        assert {i for i in range(6) if row[i] >= cut[0]} == want, (t, min_p)
    # inactive (0) and greedy rows: no cut
    assert conf.filter_cutoff(row[None], torch.ones(1), None, None, torch.zeros(1))[0] == float("-inf")
    assert conf.filter_cutoff(row[None], torch.zeros(1), None, None, torch.tensor([0.5]))[0] == float("-inf")
    # min-p and top-k together: the stricter cut wins
    both = conf.filter_cutoff(row[None], torch.ones(1), torch.tensor([5]), None, torch.tensor([0.3]))
    assert {i for i in range(6) if row[i] >= both[0]} == {0, 1, 2}


def test_min_p_one_samples_the_greedy_token() -> None:
    n, v = 12, 500
    logits = _logits(n, v, torch.float32, seed=21, scale=1.0)
    is_masked = torch.ones(n, dtype=torch.bool, device=DEVICE)
    temperature = torch.full((n,), 1.5, device=DEVICE)
    seeds = torch.arange(n, dtype=torch.int64, device=DEVICE)
    (tok, prob), (tok_ref, _) = _run_both(logits, is_masked, temperature, None, None, seeds, None, torch.ones(n, device=DEVICE))
    assert torch.equal(tok, logits.argmax(1)) and torch.equal(tok_ref, tok)
    assert torch.allclose(prob, torch.ones_like(prob))  # renormalised over the argmax alone
    free, _ = _run_both(logits, is_masked, temperature, None, None, seeds, None)
    assert not torch.equal(free[0], tok)  # without min-p the same noise picks other tokens


# ----------------------------------------------------------------------------------------------
# the torch twin against plain definitions
# ----------------------------------------------------------------------------------------------


def test_twin_greedy_is_softmax_argmax() -> None:
    logits = _logits(9, 3000, torch.float32, seed=5).cpu()
    is_masked = torch.ones(9, dtype=torch.bool)
    is_masked[4] = False
    tok, prob = conf.confidence_torch(logits, is_masked)
    want_tok, want_prob = conf.confidence_reference(logits, is_masked)
    assert torch.equal(tok[is_masked], want_tok[is_masked])
    torch.testing.assert_close(prob[is_masked], want_prob[is_masked], atol=1e-6, rtol=0)
    assert tok[4] == -1 and prob[4] == float("-inf")


def test_hash_matches_python_integers() -> None:
    seeds = [0, 1, -1, 2**63 - 1, -(2**63), 123456789012345]
    offsets = [0, 7, 2**40 + 3, 2**63 - 1, 5, 99]
    keys = conf.row_key_torch(torch.tensor(seeds), torch.tensor(offsets)).tolist()
    for s, o, key in zip(seeds, offsets, keys):
        assert key == conf.row_key_reference(s, o)
    g = conf.gumbel_torch(torch.tensor([keys[2]]), torch.tensor([0, 1, 156894])).squeeze(0).tolist()
    for col, got in zip([0, 1, 156894], g):
        assert abs(got - conf.gumbel_reference(keys[2], col)) < 1e-5


def test_twin_sampling_follows_softmax() -> None:
    """Gumbel-max with the hash noise draws from softmax(logits / T), and top-k renormalises."""
    n, v = 20000, 6
    row = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 1.0])
    logits = row.expand(n, v).contiguous()
    is_masked = torch.ones(n, dtype=torch.bool)
    temperature = torch.full((n,), 0.8)
    seeds = torch.full((n,), 42, dtype=torch.int64)
    offsets = torch.arange(n)
    for top_k, want in [(None, torch.softmax(row / 0.8, 0)), (3, None)]:
        k = None if top_k is None else torch.full((n,), top_k, dtype=torch.int32)
        tok, prob = conf.confidence_torch(logits, is_masked, temperature, k, None, seeds, offsets)
        if want is None:  # keep {0, 1, 5} (the tie at 1.0 is kept whole), renormalised
            kept = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
            want = torch.softmax(torch.where(kept > 0, row / 0.8, float("-inf")), 0)
        freq = torch.bincount(tok, minlength=v).double() / n
        sigma = (want.double() * (1 - want.double()) / n).sqrt()
        assert ((freq - want.double()).abs() <= 5 * sigma + 1e-12).all(), (freq, want)
        torch.testing.assert_close(prob, want[tok], atol=1e-6, rtol=0)


def test_twin_top_p_definition() -> None:
    row = torch.tensor([3.0, 2.0, 2.0, 1.0, 0.0, -2.0])
    # softmax(row) = 0.519, 0.191, 0.191, 0.070, 0.026, 0.004: mass before each slot 0, .519, .710, .900, .971
    cases = [(0.5, {0}), (0.6, {0, 1, 2}), (0.95, {0, 1, 2, 3}), (0.99, {0, 1, 2, 3, 4}), (1.0, set(range(6)))]
    for top_p, kept in cases:
        cut = conf.filter_cutoff(row[None], torch.ones(1), None, torch.tensor([top_p]))
        assert {i for i in range(6) if row[i] >= cut[0]} == kept, (top_p, cut)
    # greedy rows ignore filters
    assert conf.filter_cutoff(row[None], torch.zeros(1), torch.tensor([1]), torch.tensor([0.1]))[0] == float("-inf")


# ----------------------------------------------------------------------------------------------
# no host synchronisation, dispatch
# ----------------------------------------------------------------------------------------------



def _all_args(device: str, n: int = 64, v: int = 3000):
    logits = torch.randn(n, v, device=device)
    is_masked = torch.rand(n, device=device) < 0.5 if device != "meta" else torch.empty(n, dtype=torch.bool, device=device)
    temperature = torch.full((n,), 0.7, device=device)
    top_k = torch.full((n,), 20, dtype=torch.int32, device=device)
    top_p = torch.full((n,), 0.9, device=device)
    seeds = torch.zeros(n, dtype=torch.int64, device=device)
    offsets = torch.arange(n, device=device)
    min_p = torch.full((n,), 0.05, device=device)
    return logits, is_masked, temperature, top_k, top_p, seeds, offsets, min_p


def test_torch_path_has_no_host_sync() -> None:
    args = _all_args("cpu")
    assert host_syncs(lambda: conf.confidence_torch(*args)) == []
    assert host_syncs(lambda: conf.confidence_torch(args[0], args[1])) == []
    assert host_syncs(lambda: conf.confidence(*args)) == []
    assert host_syncs(lambda: conf.confidence_torch(*args[:5], args[5], None, args[7])) == []
    # min-p alone (no sort: the row max)
    assert host_syncs(lambda: conf.confidence_torch(args[0], args[1], args[2], None, None, args[5], None, args[7])) == []
    # the recorder does catch what it must
    assert host_syncs(lambda: args[0][args[1]].sum().item()) != []
    assert host_syncs(lambda: args[0].tolist()) == ["tolist"]


def test_torch_path_runs_on_meta() -> None:
    """Any read of tensor data (item, tolist, nonzero, data-dependent shapes) fails on meta tensors."""
    args = _all_args("meta", n=70, v=V_REAL)
    tok, prob = conf.confidence(*args)  # dispatches to the torch twin
    assert tok.device.type == "meta" and tok.shape == (70,) and prob.dtype == torch.float32
    tok, prob = conf.confidence_torch(args[0].to(torch.bfloat16), args[1])
    assert tok.shape == (70,)


def test_dispatch_uses_torch_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a, **k):
        raise AssertionError("triton path used for CPU tensors")

    monkeypatch.setattr(conf, "confidence_triton", boom)
    logits, is_masked = torch.randn(4, 50), torch.ones(4, dtype=torch.bool)
    tok, prob = conf.confidence(logits, is_masked)
    assert torch.equal(tok, logits.argmax(1))
