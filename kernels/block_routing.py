"""LLaDA2.2 block routing (MoE expert choice per diffusion block): a Triton kernel, its torch twin, a reference.

Trio: kernel `block_route_triton` (`_block_admit_kernel`, `_token_choose_kernel`), torch twin
`block_route_torch` (CPU path), reference `block_route_reference`; tests
tests/kernels/test_block_routing.py; bench bench/block_routing_bench.py.

Why this exists: LLaDA2.2 checkpoints with `expert_capacity` set route the MoE per block of tokens.
SGLang 0.5.23 implements that as `block_topk_triton` in srt/models/llada2.py, which (1) refuses
non-CUDA tensors and (2) cuts blocks at `token_index // block_size` over the flattened batch, so a
request whose prefix is not a multiple of the block size, or a batch of several requests, gets
blocks that straddle request boundaries. Here blocks are explicit (`block_starts`, `token_block`),
so they can follow each request's own block boundaries (`request_blocks`), or reproduce SGLang's
layout (`flat_blocks`), and there is a torch path for CPU.

Contract shared by `block_route_torch` and `block_route_triton` (`block_route` dispatches: Triton
for CUDA tensors, torch otherwise); `block_route_reference` is the same contract written as plain
loops (tests only):

    router_logits   [T, E] fp32 | bf16 | fp16   (scores are always computed in fp32)
    expert_bias     [E] fp32                    the gate's expert_bias (correction bias)
    block_starts    [NB + 1] int32              token offsets: block b = tokens block_starts[b]:block_starts[b+1]
    token_block     [T] int32                   the block of each token (consistent with block_starts)
    block_size, expert_capacity, top_k          0 < top_k <= expert_capacity <= E
    -> weights [T, top_k] fp32, ids [T, top_k] int32

* s = 1 / (1 + exp(-logit)) in fp32 (this formula, not torch.sigmoid: both SGLang kernels use it,
  and a different rounding could change the expert chosen at a tie); c = s + expert_bias.
* Block admission: an expert's block score is the max of c over the block's tokens; the block
  admits its `expert_capacity` best experts (equal scores: lower expert id first).
* Token choice: each token takes its `top_k` best experts by c among its block's admitted ones,
  ordered by c descending (equal c: lower expert id first).
* weights = the chosen experts' s (not c), divided by (their sum + 1e-20) when top_k > 1. The sum
  is accumulated in output order, as SGLang's kernel adds, so with the same exp the weights are
  bit-equal to SGLang's (they are, kernel vs kernel, in the interpreter). SGLang normalises whatever
  `norm_topk_prob` says; so does this. The routed scaling factor is not applied (the caller
  multiplies).

The only difference from SGLang's kernels is where blocks start; with `flat_blocks` the results are
SGLang's (parity test in tests/kernels/test_block_routing.py). Caveats: NaN logits are unsupported;
`exp` differs in the last ulp between torch (CPU), numpy (Triton interpreter) and CUDA's libdevice
(compiled kernel; SGLang uses the same libdevice exp), so paths can disagree only where two scores
lie within an ulp of each other. Blocks longer than `block_size` are handled (the kernel loops over
token tiles); `block_size` only sizes those tiles. Neither path synchronises with the host: the
block layout is never read back (`block_starts` / `token_block` consistency is the caller's job;
the reference checks it).
"""

from __future__ import annotations

from typing import Sequence, Union

import torch

try:  # as in the other kernel modules: keep the torch path importable without triton
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only on exotic platforms
    HAS_TRITON = False

Tensor = torch.Tensor
Device = Union[torch.device, str]
NORM_EPS = 1e-20  # SGLang's: keeps an all-zero top-k (logits of -inf) finite


# ----------------------------------------------------------------------------------------------
# block layouts
# ----------------------------------------------------------------------------------------------


def flat_blocks(num_tokens: int, block_size: int, device: Device) -> tuple[Tensor, Tensor]:
    """SGLang's layout: token t is in block t // block_size over the flattened batch (built on device)."""
    if block_size <= 0 or num_tokens < 0:
        raise ValueError(f"need block_size > 0 and num_tokens >= 0, got {block_size}, {num_tokens}")
    num_blocks = -(-num_tokens // block_size)
    starts = (torch.arange(num_blocks + 1, device=device) * block_size).clamp_(max=num_tokens)
    token_block = torch.arange(num_tokens, device=device) // block_size
    return starts.to(torch.int32), token_block.to(torch.int32)


def request_blocks(
    prefix_lens: Sequence[int], extend_lens: Sequence[int], block_size: int, device: Device
) -> tuple[Tensor, Tensor]:
    """Per-request blocks: a boundary at every absolute position that is a multiple of block_size and at every request edge.

    Request r's tokens are absolute positions prefix_lens[r] .. prefix_lens[r] + extend_lens[r] - 1,
    laid out one request after another. Host lists in, one small host->device copy out (no sync).
    """
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    if len(prefix_lens) != len(extend_lens):
        raise ValueError("prefix_lens and extend_lens must have the same length")
    starts, lengths = [0], []
    for prefix, extend in zip(prefix_lens, extend_lens):
        if prefix < 0 or extend < 0:
            raise ValueError(f"negative length in prefix_lens / extend_lens: {prefix}, {extend}")
        pos, end = prefix, prefix + extend
        while pos < end:
            stop = min((pos // block_size + 1) * block_size, end)
            lengths.append(stop - pos)
            starts.append(starts[-1] + stop - pos)
            pos = stop
    block_ids = torch.arange(len(lengths), dtype=torch.int32)
    token_block = torch.repeat_interleave(block_ids, torch.tensor(lengths, dtype=torch.int64))
    host = torch.cat([torch.tensor(starts, dtype=torch.int32), token_block])
    meta = host.to(device, non_blocking=True)
    return meta[: len(starts)], meta[len(starts) :]


# ----------------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------------


def _check(
    router_logits: Tensor, expert_bias: Tensor, block_starts: Tensor, token_block: Tensor,
    block_size: int, expert_capacity: int, top_k: int,
) -> tuple[int, int, int]:
    """Shapes, dtypes and sizes only (reading the layout would sync); returns T, E, NB."""
    if router_logits.dim() != 2 or not router_logits.is_floating_point():
        raise ValueError(
            f"router_logits must be a 2-D float tensor [T, E], got {tuple(router_logits.shape)} {router_logits.dtype}"
        )
    t, e = router_logits.shape
    if expert_bias.shape != (e,):
        raise ValueError(f"expert_bias must be [E] = [{e}], got {tuple(expert_bias.shape)}")
    if block_starts.dim() != 1 or block_starts.shape[0] < 1 or block_starts.is_floating_point():
        raise ValueError(f"block_starts must be a 1-D integer tensor [NB + 1], got {tuple(block_starts.shape)}")
    if token_block.shape != (t,) or token_block.is_floating_point():
        raise ValueError(f"token_block must be an integer tensor [T] = [{t}], got {tuple(token_block.shape)}")
    nb = block_starts.shape[0] - 1
    if t > 0 and nb == 0:
        raise ValueError("block_starts holds no block but there are tokens")
    for name, value in (("block_size", block_size), ("expert_capacity", expert_capacity), ("top_k", top_k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    if not 0 < top_k <= expert_capacity <= e:
        raise ValueError(
            f"expected 0 < top_k <= expert_capacity <= num_experts, got top_k={top_k}, "
            f"expert_capacity={expert_capacity}, num_experts={e}"
        )
    devices = {x.device for x in (router_logits, expert_bias, block_starts, token_block)}
    if len(devices) != 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(map(str, devices))}")
    return t, e, nb


def _empty_outputs(t: int, top_k: int, device: torch.device) -> tuple[Tensor, Tensor]:
    return (
        torch.empty((t, top_k), dtype=torch.float32, device=device),
        torch.empty((t, top_k), dtype=torch.int32, device=device),
    )


def _scores(router_logits: Tensor, expert_bias: Tensor) -> tuple[Tensor, Tensor]:
    """s = 1 / (1 + exp(-logit)) and c = s + bias, fp32, [T, E] each."""
    s = 1.0 / (1.0 + torch.exp(-router_logits.to(torch.float32)))
    return s, s + expert_bias.to(torch.float32)


def _normalise(raw: Tensor, top_k: int) -> Tensor:
    """raw [T, K] fp32 in output order -> weights; the sum runs left to right, as SGLang's kernel adds."""
    if top_k == 1:
        return raw
    total = raw[:, 0]
    for k in range(1, top_k):
        total = total + raw[:, k]
    return raw / (total + NORM_EPS)[:, None]


# ----------------------------------------------------------------------------------------------
# Reference (tests only): python loops, obviously the definition
# ----------------------------------------------------------------------------------------------


def block_route_reference(
    router_logits: Tensor, expert_bias: Tensor, block_starts: Tensor, token_block: Tensor,
    block_size: int, expert_capacity: int, top_k: int,
) -> tuple[Tensor, Tensor]:
    """The contract as loops over blocks, experts and tokens (slow; reads everything on the host)."""
    t, e, nb = _check(router_logits, expert_bias, block_starts, token_block, block_size, expert_capacity, top_k)
    device = router_logits.device
    s = 1.0 / (1.0 + torch.exp(-router_logits.detach().cpu().to(torch.float32)))  # [T, E]
    c = s + expert_bias.detach().cpu().to(torch.float32)
    c_rows = c.tolist()  # python floats hold the fp32 values exactly: comparisons are unchanged
    starts, blocks = block_starts.tolist(), token_block.tolist()
    if starts[0] != 0 or starts[-1] != t or any(a > b for a, b in zip(starts, starts[1:])):
        raise ValueError(f"block_starts must rise from 0 to T = {t}, got {starts}")
    weights = torch.zeros(t, top_k, dtype=torch.float32)
    ids = torch.zeros(t, top_k, dtype=torch.int32)
    for b in range(nb):
        tokens = range(starts[b], starts[b + 1])
        if any(blocks[i] != b for i in tokens):
            raise ValueError(f"token_block disagrees with block_starts in block {b}")
        if not tokens:
            continue
        block_score = [max(c_rows[i][x] for i in tokens) for x in range(e)]
        admitted = sorted(range(e), key=lambda x: (-block_score[x], x))[:expert_capacity]
        for i in tokens:
            chosen = sorted(admitted, key=lambda x: (-c_rows[i][x], x))[:top_k]
            raw = s[i, chosen]
            weights[i] = raw / (raw.sum() + NORM_EPS) if top_k > 1 else raw
            ids[i] = torch.tensor(chosen, dtype=torch.int32)
    return weights.to(device), ids.to(device)


# ----------------------------------------------------------------------------------------------
# Torch twin (also the CPU production path)
# ----------------------------------------------------------------------------------------------


def block_route_torch(
    router_logits: Tensor, expert_bias: Tensor, block_starts: Tensor, token_block: Tensor,
    block_size: int, expert_capacity: int, top_k: int,
) -> tuple[Tensor, Tensor]:
    """Torch implementation of the module contract: scatter-max per block, then two stable sorts."""
    t, e, nb = _check(router_logits, expert_bias, block_starts, token_block, block_size, expert_capacity, top_k)
    if t == 0:
        return _empty_outputs(0, top_k, router_logits.device)
    s, c = _scores(router_logits, expert_bias)  # [T, E]
    blk = token_block.long()  # [T]
    block_score = torch.full((nb, e), float("-inf"), device=c.device).scatter_reduce_(
        0, blk[:, None].expand(t, e), c, reduce="amax"
    )  # [NB, E]
    # A stable descending sort keeps equal scores in expert order: lower id admitted first.
    admitted = torch.sort(block_score, dim=1, descending=True, stable=True).indices[:, :expert_capacity]
    candidates = admitted.sort(dim=1).values[blk]  # [T, C] ascending ids, so the next stable sort breaks ties by id
    order = torch.sort(c.gather(1, candidates), dim=1, descending=True, stable=True).indices[:, :top_k]
    ids = candidates.gather(1, order)  # [T, K]
    return _normalise(s.gather(1, ids), top_k), ids.to(torch.int32)


# ----------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------

if HAS_TRITON:

    @triton.jit
    def _score(logit, USE_LIBDEVICE: tl.constexpr):
        """1 / (1 + exp(-x)) in fp32, correctly rounded division. On the GPU exp is libdevice's, as in
        SGLang (tl.exp would be the faster approximate one); the interpreter only knows tl.exp."""
        x = logit.to(tl.float32)
        if USE_LIBDEVICE:
            e = libdevice.exp(-x)
        else:
            e = tl.exp(-x)
        return tl.div_rn(1.0, 1.0 + e)

    @triton.jit
    def _block_admit_kernel(
        logits_ptr,  # [T, E] any float, strided
        bias_ptr,  # [E] fp32
        starts_ptr,  # [NB + 1] int32
        admitted_ptr,  # [NB, C] int32 out: the block's experts, best first
        stride_t,
        stride_e,
        E,
        C,
        USE_LIBDEVICE: tl.constexpr,
        BLOCK_T: tl.constexpr,  # token tile
        BLOCK_E: tl.constexpr,  # next power of two >= E
    ):
        i_b = tl.program_id(0).to(tl.int64)
        o_e = tl.arange(0, BLOCK_E)
        m_e = o_e < E
        b_bias = tl.load(bias_ptr + o_e, mask=m_e, other=0.0)
        start = tl.load(starts_ptr + i_b).to(tl.int64)
        end = tl.load(starts_ptr + i_b + 1).to(tl.int64)

        b_best = tl.full([BLOCK_E], float("-inf"), tl.float32)  # block score per expert
        for t0 in range(start, end, BLOCK_T):
            o_t = t0 + tl.arange(0, BLOCK_T)
            m = (o_t < end)[:, None] & m_e[None, :]
            p_x = logits_ptr + o_t[:, None] * stride_t + o_e[None, :] * stride_e
            b_c = _score(tl.load(p_x, mask=m, other=0.0), USE_LIBDEVICE) + b_bias[None, :]
            b_best = tl.maximum(b_best, tl.max(tl.where(m, b_c, float("-inf")), axis=0))

        # One sortable int64 key per expert: the score's bits made order-preserving as a signed int
        # (negative floats get their magnitude bits flipped), above (BLOCK_E - 1 - id), so equal
        # scores rank the lower id higher and every key is distinct. Padded experts score -inf and
        # carry the highest ids: they rank below every real expert, and C <= E never reaches them.
        bits = (b_best + 0.0).to(tl.int32, bitcast=True)  # + 0.0: -0.0 becomes +0.0
        ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)
        key = (ordered.to(tl.int64) << 32) | (BLOCK_E - 1 - o_e).to(tl.int64)
        ranked = tl.sort(key, descending=True)
        ids = BLOCK_E - 1 - ranked.to(tl.int32)  # truncation keeps the low half: BLOCK_E - 1 - id
        tl.store(admitted_ptr + i_b * C + o_e, ids, mask=o_e < C)

    @triton.jit
    def _token_choose_kernel(
        logits_ptr,  # [T, E] any float, strided
        bias_ptr,  # [E] fp32
        token_block_ptr,  # [T] int32
        admitted_ptr,  # [NB, C] int32
        weights_ptr,  # [T, K] fp32 out
        ids_ptr,  # [T, K] int32 out
        stride_t,
        stride_e,
        C,
        K: tl.constexpr,
        USE_LIBDEVICE: tl.constexpr,
        BLOCK_C: tl.constexpr,  # next power of two >= C
    ):
        i_t = tl.program_id(0).to(tl.int64)
        i_b = tl.load(token_block_ptr + i_t).to(tl.int64)
        o_c = tl.arange(0, BLOCK_C)
        m_c = o_c < C
        b_id = tl.load(admitted_ptr + i_b * C + o_c, mask=m_c, other=0)
        b_s = _score(tl.load(logits_ptr + i_t * stride_t + b_id * stride_e, mask=m_c, other=0.0), USE_LIBDEVICE)
        b_c = tl.where(m_c, b_s + tl.load(bias_ptr + b_id, mask=m_c, other=0.0), float("-inf"))

        # rank[i] = admitted experts j that beat i: higher c, or equal c and lower id  [BLOCK_C, BLOCK_C]
        c_i = b_c[:, None]
        c_j = b_c[None, :]
        beats = m_c[None, :] & ((c_j > c_i) | ((c_j == c_i) & (b_id[None, :] < b_id[:, None])))
        rank = tl.sum(beats.to(tl.int32), 1)  # [BLOCK_C], distinct over the admitted experts
        chosen = m_c & (rank < K)

        if K > 1:
            total = 0.0
            for r in tl.static_range(K):  # in output order, as SGLang accumulates
                total += tl.sum(tl.where(chosen & (rank == r), b_s, 0.0), 0)
            b_w = tl.div_rn(b_s, total + 1e-20)
        else:
            b_w = b_s
        tl.store(weights_ptr + i_t * K + rank, b_w, mask=chosen)
        tl.store(ids_ptr + i_t * K + rank, b_id, mask=chosen)


def block_route_triton(
    router_logits: Tensor, expert_bias: Tensor, block_starts: Tensor, token_block: Tensor,
    block_size: int, expert_capacity: int, top_k: int, use_libdevice: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Triton path: one program per block admits experts, one program per token chooses among them.

    use_libdevice: libdevice's exp (what CUDA runs; the default for CUDA tensors) or tl.exp (the
    default elsewhere: the interpreter lacks libdevice, see sglang_llada/testing/gpu_path.py for how
    the libdevice branch is run on CPU)."""
    if not HAS_TRITON:
        raise RuntimeError("triton is not installed; use block_route_torch")
    t, e, nb = _check(router_logits, expert_bias, block_starts, token_block, block_size, expert_capacity, top_k)
    weights, ids = _empty_outputs(t, top_k, router_logits.device)
    if t == 0:
        return weights, ids
    admitted = torch.empty((nb, expert_capacity), dtype=torch.int32, device=router_logits.device)
    bias = expert_bias.to(torch.float32).contiguous()
    block_e = triton.next_power_of_2(e)
    block_c = triton.next_power_of_2(expert_capacity)
    if use_libdevice is None:
        use_libdevice = router_logits.is_cuda
    _block_admit_kernel[(nb,)](
        router_logits, bias, block_starts.to(torch.int32).contiguous(), admitted,
        router_logits.stride(0), router_logits.stride(1), e, expert_capacity,
        USE_LIBDEVICE=use_libdevice,
        # about 8K scores in registers per tile (32 tokens x 256 experts for LLaDA2.2-flash)
        BLOCK_T=max(1, min(triton.next_power_of_2(block_size), 8192 // block_e)),
        BLOCK_E=block_e,
        num_warps=4,
    )
    _token_choose_kernel[(t,)](
        router_logits, bias, token_block.to(torch.int32).contiguous(), admitted, weights, ids,
        router_logits.stride(0), router_logits.stride(1), expert_capacity,
        K=top_k,
        USE_LIBDEVICE=use_libdevice,
        BLOCK_C=block_c,
        num_warps=1 if block_c <= 32 else (2 if block_c <= 64 else 4),
    )
    return weights, ids


def block_route(
    router_logits: Tensor, expert_bias: Tensor, block_starts: Tensor, token_block: Tensor,
    block_size: int, expert_capacity: int, top_k: int,
) -> tuple[Tensor, Tensor]:
    """Dispatch: the Triton kernels for CUDA tensors, the torch twin otherwise (CPU, meta)."""
    fn = block_route_triton if (HAS_TRITON and router_logits.is_cuda) else block_route_torch
    return fn(router_logits, expert_bias, block_starts, token_block, block_size, expert_capacity, top_k)
