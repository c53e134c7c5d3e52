"""Request logit adjustments of one diffusion step, in place: a Triton kernel, its torch twin, a reference.

Trio: kernel `logit_adjust_triton` (`_logit_adjust_kernel`), torch twin `logit_adjust_torch` (CPU
path), reference `logit_adjust_reference`; tests tests/kernels/test_logit_adjust.py (which also
compare with SGLang's own penalizers); bench bench/logit_adjust_bench.py.

Why this exists: a request's `logit_bias` and its repetition / frequency / presence penalties change
the logits every decoder reads (SGLang's `SamplingBatchInfo.apply_logits_bias` does it for
autoregressive decoding; SGLang 0.5.23's diffusion path never calls it). This module applies them
to the [N, V] logits of a block step before the `confidence` kernel reads them, so the chosen
token, its confidence (which decides what to commit) and its logprob all come from the adjusted
distribution, and the top-k / top-p / min-p cut-offs are computed on it too.

Contract shared by both implementations (`logit_adjust_torch`, `logit_adjust_triton`;
`logit_adjust` dispatches: Triton for CUDA tensors, torch otherwise; `logit_adjust_reference` is
the formulas below row by row, out of place, tests only). Row n of the logits belongs to request
b = n // rows_per_request (a block of S positions per request):

    logits      [N, V] fp32 | bf16 | fp16   adjusted IN PLACE (computed in fp32, stored in its dtype)
    live        [N] bool                     rows to adjust; the others are not touched
    rows_per_request  int                    S
    counts      [B, V] int32 | None          per-request token counts (the penalties' "seen" tokens)
    self_token  [N] int64 | None             the token at the position itself (-1: none): its own
                                             occurrence, which `counts` includes, is not counted
    frequency   [B] fp32                     needed with counts
    presence    [B] fp32                     needed with counts
    repetition  [B] fp32                     needed with counts (1 = off)
    bias        [B, V] fp32 | None           added to the logits (SGLang's dense `logit_bias`)
    -> logits

For a live row n of request b and a column v, with c = max(counts[b, v] - (v == self_token[n]), 0):

    x = x - frequency[b] * c                                   (frequency penalty)
    x = x - presence[b]              if c > 0                  (presence penalty)
    x = x * repetition[b] if x < 0 else x * (1 / repetition[b])   if c > 0   (repetition penalty)
    x = x + bias[b, v]                                         (logit_bias)

This is SGLang's order (sampling_batch_info.py: the additive penalties, then the scaling one --
`apply_scaling_penalties` -- then the grammar mask, then `logit_bias`) and its formulas
(penaltylib: frequency subtracts count * penalty, presence subtracts the penalty once a token was
seen, repetition divides positive / multiplies negative logits of seen tokens). One deliberate
difference: the division by the repetition penalty is a multiplication by its reciprocal,
computed once per request in torch for both paths, so that the twins agree bit for bit (Triton's
fp32 `/` on CUDA is not correctly rounded); it differs from `x / r` by at most one ulp. -inf
logits (banned columns) stay -inf.

Cost: one read and one write of each live row (plus one read of its request's counts and bias
rows, which the S rows of a request share); rows that are not live exit before the V loop. The
caller launches it only when some request of the batch uses one of these parameters, and passes
live = False for the rows of the others, so their logits are untouched.

No host synchronisation in either path: the torch twin writes every row of a chunk with
torch.where(live, adjusted, original) instead of branching on data; python control flow depends
only on shapes and on which optional arguments are None.
"""

from __future__ import annotations

from typing import Optional

import torch

try:  # as in confidence.py: keep the torch path importable without triton
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only on exotic platforms
    HAS_TRITON = False

Tensor = torch.Tensor

# Rows per torch chunk: bounds the [rows, V] fp32 / int32 temporaries (as confidence.py).
TORCH_CHUNK_ELEMS = 1 << 19
DEFAULT_BLOCK_V = 2048


class Penalties:
    """The per-request penalty arguments: counts [B, V] int32 and [B] fp32 frequency, presence, repetition.

    `inverse_repetition` (1 / repetition) is computed here, once, for both twins.
    """

    def __init__(self, counts: Tensor, frequency: Tensor, presence: Tensor, repetition: Tensor) -> None:
        b = counts.shape[0]
        for name, t in (("frequency", frequency), ("presence", presence), ("repetition", repetition)):
            if t.shape != (b,):
                raise ValueError(f"{name} must be [B] = [{b}], got {tuple(t.shape)}")
        if counts.dtype != torch.int32 or counts.dim() != 2:
            raise ValueError("counts must be a [B, V] int32 tensor")
        self.counts = counts
        self.frequency = frequency.to(torch.float32).contiguous()
        self.presence = presence.to(torch.float32).contiguous()
        self.repetition = repetition.to(torch.float32).contiguous()
        self.inverse_repetition = (1.0 / self.repetition).contiguous()


def _check(
    logits: Tensor,
    live: Tensor,
    rows_per_request: int,
    penalties: Optional[Penalties],
    self_token: Optional[Tensor],
    bias: Optional[Tensor],
) -> int:
    """Validates shapes; -> B."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, V], got {tuple(logits.shape)}")
    n, v = logits.shape
    if live.shape != (n,) or live.dtype != torch.bool:
        raise ValueError("live must be a [N] bool tensor")
    if rows_per_request < 1 or n % rows_per_request:
        raise ValueError(f"N = {n} is not a multiple of rows_per_request = {rows_per_request}")
    b = n // rows_per_request
    if penalties is not None:
        if penalties.counts.shape != (b, v):
            raise ValueError(f"counts must be [B, V] = [{b}, {v}], got {tuple(penalties.counts.shape)}")
        if self_token is not None and self_token.shape != (n,):
            raise ValueError("self_token must be [N]")
    if bias is not None and bias.shape != (b, v):
        raise ValueError(f"bias must be [B, V] = [{b}, {v}], got {tuple(bias.shape)}")
    return b


# ----------------------------------------------------------------------------------------------
# Torch twin (also the CPU production path)
# ----------------------------------------------------------------------------------------------


def _adjust_rows_torch(
    x: Tensor,
    req: Tensor,
    penalties: Optional[Penalties],
    own: Optional[Tensor],
    bias: Optional[Tensor],
) -> Tensor:
    """x [R, V] fp32 (a fresh tensor, modified), req [R] int64 request rows -> adjusted x."""
    if penalties is not None:
        c = penalties.counts.index_select(0, req)  # [R, V] int32
        if own is not None:
            cols = torch.arange(x.shape[1], device=x.device)
            c = (c - (cols[None, :] == own[:, None]).to(torch.int32)).clamp_(min=0)
        seen = c > 0
        x = x - penalties.frequency.index_select(0, req)[:, None] * c.to(torch.float32)
        x = torch.where(seen, x - penalties.presence.index_select(0, req)[:, None], x)
        scaled = torch.where(
            x < 0,
            x * penalties.repetition.index_select(0, req)[:, None],
            x * penalties.inverse_repetition.index_select(0, req)[:, None],
        )
        x = torch.where(seen, scaled, x)
    if bias is not None:
        x = x + bias.index_select(0, req).to(torch.float32)
    return x


def logit_adjust_torch(
    logits: Tensor,
    live: Tensor,
    rows_per_request: int,
    penalties: Optional[Penalties] = None,
    self_token: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
) -> Tensor:
    """Pure-torch twin of the contract in the module docstring (in place; any device, meta included)."""
    _check(logits, live, rows_per_request, penalties, self_token, bias)
    n, v = logits.shape
    if penalties is None and bias is None:
        return logits
    own_all = None if (penalties is None or self_token is None) else self_token.to(torch.int64)
    step = max(1, TORCH_CHUNK_ELEMS // max(v, 1))
    for lo in range(0, n, step):  # shape-driven chunks; no data-dependent control flow
        hi = min(n, lo + step)
        req = torch.arange(lo, hi, device=logits.device) // rows_per_request
        rows = logits[lo:hi]
        x = _adjust_rows_torch(
            rows.to(torch.float32), req, penalties, None if own_all is None else own_all[lo:hi], bias
        )
        rows.copy_(torch.where(live[lo:hi, None], x.to(logits.dtype), rows))
    return logits


# ----------------------------------------------------------------------------------------------
# Reference (tests only): the formulas, row by row
# ----------------------------------------------------------------------------------------------


def logit_adjust_reference(
    logits: Tensor,
    live: Tensor,
    rows_per_request: int,
    penalties: Optional[Penalties] = None,
    self_token: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
) -> Tensor:
    """The contract's formulas row by row on the host, out of place -> a new [N, V] fp32 tensor on the
    logits' device (slow; reads everything on the host). The repetition penalty divides (x / r), as
    SGLang does; the twins multiply by 1 / r, at most an ulp away."""
    _check(logits, live, rows_per_request, penalties, self_token, bias)
    out = logits.detach().cpu().to(torch.float32).clone()
    for row in range(out.shape[0]):
        if not bool(live[row]):
            continue
        b = row // rows_per_request
        x = out[row]
        if penalties is not None:
            c = penalties.counts[b].cpu().clone()
            own = -1 if self_token is None else int(self_token[row])
            if own >= 0:
                c[own] = max(int(c[own]) - 1, 0)
            seen = c > 0
            x = x - penalties.frequency[b].cpu() * c.to(torch.float32)
            x = torch.where(seen, x - penalties.presence[b].cpu(), x)
            r = penalties.repetition[b].cpu()
            x = torch.where(seen, torch.where(x < 0, x * r, x / r), x)
        if bias is not None:
            x = x + bias[b].cpu().to(torch.float32)
        out[row] = x
    return out.to(logits.device)


# ----------------------------------------------------------------------------------------------
# Triton kernel
# ----------------------------------------------------------------------------------------------

if HAS_TRITON:

    @triton.jit
    def _logit_adjust_kernel(
        logits_ptr,  # [N, V] fp32 | bf16 | fp16, unit stride along V; written in place
        stride_row,
        live_ptr,  # [N] uint8 (bool viewed as bytes)
        rows_per_request,
        counts_ptr,  # [B, V] int32 (read only when HAS_PENALTY)
        stride_counts,
        own_ptr,  # [N] int64, -1: none (read only when HAS_PENALTY)
        freq_ptr,  # [B] fp32 (HAS_PENALTY)
        pres_ptr,  # [B] fp32 (HAS_PENALTY)
        rep_ptr,  # [B] fp32 (HAS_PENALTY)
        inv_rep_ptr,  # [B] fp32 (HAS_PENALTY)
        bias_ptr,  # [B, V] fp32 (read only when HAS_BIAS)
        stride_bias,
        V,
        BLOCK_V: tl.constexpr,
        HAS_PENALTY: tl.constexpr,
        HAS_BIAS: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        if tl.load(live_ptr + row) != 0:
            req = row // rows_per_request
            row_ptr = logits_ptr + row * stride_row
            own = tl.full([], -1, tl.int64)
            freq = tl.full([], 0.0, tl.float32)
            pres = tl.full([], 0.0, tl.float32)
            rep = tl.full([], 1.0, tl.float32)
            inv_rep = tl.full([], 1.0, tl.float32)
            if HAS_PENALTY:
                own = tl.load(own_ptr + row)
                freq = tl.load(freq_ptr + req)
                pres = tl.load(pres_ptr + req)
                rep = tl.load(rep_ptr + req)
                inv_rep = tl.load(inv_rep_ptr + req)
            for start in range(0, V, BLOCK_V):
                cols = start + tl.arange(0, BLOCK_V)
                inb = cols < V
                x = tl.load(row_ptr + cols, mask=inb, other=0.0).to(tl.float32)
                if HAS_PENALTY:
                    c = tl.load(counts_ptr + req * stride_counts + cols, mask=inb, other=0)
                    c = tl.maximum(c - (cols.to(tl.int64) == own).to(tl.int32), 0)
                    seen = c > 0
                    x = x - freq * c.to(tl.float32)
                    x = tl.where(seen, x - pres, x)
                    x = tl.where(seen, tl.where(x < 0.0, x * rep, x * inv_rep), x)
                if HAS_BIAS:
                    x = x + tl.load(bias_ptr + req * stride_bias + cols, mask=inb, other=0.0)
                tl.store(row_ptr + cols, x.to(logits_ptr.dtype.element_ty), mask=inb)


def logit_adjust_triton(
    logits: Tensor,
    live: Tensor,
    rows_per_request: int,
    penalties: Optional[Penalties] = None,
    self_token: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    *,
    block_v: int = DEFAULT_BLOCK_V,
    num_warps: int = 4,
) -> Tensor:
    """Triton path: one program per row, one pass over V, in place. Same contract as `logit_adjust_torch`."""
    if not HAS_TRITON:
        raise RuntimeError("triton is not installed")
    _check(logits, live, rows_per_request, penalties, self_token, bias)
    n, v = logits.shape
    if n == 0 or (penalties is None and bias is None):
        return logits
    if logits.stride(1) != 1:
        raise ValueError("logits must have unit stride along V (they are written in place)")
    live_u8 = live.contiguous().view(torch.uint8)
    if penalties is not None:
        counts = penalties.counts if penalties.counts.stride(1) == 1 else penalties.counts.contiguous()
        own = (
            torch.full((n,), -1, dtype=torch.int64, device=logits.device)
            if self_token is None
            else self_token.to(torch.int64).contiguous()
        )
        freq, pres, rep, inv_rep = (
            penalties.frequency, penalties.presence, penalties.repetition, penalties.inverse_repetition
        )
        stride_counts = counts.stride(0)
    else:  # unused pointers
        counts = own = freq = pres = rep = inv_rep = live_u8
        stride_counts = 0
    if bias is not None:
        bias32 = bias.to(torch.float32)
        if bias32.stride(1) != 1:
            bias32 = bias32.contiguous()
        stride_bias = bias32.stride(0)
    else:
        bias32, stride_bias = live_u8, 0
    _logit_adjust_kernel[(n,)](
        logits,
        logits.stride(0),
        live_u8,
        rows_per_request,
        counts,
        stride_counts,
        own,
        freq,
        pres,
        rep,
        inv_rep,
        bias32,
        stride_bias,
        v,
        BLOCK_V=block_v,
        HAS_PENALTY=penalties is not None,
        HAS_BIAS=bias is not None,
        num_warps=num_warps,
        # No FMA contraction of x - f * c: keeps each rounding as in torch (bit-identical twins).
        enable_fp_fusion=False,
    )
    return logits


def logit_adjust(
    logits: Tensor,
    live: Tensor,
    rows_per_request: int,
    penalties: Optional[Penalties] = None,
    self_token: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
) -> Tensor:
    """Dispatch: the Triton kernel for CUDA tensors, the torch twin otherwise (CPU, meta)."""
    fn = logit_adjust_triton if (HAS_TRITON and logits.is_cuda) else logit_adjust_torch
    return fn(logits, live, rows_per_request, penalties, self_token, bias)
