"""Which masked positions a diffusion step commits: a Triton kernel, its torch twin, a reference.

Trio: kernel `select_commit_triton` (`_select_commit_kernel`), torch twin `select_commit_torch`
(CPU path), reference `select_commit_reference`; tests tests/kernels/test_select_commit.py; bench
bench/step_bench.py (the whole unmasking step: `confidence` + `select_commit`).

Why this exists: after `confidence` gives every position a token and a probability, each block
commits its masked positions whose probability reaches the block's threshold, or, when none does,
its k most confident masked positions. SGLang 0.5.23's in-tree `LowConfidence.step` does this with
a dozen small torch ops and ends with `done.tolist()`, a host synchronisation on every step. Here
one Triton program per block does the whole decision and the in-place write, and the torch twin does
the same with sort/scatter on device tensors; neither path synchronises with the host (the caller
decides when to read `done`).

Contract shared by `select_commit_torch` and `select_commit_triton` (`select_commit` dispatches:
Triton for CUDA tensors, torch otherwise); `select_commit_reference` is the same rules as python
loops over blocks, out of place (tests only):

    input_ids  [B * S] int64   modified in place: committed positions receive their token
    token      [B * S] int64   the step's chosen token per position
    prob       [B * S] fp32    its confidence (ignored where not masked; must not be NaN where masked)
    is_masked  [B * S] bool    positions still holding the mask token
    threshold  [B] fp32        per-block confidence threshold
    k          [B] int32       per-block fallback count
    block_size S (default 32)
    -> committed [B * S] bool, commit_count [B] int32, done [B] bool

* commit = masked & (prob >= threshold) when at least one masked position passes; otherwise the
  k_eff most confident masked positions, k_eff = clamp(k, 1, number masked). Ranking is by prob,
  descending; on equal prob the lower position index wins (both twins).
* A block with no masked position commits nothing and is done.
* done = no masked position is left after the commit.

Difference from the in-tree step, on purpose: threshold uses >= (LowConfidence uses >, so its
threshold 1.0 never passes), k is per block (LowConfidence always falls back to 1), and done is
computed after the commit. LowConfidence reports the state before the commit, and SGLang's dLLM
scheduler relies on that: the block's KV in the cache is the last forward's, which still saw masks
at the positions just committed, so one more forward is needed before the block can be cached. The
algorithms (sglang_llada/algorithms/) therefore report "no mask left before this step", and this
`done` serves callers that only need to know whether unmasking is finished.
"""

from __future__ import annotations

from typing import Optional

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover
    HAS_TRITON = False

Tensor = torch.Tensor
Outputs = tuple[Tensor, Tensor, Tensor]


def _num_blocks(input_ids: Tensor, threshold: Tensor, k: Tensor, block_size: int) -> int:
    b = threshold.shape[0]
    if input_ids.dim() != 1 or input_ids.shape[0] != b * block_size:
        raise ValueError(f"input_ids must be [B * {block_size}] for B = {b}, got {tuple(input_ids.shape)}")
    if k.shape != (b,):
        raise ValueError("k must be [B]")
    return b


def _outputs(out: Optional[Outputs], b: int, block_size: int, device: torch.device) -> Outputs:
    if out is None:
        return (
            torch.empty(b * block_size, dtype=torch.bool, device=device),
            torch.empty(b, dtype=torch.int32, device=device),
            torch.empty(b, dtype=torch.bool, device=device),
        )
    committed, count, done = out
    ok = (
        committed.shape == (b * block_size,) and committed.dtype == torch.bool
        and count.shape == (b,) and count.dtype == torch.int32
        and done.shape == (b,) and done.dtype == torch.bool
        and all(t.device == device and t.is_contiguous() for t in (committed, count, done))
    )
    if not ok:
        raise ValueError("out must be contiguous ([B*S] bool, [B] int32, [B] bool) on the input device")
    return committed, count, done


# ----------------------------------------------------------------------------------------------
# Torch twin (also the CPU production path)
# ----------------------------------------------------------------------------------------------


def _fallback_rank(p: Tensor, m: Tensor) -> Tensor:
    """p [B, S] fp32, m [B, S] bool -> rank [B, S] int64 of each position among the block's masked ones.

    Masked positions come first, by prob descending, lower index first on ties (two stable sorts).
    """
    b, s = p.shape
    by_prob = torch.sort(torch.where(m, p, float("-inf")), dim=1, descending=True, stable=True).indices
    by_mask = torch.sort(m.gather(1, by_prob).to(torch.int8), dim=1, descending=True, stable=True).indices
    order = by_prob.gather(1, by_mask)  # [B, S] position holding rank r
    ranks = torch.arange(s, device=p.device).expand(b, s)
    return torch.empty_like(order).scatter_(1, order, ranks)


def select_commit_torch(
    input_ids: Tensor,
    token: Tensor,
    prob: Tensor,
    is_masked: Tensor,
    threshold: Tensor,
    k: Tensor,
    block_size: int = 32,
    *,
    out: Optional[Outputs] = None,
) -> Outputs:
    """Pure-torch twin of the contract in the module docstring; works on any device (meta included)."""
    b = _num_blocks(input_ids, threshold, k, block_size)
    committed, count, done = _outputs(out, b, block_size, input_ids.device)
    ids = input_ids.view(b, block_size)  # [B, S], shares storage with input_ids
    tok = token.view(b, block_size)
    p = prob.view(b, block_size).to(torch.float32)
    m = is_masked.view(b, block_size)

    passes = m & (p >= threshold.to(torch.float32)[:, None])  # [B, S]
    n_masked = m.sum(dim=1)  # [B]
    k_eff = torch.minimum(k.to(torch.int64).clamp(min=1), n_masked)  # 0 when nothing is masked
    fallback = m & (_fallback_rank(p, m) < k_eff[:, None])
    commit = torch.where(passes.any(dim=1, keepdim=True), passes, fallback)  # [B, S]

    ids.copy_(torch.where(commit, tok, ids))
    n_commit = commit.sum(dim=1)
    committed.copy_(commit.view(-1))
    count.copy_(n_commit)
    done.copy_(n_commit == n_masked)
    return committed, count, done


# ----------------------------------------------------------------------------------------------
# Reference (tests only): python loops, obviously the definition
# ----------------------------------------------------------------------------------------------


def select_commit_reference(
    input_ids: Tensor,
    token: Tensor,
    prob: Tensor,
    is_masked: Tensor,
    threshold: Tensor,
    k: Tensor,
    block_size: int = 32,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Plain per-block definition with python loops, out of place (slow; reads everything on the host).

    -> new input_ids [B * S] int64, committed [B * S] bool, commit_count [B] int32, done [B] bool,
    all on the CPU; the arguments are not modified.
    """
    s = block_size
    ids = input_ids.cpu().clone().view(-1, s)
    b = ids.shape[0]
    committed = torch.zeros(b, s, dtype=torch.bool)
    tok, p, m = token.cpu().view(b, s), prob.cpu().view(b, s), is_masked.cpu().view(b, s)
    for i in range(b):
        masked = [j for j in range(s) if m[i, j]]
        passing = [j for j in masked if p[i, j] >= threshold[i]]
        if passing:
            chosen = passing
        else:
            k_eff = min(max(int(k[i]), 1), len(masked))
            chosen = sorted(masked, key=lambda j: (-float(p[i, j]), j))[:k_eff]
        for j in chosen:
            committed[i, j] = True
            ids[i, j] = tok[i, j]
    count = committed.sum(1).int()
    done = count == m.sum(1)
    return ids.view(-1), committed.view(-1), count, done


# ----------------------------------------------------------------------------------------------
# Triton kernel
# ----------------------------------------------------------------------------------------------

if HAS_TRITON:

    @triton.jit
    def _select_commit_kernel(
        ids_ptr,  # [B * S] int64, in place
        token_ptr,  # [B * S] int64
        prob_ptr,  # [B * S] fp32
        masked_ptr,  # [B * S] uint8 (bool viewed as bytes)
        threshold_ptr,  # [B] fp32
        k_ptr,  # [B] int32
        committed_ptr,  # [B * S] uint8 out
        count_ptr,  # [B] int32 out
        done_ptr,  # [B] uint8 out
        S,
        BLOCK: tl.constexpr,  # next power of two >= S
    ):
        blk = tl.program_id(0).to(tl.int64)
        pos = tl.arange(0, BLOCK)  # [BLOCK]
        valid = pos < S
        idx = blk * S + pos
        m = (tl.load(masked_ptr + idx, mask=valid, other=0) != 0) & valid
        p = tl.load(prob_ptr + idx, mask=valid, other=float("-inf")).to(tl.float32)
        thr = tl.load(threshold_ptr + blk)
        k = tl.load(k_ptr + blk)

        passes = m & (p >= thr)
        n_pass = tl.sum(passes.to(tl.int32), 0)
        n_masked = tl.sum(m.to(tl.int32), 0)
        k_eff = tl.minimum(tl.maximum(k, 1), n_masked)

        # rank[i] = masked j that beat i: higher prob, or equal prob and lower index  [BLOCK, BLOCK]
        p_i = p[:, None]
        p_j = p[None, :]
        beats = m[None, :] & ((p_j > p_i) | ((p_j == p_i) & (pos[None, :] < pos[:, None])))
        rank = tl.sum(beats.to(tl.int32), 1)  # [BLOCK]
        fallback = m & (rank < k_eff)
        commit = tl.where(n_pass > 0, passes, fallback)

        tok = tl.load(token_ptr + idx, mask=commit, other=0)
        tl.store(ids_ptr + idx, tok, mask=commit)
        tl.store(committed_ptr + idx, commit.to(tl.uint8), mask=valid)
        n_commit = tl.sum(commit.to(tl.int32), 0)
        tl.store(count_ptr + blk, n_commit)
        tl.store(done_ptr + blk, (n_commit == n_masked).to(tl.uint8))


def select_commit_triton(
    input_ids: Tensor,
    token: Tensor,
    prob: Tensor,
    is_masked: Tensor,
    threshold: Tensor,
    k: Tensor,
    block_size: int = 32,
    *,
    out: Optional[Outputs] = None,
) -> Outputs:
    """Triton path: one program per block. Same contract as `select_commit_torch`."""
    if not HAS_TRITON:
        raise RuntimeError("triton is not installed")
    b = _num_blocks(input_ids, threshold, k, block_size)
    committed, count, done = _outputs(out, b, block_size, input_ids.device)
    if b == 0:
        return committed, count, done
    if not input_ids.is_contiguous():
        raise ValueError("input_ids must be contiguous (it is written in place)")
    _select_commit_kernel[(b,)](
        input_ids,
        token.contiguous(),
        prob.to(torch.float32).contiguous(),
        is_masked.contiguous().view(torch.uint8),
        threshold.to(torch.float32).contiguous(),
        k.to(torch.int32).contiguous(),
        committed.view(torch.uint8),
        count,
        done.view(torch.uint8),
        block_size,
        BLOCK=triton.next_power_of_2(block_size),
        num_warps=1 if block_size <= 64 else 4,
    )
    return committed, count, done


def select_commit(
    input_ids: Tensor,
    token: Tensor,
    prob: Tensor,
    is_masked: Tensor,
    threshold: Tensor,
    k: Tensor,
    block_size: int = 32,
    *,
    out: Optional[Outputs] = None,
) -> Outputs:
    """Dispatch: the Triton kernel for CUDA tensors, the torch twin otherwise (CPU, meta)."""
    fn = select_commit_triton if (HAS_TRITON and input_ids.is_cuda) else select_commit_torch
    return fn(input_ids, token, prob, is_masked, threshold, k, block_size, out=out)
