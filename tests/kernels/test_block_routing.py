"""Block routing (LLaDA2.2 MoE): torch twin vs loop reference, Triton kernel vs twin, parity with SGLang's kernels.

On a GPU-less machine the Triton kernels (ours and SGLang's) run in the interpreter via
`interpreted(...)` (see kernels/testing.py for why TRITON_INTERPRET is not simply set); on a CUDA
machine they are compiled. Logits are quantised in most cases so that equal scores, and therefore
the tie rules, are exercised.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import triton
import triton.language as tl

import sglang_llada.kernels.block_routing as br
from sglang_llada.kernels.testing import host_syncs, interpreted

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")


# ----------------------------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------------------------


def _scores(t: int, e: int, seed: int, quantised: bool = True, dtype: torch.dtype = torch.float32):
    """Router logits [T, E] and expert bias [E]; quantised: few distinct values, so ties everywhere."""
    g = torch.Generator().manual_seed(seed)
    if quantised:
        logits = torch.randint(-6, 7, (t, e), generator=g) / 4.0
        bias = torch.randint(0, 3, (e,), generator=g) / 32.0
    else:
        logits = torch.randn(t, e, generator=g) * 2.0
        bias = torch.randn(e, generator=g) * 0.1
    return logits.to(dtype).to(DEVICE), bias.to(DEVICE)


# (prefix_lens, extend_lens) with block_size 8: unequal blocks, requests straddling block edges, an empty request
REQUESTS = ([0, 5, 30, 3, 16], [19, 3, 13, 0, 7])
FLAT_T = 45  # 5 full blocks of 8 and a partial one
BS = 8


def _layout(kind: str) -> tuple[int, torch.Tensor, torch.Tensor]:
    if kind == "flat":
        return FLAT_T, *br.flat_blocks(FLAT_T, BS, DEVICE)
    return sum(REQUESTS[1]), *br.request_blocks(*REQUESTS, BS, DEVICE)


# (E, capacity, top_k): top_k 1 and > 1, capacity < E and == E, top_k == capacity
SIZES = [(16, 6, 1), (16, 6, 4), (12, 12, 3), (20, 5, 5)]


Outputs = tuple[torch.Tensor, torch.Tensor]


def _assert_same(got: Outputs, want: Outputs, rtol: float = 1e-6) -> None:
    (w_got, i_got), (w_want, i_want) = got, want
    assert i_got.dtype == torch.int32 and w_got.dtype == torch.float32
    assert torch.equal(i_got.cpu(), i_want.cpu()), (i_got.cpu() != i_want.cpu()).nonzero()[:5]
    torch.testing.assert_close(w_got.cpu(), w_want.cpu(), rtol=rtol, atol=0.0)


def _triton(*args: Any) -> tuple[torch.Tensor, torch.Tensor]:
    with interpreted(br):
        return br.block_route_triton(*args)


# ----------------------------------------------------------------------------------------------
# layouts
# ----------------------------------------------------------------------------------------------


def test_flat_blocks() -> None:
    starts, blocks = br.flat_blocks(10, 4, DEVICE)
    assert starts.tolist() == [0, 4, 8, 10] and starts.dtype == torch.int32
    assert blocks.tolist() == [0] * 4 + [1] * 4 + [2] * 2 and blocks.dtype == torch.int32
    starts, blocks = br.flat_blocks(0, 4, DEVICE)
    assert starts.tolist() == [0] and blocks.numel() == 0


def test_request_blocks() -> None:
    # request 0: positions 0..9 -> [0, 8) [8, 10); request 1: 5..7; request 2 empty;
    # request 3: 30..41 -> [30, 32) [32, 40) [40, 42)
    starts, blocks = br.request_blocks([0, 5, 4, 30], [10, 3, 0, 12], 8, DEVICE)
    assert starts.tolist() == [0, 8, 10, 13, 15, 23, 25]
    lengths = [8, 2, 3, 2, 8, 2]
    assert blocks.tolist() == [b for b, n in enumerate(lengths) for _ in range(n)]
    assert starts.dtype == blocks.dtype == torch.int32 and starts.device.type == DEVICE.type
    starts, blocks = br.request_blocks([], [], 8, DEVICE)
    assert starts.tolist() == [0] and blocks.numel() == 0


# ----------------------------------------------------------------------------------------------
# torch twin vs reference, Triton vs torch twin
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["flat", "requests"])
@pytest.mark.parametrize("e,cap,k", SIZES)
@pytest.mark.parametrize("seed,quantised", [(0, True), (1, True), (2, False)])
def test_twin_matches_reference(layout: str, e: int, cap: int, k: int, seed: int, quantised: bool) -> None:
    t, starts, blocks = _layout(layout)
    logits, bias = _scores(t, e, seed, quantised)
    args = (logits, bias, starts, blocks, BS, cap, k)
    want = br.block_route_reference(*args)
    got = br.block_route_torch(*args)
    _assert_same(got, want)
    # the routing rules hold: distinct ids, each admitted by the token's block, ordered by c
    w, ids = got
    assert (ids.sort(dim=1).values.diff(dim=1) > 0).all()
    s = 1.0 / (1.0 + torch.exp(-logits.float()))
    assert ((s + bias).gather(1, ids.long()).diff(dim=1) <= 0).all()
    if k == 1:  # the raw score bit for bit: this formula, not torch.sigmoid (they differ in the last ulp)
        assert torch.equal(w, s.gather(1, ids.long()))
    if k > 1:
        torch.testing.assert_close(w.sum(1), torch.ones(t, device=DEVICE))


@pytest.mark.parametrize("layout", ["flat", "requests"])
@pytest.mark.parametrize("e,cap,k", SIZES)
def test_triton_matches_twin(layout: str, e: int, cap: int, k: int) -> None:
    t, starts, blocks = _layout(layout)
    for seed, quantised in [(3, True), (4, False)]:
        logits, bias = _scores(t, e, seed, quantised)
        args = (logits, bias, starts, blocks, BS, cap, k)
        _assert_same(_triton(*args), br.block_route_torch(*args))


def test_triton_strided_bf16_and_long_blocks() -> None:
    """bf16 logits read through strides; block_size smaller than the blocks: the kernel loops over token tiles."""
    t, starts, blocks = _layout("requests")
    wide, bias = _scores(t, 40, seed=5, quantised=True, dtype=torch.bfloat16)
    logits = wide[:, 3:27]  # [T, 24], row stride 40
    bias = bias[3:27]
    assert not logits.is_contiguous()
    for block_size in (BS, 2):
        args = (logits, bias, starts, blocks, block_size, 7, 3)
        _assert_same(_triton(*args), br.block_route_reference(*args))
        _assert_same(br.block_route_torch(*args), br.block_route_reference(*args))


def test_tie_rules_on_a_hand_made_block() -> None:
    # one block of two tokens, E = 4: block scores e0 = e1 = s(1) (tied), e2 = s(2), e3 = s(0)
    logits = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 2.0, 0.0]], device=DEVICE)
    bias = torch.zeros(4, device=DEVICE)
    starts, blocks = br.flat_blocks(2, 32, DEVICE)
    args = (logits, bias, starts, blocks, 32, 2, 2)
    s1, s2, s0 = (1.0 / (1.0 + torch.exp(-torch.tensor(x))) for x in (1.0, 2.0, 0.0))
    for fn in (br.block_route_reference, br.block_route_torch, _triton):
        w, ids = fn(*args)
        # admitted: e2, then e0 (ties at the cut-off go to the lower id); e1 is out
        assert ids.tolist() == [[0, 2], [2, 0]], fn  # token 0: e0 and e2 tie at s(1) -> lower id first
        torch.testing.assert_close(w.cpu(), torch.tensor([[0.5, 0.5], [s2 / (s2 + s0), s0 / (s2 + s0)]]))
    # the bias steers the choice, the weight is the raw score, and top_k = 1 is not normalised
    bias = torch.tensor([0.0, 0.5, 0.0], device=DEVICE)
    args = (torch.zeros(1, 3, device=DEVICE), bias, *br.flat_blocks(1, 32, DEVICE), 32, 3, 1)
    for fn in (br.block_route_reference, br.block_route_torch, _triton):
        w, ids = fn(*args)
        assert ids.tolist() == [[1]] and w.tolist() == [[0.5]], fn


# ----------------------------------------------------------------------------------------------
# parity with SGLang 0.5.23's own kernels (flat layout)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llada2() -> Any:
    return pytest.importorskip("sglang.srt.models.llada2")


def _sglang_block_topk(llada2: Any, logits: torch.Tensor, bias: torch.Tensor, block_size: int, cap: int, k: int):
    """SGLang's two kernels launched directly: its wrapper `block_topk_triton` refuses CPU tensors."""
    t, e = logits.shape
    nb = triton.cdiv(t, block_size)
    allowed = torch.empty(nb, cap, dtype=torch.int32, device=logits.device)
    ids = torch.empty(t, k, dtype=torch.int32, device=logits.device)
    weights = torch.empty(t, k, dtype=torch.float32, device=logits.device)
    llada2._block_aggregation_kernel[(nb,)](
        logits, bias, allowed, t, e, block_size, cap, logits.stride(0), logits.stride(1), bias.stride(0),
        BLOCK_SIZE_E=triton.next_power_of_2(e), BLOCK_SIZE_T=block_size,
    )
    llada2._token_topk_kernel[(t,)](
        logits, bias, allowed, ids, weights, t, e, cap, block_size, k, logits.stride(0), logits.stride(1), bias.stride(0),
        BLOCK_SIZE_C=triton.next_power_of_2(cap), TOPK_POW2=triton.next_power_of_2(k),
    )
    return weights, ids


@pytest.mark.parametrize("e,cap,k", [(32, 12, 4), (24, 24, 1), (256, 48, 8)])  # the last: LLaDA2.2-flash
def test_parity_with_sglang_kernels(llada2: Any, monkeypatch: pytest.MonkeyPatch, e: int, cap: int, k: int) -> None:
    if not CUDA:
        # The interpreter patches tl.math but not triton.language.extra.libdevice, whose exp returns None there.
        monkeypatch.setattr(llada2, "libdevice", tl.math)
    t, block_size = 37, 8  # a partial last block
    starts, blocks = br.flat_blocks(t, block_size, DEVICE)
    for seed, quantised in [(6, True), (7, False)]:
        logits, bias = _scores(t, e, seed, quantised)
        with interpreted(llada2):
            want = _sglang_block_topk(llada2, logits, bias, block_size, cap, k)
        args = (logits, bias, starts, blocks, block_size, cap, k)
        # Same exp (numpy in the interpreter, libdevice on the GPU), division and summation order as
        # SGLang: the weights are bit-equal. The torch twin's exp differs in the last ulp.
        _assert_same(_triton(*args), want, rtol=0.0)
        _assert_same(br.block_route_torch(*args), want)


# ----------------------------------------------------------------------------------------------
# no host synchronisation, dispatch, edge cases, argument checks
# ----------------------------------------------------------------------------------------------


def test_no_host_sync() -> None:
    t, starts, blocks = _layout("requests")
    logits, bias = _scores(t, 16, seed=8)
    args = (logits, bias, starts, blocks, BS, 6, 4)
    assert host_syncs(lambda: br.block_route_torch(*args)) == []
    assert host_syncs(lambda: br.block_route(*args)) == []
    assert host_syncs(lambda: br.flat_blocks(45, 8, DEVICE)) == []
    with interpreted(br):  # on CPU this checks the host wrapper: the interpreter's own reads bypass these hooks
        assert host_syncs(lambda: br.block_route_triton(*args)) == []
    assert host_syncs(lambda: br.block_route_reference(*args)) != []  # the recorder catches what it must


def test_torch_path_runs_on_meta() -> None:
    t, e = 64, 32
    logits = torch.empty(t, e, device="meta", dtype=torch.bfloat16)
    starts = torch.empty(3, dtype=torch.int32, device="meta")
    blocks = torch.empty(t, dtype=torch.int32, device="meta")
    w, ids = br.block_route(logits, torch.empty(e, device="meta"), starts, blocks, 32, 8, 4)
    assert w.shape == ids.shape == (t, 4) and w.dtype == torch.float32 and ids.dtype == torch.int32


def test_dispatch_uses_torch_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: Any, **kw: Any) -> None:
        raise AssertionError("triton path used for CPU tensors")

    monkeypatch.setattr(br, "block_route_triton", boom)
    logits, bias = _scores(FLAT_T, 16, seed=9)
    args = (logits.cpu(), bias.cpu(), *br.flat_blocks(FLAT_T, BS, "cpu"), BS, 6, 2)
    _assert_same(br.block_route(*args), br.block_route_reference(*args))


def test_no_tokens() -> None:
    starts, blocks = br.flat_blocks(0, BS, DEVICE)
    args = (torch.empty(0, 16, device=DEVICE), torch.zeros(16, device=DEVICE), starts, blocks, BS, 6, 4)
    for fn in (br.block_route_reference, br.block_route_torch, _triton, br.block_route):
        w, ids = fn(*args)
        assert w.shape == ids.shape == (0, 4) and w.dtype == torch.float32 and ids.dtype == torch.int32


def test_rejects_bad_arguments() -> None:
    logits, bias = _scores(FLAT_T, 16, seed=10)
    starts, blocks = br.flat_blocks(FLAT_T, BS, DEVICE)
    good = dict(
        router_logits=logits, expert_bias=bias, block_starts=starts, token_block=blocks,
        block_size=BS, expert_capacity=6, top_k=4,
    )
    bad = [
        dict(top_k=0), dict(top_k=7), dict(expert_capacity=17, top_k=2), dict(block_size=0), dict(top_k=2.0),
        dict(router_logits=logits[0]), dict(router_logits=logits.long()), dict(expert_bias=bias[:-1]),
        dict(token_block=blocks[:-1]), dict(block_starts=starts[:1]), dict(block_starts=starts.float()),
    ]
    for fn in (br.block_route_torch, br.block_route_triton, br.block_route_reference):
        for change in bad:
            with pytest.raises(ValueError):
                fn(**{**good, **change})
    with pytest.raises(ValueError):  # the reference also checks the layout itself
        br.block_route_reference(**{**good, "token_block": blocks.flip(0)})
    with pytest.raises(ValueError):
        br.request_blocks([0, 1], [3], BS, DEVICE)
