"""Block-causal prefill attention over SGLang's paged KV cache: a Triton kernel, its torch twin, a reference.

Trio: kernel `block_causal_attention_triton` (`_block_causal_attention_kernel`), torch twin
`block_causal_attention_torch` (CPU path), reference `block_causal_attention_reference`; tests
tests/kernels/test_block_causal_attention.py; bench bench/block_causal_attention_bench.py.

Why this exists: LLaDA2 attention is block-causal -- a token at absolute position p sees every
token before the end of its own 32-token block, ``key < (p // S + 1) * S``, and nothing after.
SGLang 0.5.23 therefore feeds a diffusion prompt one block per forward (its attention backends know
only causal and fully bidirectional masks), so a 1,000-token prompt costs 31 forwards before the
first denoising step. With this mask the whole prompt (every full block of it) is encoded in one
forward and writes exactly the KV block-by-block encoding writes.

Contract shared by `block_causal_attention_torch` and `block_causal_attention_triton`
(`block_causal_attention` dispatches: Triton for CUDA tensors, torch otherwise);
`block_causal_attention_reference` is the same contract token by token in float64 (tests only):

    q                [T, H, D]        queries of this forward's new tokens, request-major
    k_cache, v_cache [slots, Hkv, D]  one layer's KV pool; the new tokens' K/V are already in it
    req_to_token     [R, L] int       SGLang's `req_to_token_pool.req_to_token`: slot of position j
    req_pool_indices [B] int          each request's row of `req_to_token`
    prefix_lens      B host ints      tokens of the request already cached before this forward
    extend_lens      B host ints      new tokens of the request in this forward (T = sum)
    block_size       S
    scale            softmax scale (D ** -0.5 for LLaDA2)
    -> out [T, H, D] in q's dtype

Request i's new tokens sit at absolute positions prefix_lens[i] + m (m < extend_lens[i]) and may
see keys at positions j < min((pos // S + 1) * S, prefix_lens[i] + extend_lens[i]). H must be a
multiple of Hkv (grouped-query attention: query head h reads KV head h // (H // Hkv)). The lengths
are host ints, as SGLang keeps them (`ForwardBatch.extend_prefix_lens_cpu` / `extend_seq_lens_cpu`),
so neither twin reads device data on the host.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover
    HAS_TRITON = False

Tensor = torch.Tensor


def _check(q: Tensor, k_cache: Tensor, prefix_lens: Sequence[int], extend_lens: Sequence[int]) -> None:
    if q.dim() != 3 or k_cache.dim() != 3:
        raise ValueError(f"q must be [T, H, D] and k_cache [slots, Hkv, D], got {tuple(q.shape)}, {tuple(k_cache.shape)}")
    if q.shape[1] % k_cache.shape[1]:
        raise ValueError(f"{q.shape[1]} query heads are not a multiple of {k_cache.shape[1]} KV heads")
    if len(prefix_lens) != len(extend_lens) or sum(extend_lens) != q.shape[0]:
        raise ValueError(f"extend_lens must sum to T = {q.shape[0]}, got {list(extend_lens)}")


def block_causal_mask(prefix_len: int, extend_len: int, block_size: int, device: torch.device) -> Tensor:
    """[extend_len, prefix_len + extend_len] bool: which keys each new token may attend to."""
    q_pos = torch.arange(prefix_len, prefix_len + extend_len, device=device)  # [E]
    visible_end = (q_pos // block_size + 1) * block_size  # [E] exclusive end of the visible keys
    return torch.arange(prefix_len + extend_len, device=device)[None, :] < visible_end[:, None]


def block_causal_attention_torch(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    req_to_token: Tensor,
    req_pool_indices: Tensor,
    prefix_lens: Sequence[int],
    extend_lens: Sequence[int],
    block_size: int,
    scale: float,
) -> Tensor:
    """The torch twin: per request, gather its keys by slot and run SDPA with the block-causal mask."""
    _check(q, k_cache, prefix_lens, extend_lens)
    out = torch.empty_like(q)
    gqa = q.shape[1] != k_cache.shape[1]
    start = 0
    for i, (prefix, extend) in enumerate(zip(prefix_lens, extend_lens)):
        if extend == 0:
            continue
        seq = prefix + extend
        slots = req_to_token[req_pool_indices[i : i + 1], :seq][0].long()  # [seq]; a 1-element index: no host read
        k = k_cache[slots].transpose(0, 1).to(q.dtype)  # [Hkv, seq, D]
        v = v_cache[slots].transpose(0, 1).to(q.dtype)
        qi = q[start : start + extend].transpose(0, 1)  # [H, E, D]
        mask = block_causal_mask(prefix, extend, block_size, q.device)  # [E, seq]
        o = F.scaled_dot_product_attention(qi[None], k[None], v[None], attn_mask=mask, scale=scale, enable_gqa=gqa)
        out[start : start + extend] = o[0].transpose(0, 1)
        start += extend
    return out


def block_causal_attention_reference(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    req_to_token: Tensor,
    req_pool_indices: Tensor,
    prefix_lens: Sequence[int],
    extend_lens: Sequence[int],
    block_size: int,
    scale: float,
) -> Tensor:
    """The definition (tests only): token by token, in float64, softmax over the keys before the end
    of the token's block; -> [T, H, D] float64 (slow; reads indices on the host)."""
    out = torch.empty_like(q, dtype=torch.float64)
    group = q.shape[1] // k_cache.shape[1]
    t = 0
    for i, (p, e) in enumerate(zip(prefix_lens, extend_lens)):
        for m in range(e):
            pos = p + m
            end = min((pos // block_size + 1) * block_size, p + e)
            slots = req_to_token[req_pool_indices[i], :end].long()
            for hh in range(q.shape[1]):
                k = k_cache[slots, hh // group].double()  # [end, D]
                v = v_cache[slots, hh // group].double()
                w = torch.softmax(k @ q[t, hh].double() * scale, dim=0)
                out[t, hh] = w @ v
            t += 1
    return out


if HAS_TRITON:

    @triton.jit
    def _block_causal_attention_kernel(
        Q, K, V, O, ReqToToken, PoolIdx, Prefix, Extend, QStart,
        stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
        stride_req,
        scale,
        GROUP: tl.constexpr,
        S: tl.constexpr,
        D: tl.constexpr,
        BLOCK_D: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        # One program: BLOCK_M new tokens of request b, query head h (online softmax over its keys).
        b = tl.program_id(0)
        tile = tl.program_id(1)
        h = tl.program_id(2)
        extend = tl.load(Extend + b)
        if tile * BLOCK_M < extend:
            prefix = tl.load(Prefix + b)
            q_start = tl.load(QStart + b)
            row = tl.load(PoolIdx + b).to(tl.int64)
            kv_head = h // GROUP
            seq = prefix + extend

            offs_m = tile * BLOCK_M + tl.arange(0, BLOCK_M)  # [M] index among the new tokens
            offs_d = tl.arange(0, BLOCK_D)
            offs_n = tl.arange(0, BLOCK_N)
            m_ok = offs_m < extend
            d_ok = offs_d < D
            q_rows = (q_start + offs_m).to(tl.int64)
            q = tl.load(
                Q + q_rows[:, None] * stride_qt + h * stride_qh + offs_d[None, :],
                mask=m_ok[:, None] & d_ok[None, :],
                other=0.0,
            )  # [M, D]
            # Exclusive end of the keys each row sees; key 0 is visible to every row, so the
            # running max is finite after the first key tile.
            visible = tl.minimum(((prefix + offs_m) // S + 1) * S, seq)  # [M]
            last = tl.minimum(tile * BLOCK_M + BLOCK_M, extend) - 1
            kv_end = tl.minimum(((prefix + last) // S + 1) * S, seq)

            m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
            l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
            acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
            for start in range(0, kv_end, BLOCK_N):
                n = start + offs_n  # [N] key positions
                n_ok = n < kv_end
                slot = tl.load(ReqToToken + row * stride_req + n, mask=n_ok, other=0).to(tl.int64)
                kv_mask = n_ok[:, None] & d_ok[None, :]
                k = tl.load(K + slot[:, None] * stride_kt + kv_head * stride_kh + offs_d[None, :], mask=kv_mask, other=0.0)
                s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # [M, N]
                s = tl.where(n[None, :] < visible[:, None], s, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(s, 1))
                p = tl.exp(s - m_new[:, None])
                alpha = tl.exp(m_i - m_new)
                l_i = l_i * alpha + tl.sum(p, 1)
                v = tl.load(V + slot[:, None] * stride_vt + kv_head * stride_vh + offs_d[None, :], mask=kv_mask, other=0.0)
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
                m_i = m_new
            out = acc / l_i[:, None]
            tl.store(
                O + q_rows[:, None] * stride_ot + h * stride_oh + offs_d[None, :],
                out.to(O.dtype.element_ty),
                mask=m_ok[:, None] & d_ok[None, :],
            )


def block_causal_attention_triton(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    req_to_token: Tensor,
    req_pool_indices: Tensor,
    prefix_lens: Sequence[int],
    extend_lens: Sequence[int],
    block_size: int,
    scale: float,
    block_m: int = 32,
    block_n: int = 32,
) -> Tensor:
    """The kernel: grid (B, ceil(max extend / block_m), H); fp32 accumulation."""
    if not HAS_TRITON:
        raise RuntimeError("triton is not installed; use block_causal_attention_torch")
    _check(q, k_cache, prefix_lens, extend_lens)
    if k_cache.dtype != q.dtype:
        k_cache, v_cache = k_cache.to(q.dtype), v_cache.to(q.dtype)
    out = torch.empty_like(q)
    b = len(extend_lens)
    if b == 0 or q.shape[0] == 0:
        return out
    starts = [0]
    for e in extend_lens[:-1]:
        starts.append(starts[-1] + e)
    # One small host->device copy of the lengths (they are host ints in SGLang already).
    meta = torch.tensor([*prefix_lens, *extend_lens, *starts], dtype=torch.int32).to(q.device, non_blocking=True)
    prefix_t, extend_t, start_t = meta[:b], meta[b : 2 * b], meta[2 * b :]
    h, d = q.shape[1], q.shape[2]
    grid = (b, triton.cdiv(max(extend_lens), block_m), h)
    _block_causal_attention_kernel[grid](
        q, k_cache, v_cache, out, req_to_token, req_pool_indices, prefix_t, extend_t, start_t,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), v_cache.stride(0), v_cache.stride(1),
        out.stride(0), out.stride(1),
        req_to_token.stride(0),
        scale,
        GROUP=h // k_cache.shape[1],
        S=block_size,
        D=d,
        BLOCK_D=max(16, triton.next_power_of_2(d)),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        # fp32 inputs: exact fp32 products (tf32 would cost ~1e-3); bf16/fp16 use the tensor cores.
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        # fp32 tiles without tensor cores need 255 registers per thread at 4 warps on sm_80 and
        # spill (bench/results/kernel_compile.md); 8 warps split them (80 registers, no spills).
        num_warps=8 if q.dtype == torch.float32 else 4,
    )
    return out


def block_causal_attention(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    req_to_token: Tensor,
    req_pool_indices: Tensor,
    prefix_lens: Sequence[int],
    extend_lens: Sequence[int],
    block_size: int,
    scale: float,
) -> Tensor:
    """Triton on CUDA tensors, the torch twin otherwise (see the module docstring for the contract)."""
    fn = block_causal_attention_triton if (HAS_TRITON and q.is_cuda) else block_causal_attention_torch
    return fn(q, k_cache, v_cache, req_to_token, req_pool_indices, prefix_lens, extend_lens, block_size, scale)
