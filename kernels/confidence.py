"""Per-position token choice and confidence for one diffusion step: a Triton kernel, its torch twin, a reference.

Trio: kernel `confidence_triton` (`_confidence_kernel`), torch twin `confidence_torch` (CPU path),
reference `confidence_reference` (greedy rows) with `row_key_reference` / `gumbel_reference` (the
sampling noise, on python integers); tests tests/kernels/test_confidence.py; bench
bench/step_bench.py (the whole unmasking step: `confidence` + `select_commit`).

Why this exists: every denoising step needs, for each of the N = (running blocks x 32) positions,
the token to write and its confidence (the probability of that token). SGLang 0.5.23's in-tree
`LowConfidence.step` materialises `softmax(logits)` over the whole [N, V] tensor (V = 157,184 for
LLaDA2: 643 MB of fp32 at N = 1024) and then gathers one value per row. The Triton kernel reads each
row of logits once, keeping a running max and running sum (online softmax) next to the running
argmax, so it writes 12 bytes per row instead of 4 V bytes, and skips rows that are not masked.

Contract shared by both implementations (`confidence_torch`, `confidence_triton`; `confidence`
dispatches: Triton for CUDA tensors, torch otherwise); the references (tests only) define the greedy
rows and the sampling noise by their formulas:

    logits      [N, V] fp32 | bf16 | fp16   (probabilities are always computed in fp32)
    is_masked   [N] bool                     rows that are still masked; the others are skipped
    temperature [N] fp32 | None              0 -> greedy row; > 0 -> sampled row; None: all greedy
    top_k       [N] int | None               active where 0 < top_k < V (sampled rows only)
    top_p       [N] fp32 | None              active where 0 < top_p < 1 (sampled rows only)
    seeds       [N] int64 | None             required when temperature is given
    offsets     [N] int64 | None             noise counter of the row (default: arange(N)); fold
                                             the absolute position and the step in here so that
                                             a position draws fresh noise at every step
    min_p       [N] fp32 | None              active where 0 < min_p (sampled rows only; <= 1)
    -> token [N] int64, prob [N] fp32

* Greedy rows: token = argmax(logits) (lowest index on ties, as torch.argmax), prob =
  softmax(logits)[token] -- exactly what LowConfidence calls the confidence.
* Sampled rows: Gumbel-max. token = argmax(z + g) with z = logits * (1 / temperature) and
  g = -log(-log(u)), u a uniform drawn by a counter-based integer hash of (seed, offset, vocab
  index); prob = softmax(z)[token]. Both twins implement the same 32-bit hash (int64 arithmetic
  masked to 32 bits; every product stays below 2**63, so there is no overflow anywhere), so the
  noise is bit-identical up to the last-ulp differences of `log` between libraries (see caveats).
* top-k / top-p (sampled rows only; greedy rows ignore them, as SGLang's sampler does): both
  filters are reduced to one value cut-off per row, `keep = logits >= cut` (ties at the boundary are
  kept), computed by `filter_cutoff` in torch for BOTH paths. Why not in the kernel: the cut-off is
  the k-th largest logit / the nucleus boundary, which needs a sort (or a selection with many passes
  over V) -- a single online pass cannot produce it. Sharing one torch implementation also makes
  the kept set identical in both paths. The kernel then samples among kept tokens and prob is the
  probability renormalised over them (as LLaDA2's reference `generate` does). Pass
  top_k = top_p = None when no request filters: the sort is then skipped entirely.
* min-p (sampled rows only, as SGLang's sampler; a greedy row's argmax always passes it anyway):
  keeps the tokens with p >= min_p * p_max of the temperature-scaled distribution, i.e.
  z >= z_max + log(min_p), i.e. logits >= max(logits) + T * log(min_p) -- one more value cut-off
  per row, folded into the same `cut` (the larger of the top-k / top-p and min-p cut-offs; the
  ratio p / p_max does not change when top-k / top-p renormalise, so this is SGLang's order too).
  It needs only the row max (one `amax` over V when no sort runs); min_p = 1 keeps the argmax
  (and its ties) alone, so a sampled row then returns the greedy token.
* Rows with is_masked False: token = -1, prob = -inf. The kernel exits before the V loop; the torch
  twin computes them and overwrites them with torch.where (it may not branch on data).

No host synchronisation in either path: no .item(), .tolist(), .cpu(), boolean indexing or
nonzero; per-row decisions are torch.where / masked ops, and python control flow depends only on
shapes and on which optional arguments are None.

Caveats: NaN logits are unsupported. Gumbel noise uses `log`, whose last ulp differs between torch,
numpy (the Triton interpreter) and CUDA's fast log; tokens can therefore differ between paths only
where two perturbed scores are within an ulp of each other.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

try:  # Triton ships with torch on Linux; keep the torch path importable without it.
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only on exotic platforms
    HAS_TRITON = False

Tensor = torch.Tensor

MASK32 = 0xFFFFFFFF
# Multipliers of a two-round 32-bit integer hash (low bias, from the hash-prospector family). Both are
# below 2**31, so x * C < 2**63 for any 32-bit x: int64 products never overflow in either twin.
HASH_C1 = 0x21F0AAAD
HASH_C2 = 0x735A2D97
HASH_SALT = 0x2545F491  # keeps seed 0 / offset 0 away from the hash's fixed point 0
U24 = 5.9604644775390625e-08  # 2**-24: (2j + 1) * 2**-24 is exact in fp32 for j < 2**23

NEG_INF = float("-inf")
# Rows per torch chunk: bounds the [rows, V] temporaries (about 0.5M elements, 4 MB of int64, so
# that the hash's temporaries stay cache-sized: 3 rows at V = 157,184).
TORCH_CHUNK_ELEMS = 1 << 19
DEFAULT_BLOCK_V = 4096


# ----------------------------------------------------------------------------------------------
# Shared helpers (torch)
# ----------------------------------------------------------------------------------------------


def mix32_(x: Tensor) -> Tensor:
    """The 32-bit mix, in place, on an int64 tensor holding values in [0, 2**32) (in place: the
    [rows, V] noise is the torch path's biggest cost, and fewer temporaries halve it)."""
    x ^= x >> 16
    x *= HASH_C1
    x &= MASK32
    x ^= x >> 15
    x *= HASH_C2
    x &= MASK32
    x ^= x >> 15
    return x


def mix32_torch(x: Tensor) -> Tensor:
    """The 32-bit mix on a copy of x."""
    return mix32_(x.clone())


def row_key_torch(seeds: Tensor, offsets: Tensor) -> Tensor:
    """[N] int64 seeds and offsets -> [N] int64 32-bit row keys (any int64 seed, negative ones included)."""
    h = mix32_torch((seeds & MASK32) ^ HASH_SALT)
    h = mix32_torch(h ^ ((seeds >> 32) & MASK32))
    h = mix32_torch(h ^ (offsets & MASK32))
    return mix32_torch(h ^ ((offsets >> 32) & MASK32))


def gumbel_torch(row_key: Tensor, cols: Tensor) -> Tensor:
    """row_key [R] int64, cols [V] int64 -> Gumbel(0, 1) noise [R, V] fp32."""
    e = mix32_(mix32_(row_key[:, None] ^ cols[None, :]))  # [R, V], a fresh tensor
    e >>= 9
    e *= 2
    e += 1
    u = e.to(torch.float32).mul_(U24)  # (2j + 1) * 2**-24 in (0, 1), exact
    return u.log_().neg_().log_().neg_()  # -log(-log(u))


def inverse_temperature(temperature: Optional[Tensor], n: int, device: torch.device) -> Tensor:
    """[N] fp32: 1 / temperature for sampled rows, 1 for greedy rows (and for all rows when None).

    Computed once in torch for both paths so that z = logits * inv_t is bit-identical in both.
    """
    if temperature is None:
        return torch.ones(n, dtype=torch.float32, device=device)
    t = temperature.to(torch.float32)
    return torch.where(t > 0, 1.0 / torch.where(t > 0, t, 1.0), 1.0)


def default_offsets(offsets: Optional[Tensor], n: int, device: torch.device) -> Tensor:
    if offsets is None:
        return torch.arange(n, dtype=torch.int64, device=device)
    return offsets.to(torch.int64)


def _cutoff_rows(
    x: Tensor,
    inv_t: Tensor,
    sampled: Tensor,
    top_k: Optional[Tensor],
    top_p: Optional[Tensor],
    min_p: Optional[Tensor] = None,
) -> Tensor:
    """x [R, V] fp32 logits -> cut [R] fp32 (keep = x >= cut; -inf keeps everything)."""
    n, v = x.shape
    cut = torch.full((n,), NEG_INF, dtype=torch.float32, device=x.device)
    active = torch.zeros(n, dtype=torch.bool, device=x.device)
    if top_k is None and top_p is None:  # min-p alone: the row max, no sort
        return _min_p_cut(x.amax(dim=1), inv_t, sampled, min_p, cut, active)
    vals = torch.sort(x, dim=1, descending=True).values  # [R, V]
    if top_k is not None:
        k = top_k.to(torch.int64)
        k_on = (k > 0) & (k < v)
        kth = vals.gather(1, (k.clamp(1, v) - 1)[:, None]).squeeze(1)  # [R]
        cut = torch.where(k_on, kth, cut)
        active = active | k_on
    if top_p is not None:
        p = top_p.to(torch.float32)
        p_on = (p > 0) & (p < 1)
        # Nucleus of the top-k-filtered, temperature-scaled distribution.
        z = torch.where(vals >= cut[:, None], vals * inv_t[:, None], NEG_INF)  # [R, V]
        probs = torch.softmax(z, dim=1)
        before = torch.cumsum(probs, dim=1) - probs  # mass strictly before each sorted slot
        last = (before < p[:, None]).sum(dim=1) - 1  # [R] last kept slot (>= 0 since p > 0)
        pth = vals.gather(1, last.clamp(min=0)[:, None]).squeeze(1)
        cut = torch.where(p_on, torch.maximum(cut, pth), cut)
        active = active | p_on
    return _min_p_cut(vals[:, 0], inv_t, sampled, min_p, cut, active)


def _min_p_cut(
    x_max: Tensor, inv_t: Tensor, sampled: Tensor, min_p: Optional[Tensor], cut: Tensor, active: Tensor
) -> Tensor:
    """Folds min-p into the cut-off: p >= min_p * p_max <=> x >= x_max + log(min_p) / inv_t."""
    if min_p is not None:
        mp = min_p.to(torch.float32)
        mp_on = mp > 0
        mcut = x_max + torch.log(mp.clamp(min=1e-30, max=1.0)) / inv_t
        cut = torch.where(mp_on, torch.maximum(cut, mcut), cut)
        active = active | mp_on
    return torch.where(active & sampled, cut, NEG_INF)


def filter_cutoff(
    logits: Tensor,
    temperature: Optional[Tensor],
    top_k: Optional[Tensor],
    top_p: Optional[Tensor],
    min_p: Optional[Tensor] = None,
) -> Optional[Tensor]:
    """[N, V] logits -> [N] fp32 value cut-off of the top-k / top-p / min-p filters, or None when all are None.

    top-k keeps logits >= the k-th largest; top-p then keeps the smallest prefix of the (top-k
    renormalised, temperature-scaled) sorted distribution whose mass reaches top_p, plus every
    token tied with its last member; min-p keeps logits >= max + T * log(min_p). Greedy rows and
    rows with no active filter get -inf.
    """
    if top_k is None and top_p is None and min_p is None:
        return None
    n, v = logits.shape
    inv_t = inverse_temperature(temperature, n, logits.device)
    sampled = (
        torch.zeros(n, dtype=torch.bool, device=logits.device)
        if temperature is None
        else temperature.to(torch.float32) > 0
    )
    cut = torch.empty(n, dtype=torch.float32, device=logits.device)
    step = max(1, TORCH_CHUNK_ELEMS // max(v, 1))
    for lo in range(0, n, step):  # chunks of rows: bounded memory, no data-dependent branching
        hi = min(n, lo + step)
        cut[lo:hi] = _cutoff_rows(
            logits[lo:hi].to(torch.float32),
            inv_t[lo:hi],
            sampled[lo:hi],
            None if top_k is None else top_k[lo:hi],
            None if top_p is None else top_p[lo:hi],
            None if min_p is None else min_p[lo:hi],
        )
    return cut


def _check_inputs(logits: Tensor, is_masked: Tensor, temperature: Optional[Tensor], seeds: Optional[Tensor]) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, V], got {tuple(logits.shape)}")
    if is_masked.shape != logits.shape[:1] or is_masked.dtype != torch.bool:
        raise ValueError("is_masked must be a [N] bool tensor")
    if temperature is not None and seeds is None:
        raise ValueError("sampling (temperature given) needs per-row seeds")


def _outputs(out: Optional[tuple[Tensor, Tensor]], n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    if out is None:
        return (
            torch.empty(n, dtype=torch.int64, device=device),
            torch.empty(n, dtype=torch.float32, device=device),
        )
    tok, prob = out
    if tok.shape != (n,) or tok.dtype != torch.int64 or prob.shape != (n,) or prob.dtype != torch.float32:
        raise ValueError("out must be ([N] int64, [N] fp32)")
    if tok.device != device or prob.device != device:
        raise ValueError("out buffers must live on the logits' device")
    if not (tok.is_contiguous() and prob.is_contiguous()):
        raise ValueError("out buffers must be contiguous (the kernel writes them flat)")
    return tok, prob


# ----------------------------------------------------------------------------------------------
# Torch twin (also the CPU production path)
# ----------------------------------------------------------------------------------------------


def _confidence_rows_torch(
    x: Tensor,
    inv_t: Optional[Tensor],
    cut: Optional[Tensor],
    sampled: Optional[Tensor],
    row_key: Optional[Tensor],
) -> tuple[Tensor, Tensor]:
    """x [R, V] fp32 -> token [R] int64, prob [R] fp32 (every row computed). inv_t None: all greedy."""
    z = x if inv_t is None else x * inv_t[:, None]  # [R, V]
    if cut is not None:
        z = torch.where(x >= cut[:, None], z, NEG_INF)
    key = z
    if sampled is not None and row_key is not None:
        cols = torch.arange(x.shape[1], dtype=torch.int64, device=x.device)
        key = torch.where(sampled[:, None], z + gumbel_torch(row_key, cols), z)
    token = torch.argmax(key, dim=1)  # first index on ties
    lse = torch.logsumexp(z, dim=1)  # [R]
    prob = torch.exp(z.gather(1, token[:, None]).squeeze(1) - lse)
    return token, prob


def confidence_torch(
    logits: Tensor,
    is_masked: Tensor,
    temperature: Optional[Tensor] = None,
    top_k: Optional[Tensor] = None,
    top_p: Optional[Tensor] = None,
    seeds: Optional[Tensor] = None,
    offsets: Optional[Tensor] = None,
    min_p: Optional[Tensor] = None,
    *,
    out: Optional[tuple[Tensor, Tensor]] = None,
) -> tuple[Tensor, Tensor]:
    """Pure-torch twin of the contract in the module docstring; works on any device (meta included)."""
    _check_inputs(logits, is_masked, temperature, seeds)
    n, v = logits.shape
    device = logits.device
    token, prob = _outputs(out, n, device)
    cut = filter_cutoff(logits, temperature, top_k, top_p, min_p)
    inv_t = sampled = row_key = None
    if temperature is not None:
        assert seeds is not None  # _check_inputs
        inv_t = inverse_temperature(temperature, n, device)
        sampled = temperature.to(torch.float32) > 0
        row_key = row_key_torch(seeds.to(torch.int64), default_offsets(offsets, n, device))
    step = max(1, TORCH_CHUNK_ELEMS // max(v, 1))
    for lo in range(0, n, step):  # shape-driven chunks keep temporaries small; no data-dependent control
        hi = min(n, lo + step)
        t, p = _confidence_rows_torch(
            logits[lo:hi].to(torch.float32),
            None if inv_t is None else inv_t[lo:hi],
            None if cut is None else cut[lo:hi],
            None if sampled is None else sampled[lo:hi],
            None if row_key is None else row_key[lo:hi],
        )
        m = is_masked[lo:hi]
        token[lo:hi] = torch.where(m, t, -1)
        prob[lo:hi] = torch.where(m, p, NEG_INF)
    return token, prob


# ----------------------------------------------------------------------------------------------
# References (tests only): the definitions, written plainly
# ----------------------------------------------------------------------------------------------


def confidence_reference(logits: Tensor, is_masked: Tensor) -> tuple[Tensor, Tensor]:
    """Greedy rows by definition: token = argmax(logits) (lowest index on ties), prob = its softmax
    probability computed in float64; rows not masked -> (-1, -inf). Sampled rows have no reference of
    this kind: their noise is checked against `row_key_reference` / `gumbel_reference`, their
    distribution statistically (tests/kernels/test_confidence.py)."""
    probs = torch.softmax(logits.double(), dim=-1)
    token = logits.argmax(dim=-1)
    prob = probs.gather(1, token[:, None]).squeeze(1).float()
    return torch.where(is_masked, token, -1), torch.where(is_masked, prob, NEG_INF)


def mix32_reference(x: int) -> int:
    """The 32-bit mix on a python integer in [0, 2**32)."""
    m = 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x21F0AAAD) & m
    x ^= x >> 15
    x = (x * 0x735A2D97) & m
    return x ^ (x >> 15)


def row_key_reference(seed: int, offset: int) -> int:
    """The row key of an int64 seed and offset, on python integers (two's complement, as int64
    `& 0xFFFFFFFF` / `>> 32` see negative values)."""
    s = seed & (2**64 - 1)
    o = offset & (2**64 - 1)
    h = mix32_reference((s & 0xFFFFFFFF) ^ 0x2545F491)
    h = mix32_reference(h ^ (s >> 32 & 0xFFFFFFFF))
    h = mix32_reference(h ^ (o & 0xFFFFFFFF))
    return mix32_reference(h ^ (o >> 32 & 0xFFFFFFFF))


def gumbel_reference(row_key: int, col: int) -> float:
    """Gumbel(0, 1) noise of one (row key, vocab index), in python floats: -log(-log(u)),
    u = (2j + 1) * 2**-24 with j the top 23 bits of the twice-mixed key."""
    e = mix32_reference(mix32_reference(row_key ^ col))
    u = ((e >> 9) * 2 + 1) * 2.0**-24
    return -math.log(-math.log(u))


# ----------------------------------------------------------------------------------------------
# Triton kernel
# ----------------------------------------------------------------------------------------------

if HAS_TRITON:

    @triton.jit
    def _mix32(x):
        # Same mix as mix32_torch, on int64 values in [0, 2**32).
        x = x ^ (x >> 16)
        x = (x * 0x21F0AAAD) & 0xFFFFFFFF
        x = x ^ (x >> 15)
        x = (x * 0x735A2D97) & 0xFFFFFFFF
        return x ^ (x >> 15)

    @triton.jit
    def _row_key(seed, offset):
        h = _mix32((seed & 0xFFFFFFFF) ^ 0x2545F491)
        h = _mix32(h ^ ((seed >> 32) & 0xFFFFFFFF))
        h = _mix32(h ^ (offset & 0xFFFFFFFF))
        return _mix32(h ^ ((offset >> 32) & 0xFFFFFFFF))

    @triton.jit
    def _gumbel(row_key, cols):
        # cols [BLOCK_V] int64 -> Gumbel(0, 1) noise [BLOCK_V] fp32
        e = _mix32(_mix32(row_key ^ cols))
        u = ((e >> 9) * 2 + 1).to(tl.float32) * 5.9604644775390625e-08
        return -tl.log(-tl.log(u))

    @triton.jit
    def _confidence_kernel(
        logits_ptr,  # [N, V] fp32 | bf16 | fp16, unit stride along V
        stride_row,
        masked_ptr,  # [N] uint8 (bool viewed as bytes)
        inv_t_ptr,  # [N] fp32
        temp_ptr,  # [N] fp32 (read only when MAY_SAMPLE)
        seed_ptr,  # [N] int64 (read only when MAY_SAMPLE)
        offset_ptr,  # [N] int64 (read only when MAY_SAMPLE)
        cut_ptr,  # [N] fp32 (read only when HAS_CUT)
        token_ptr,  # [N] int64 out
        prob_ptr,  # [N] fp32 out
        V,
        BLOCK_V: tl.constexpr,
        MAY_SAMPLE: tl.constexpr,
        HAS_CUT: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        if tl.load(masked_ptr + row) != 0:
            row_ptr = logits_ptr + row * stride_row
            inv_t = tl.load(inv_t_ptr + row)
            cut = float("-inf")
            if HAS_CUT:
                cut = tl.load(cut_ptr + row)
            sampled = False
            key_row = tl.full([], 0, tl.int64)
            if MAY_SAMPLE:
                sampled = tl.load(temp_ptr + row) > 0.0
                key_row = _row_key(tl.load(seed_ptr + row), tl.load(offset_ptr + row))
            run_max = tl.full([], float("-inf"), tl.float32)  # running max of z
            run_sum = tl.full([], 0.0, tl.float32)  # running sum of exp(z - run_max)
            best_key = tl.full([], float("-inf"), tl.float32)
            best_idx = tl.full([], 0, tl.int64)
            for start in range(0, V, BLOCK_V):
                cols = start + tl.arange(0, BLOCK_V)  # [BLOCK_V]
                x = tl.load(row_ptr + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
                z = x * inv_t
                if HAS_CUT:
                    z = tl.where(x >= cut, z, float("-inf"))
                key = z
                if MAY_SAMPLE:
                    if sampled:
                        key = z + _gumbel(key_row, cols.to(tl.int64))
                # online softmax; a tile that is all -inf (padding, filtered) must not produce NaN
                new_max = tl.maximum(run_max, tl.max(z, 0))
                ref = tl.where(new_max == float("-inf"), 0.0, new_max)
                run_sum = run_sum * tl.exp(run_max - ref) + tl.sum(tl.exp(z - ref), 0)
                run_max = new_max
                # running argmax; strict > keeps the earlier tile on ties (lowest index overall)
                tile_key, tile_idx = tl.max(key, 0, return_indices=True, return_indices_tie_break_left=True)
                better = tile_key > best_key
                best_key = tl.where(better, tile_key, best_key)
                best_idx = tl.where(better, (start + tile_idx).to(tl.int64), best_idx)
            z_best = tl.load(row_ptr + best_idx).to(tl.float32) * inv_t
            tl.store(token_ptr + row, best_idx)
            tl.store(prob_ptr + row, tl.exp(z_best - run_max) / run_sum)
        else:
            tl.store(token_ptr + row, tl.full([], -1, tl.int64))
            tl.store(prob_ptr + row, tl.full([], float("-inf"), tl.float32))


def confidence_triton(
    logits: Tensor,
    is_masked: Tensor,
    temperature: Optional[Tensor] = None,
    top_k: Optional[Tensor] = None,
    top_p: Optional[Tensor] = None,
    seeds: Optional[Tensor] = None,
    offsets: Optional[Tensor] = None,
    min_p: Optional[Tensor] = None,
    *,
    out: Optional[tuple[Tensor, Tensor]] = None,
    block_v: int = DEFAULT_BLOCK_V,
    num_warps: int = 8,
) -> tuple[Tensor, Tensor]:
    """Triton path: one program per row, one pass over V. Same contract as `confidence_torch`."""
    if not HAS_TRITON:
        raise RuntimeError("triton is not installed")
    _check_inputs(logits, is_masked, temperature, seeds)
    n, v = logits.shape
    device = logits.device
    token, prob = _outputs(out, n, device)
    if n == 0:
        return token, prob
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    inv_t = inverse_temperature(temperature, n, device)
    cut = filter_cutoff(logits, temperature, top_k, top_p, min_p)
    may_sample = temperature is not None
    temp = temperature.to(torch.float32).contiguous() if temperature is not None else inv_t
    seeds64 = seeds.to(torch.int64).contiguous() if seeds is not None and may_sample else token  # unused pointer when greedy
    offs = default_offsets(offsets, n, device).contiguous() if may_sample else token
    _confidence_kernel[(n,)](
        logits,
        logits.stride(0),
        is_masked.contiguous().view(torch.uint8),
        inv_t,
        temp,
        seeds64,
        offs,
        inv_t if cut is None else cut,
        token,
        prob,
        v,
        BLOCK_V=block_v,
        MAY_SAMPLE=may_sample,
        HAS_CUT=cut is not None,
        num_warps=num_warps,
        # No FMA contraction of x * inv_t + g: keeps z and the perturbed score rounded as in torch.
        enable_fp_fusion=False,
    )
    return token, prob


def confidence(
    logits: Tensor,
    is_masked: Tensor,
    temperature: Optional[Tensor] = None,
    top_k: Optional[Tensor] = None,
    top_p: Optional[Tensor] = None,
    seeds: Optional[Tensor] = None,
    offsets: Optional[Tensor] = None,
    min_p: Optional[Tensor] = None,
    *,
    out: Optional[tuple[Tensor, Tensor]] = None,
) -> tuple[Tensor, Tensor]:
    """Dispatch: the Triton kernel for CUDA tensors, the torch twin otherwise (CPU, meta)."""
    fn = confidence_triton if (HAS_TRITON and logits.is_cuda) else confidence_torch
    return fn(logits, is_masked, temperature, top_k, top_p, seeds, offsets, min_p, out=out)
