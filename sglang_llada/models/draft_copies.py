"""Verification forwards of `llada2_exact`: several copies of a request's block in one forward.

Why this exists: exact self-speculative decoding (algorithms/exact.py) checks a chain of drafted
commits by running the block in every intermediate state at once: copy j holds the first j + 1
drafted tokens. Each copy must see the request's cached prefix and its own 32 tokens (LLaDA2's
block-causal mask for one block), never the other copies, and must not touch the KV cache: the
block's KV is written by the ordinary forward of the final state.

How: the copies are laid out as C extra "requests" of one block each over a compact key/value
buffer = the real requests' prefix K/V (gathered once per layer from SGLang's KV pool) followed by
the copies' own K/V. `kernels/block_causal_attention.py` then runs on it exactly as it does for a
denoising forward (Triton on GPUs, the torch twin on CPU), with a compact `req_to_token` that maps
each copy to its request's prefix rows and its own rows. The forward itself writes nothing to the
pool.

The KV the block keeps: after each verification forward the kept copy's own K/V (computed by that
forward for exactly the kept state) are written to the block's slots of the pool. Once a block has
no mask left, its slots therefore hold its final state's KV and no forward is spent on storing it.

`DraftCopies` is attached to the forward batch for the duration of one forward (`sglang_llada.state`);
models/llada2.py's attention takes this path when it finds one.

Shapes: A requests verified, D copies each, C = A * D, S = block_size, P_i request i's prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

Tensor = torch.Tensor


@dataclass
class DraftCopies:
    """The layout of one verification forward (built once, read by every attention layer)."""

    prefix_slots: Tensor  # [sum P_i] int64: KV pool slots of the verified requests' prefixes, in order
    req_to_token: Tensor  # [C, max P_i + S] int32: compact-buffer rows of each copy (prefix, then its own S)
    rows: Tensor  # [C] int64: arange(C), the copies' rows in `req_to_token`
    prefix_lens: list[int]  # [C] each copy's request's prefix length
    extend_lens: list[int]  # [C] S each
    # each layer's (K, V) of the copies' own tokens [C * S, Hkv, D], in layer order (filled by the
    # forward): the kept copy's are written to the KV pool afterwards (`LLaDA2MoeModelLM.store_draft_kv`)
    own_kv: list[tuple[Tensor, Tensor]] = field(default_factory=list)


def draft_copies(
    req_to_token: Tensor, req_pool_indices: Tensor, rows: Sequence[int], prefix_lens: Sequence[int], copies: int, block_size: int
) -> DraftCopies:
    """The layout for `copies` copies of the block of each request in `rows` (batch rows).

    req_to_token: SGLang's [R, max_context] slot table; req_pool_indices [B]; prefix_lens: every
    batch row's cached prefix length (host list, SGLang's `extend_prefix_lens_cpu`).
    """
    device = req_to_token.device
    plens = [int(prefix_lens[r]) for r in rows]
    total = sum(plens)
    slots = [req_to_token[req_pool_indices[r : r + 1], :p][0] for r, p in zip(rows, plens)]
    prefix_slots = torch.cat(slots).long() if slots else torch.empty(0, dtype=torch.long, device=device)
    c = len(rows) * copies
    width = max(plens, default=0) + block_size
    table = torch.zeros(c, width, dtype=torch.int32, device=device)
    own = torch.arange(block_size, dtype=torch.int32, device=device)
    offset = 0
    for i, p in enumerate(plens):
        first = i * copies
        if p:
            table[first : first + copies, :p] = torch.arange(offset, offset + p, dtype=torch.int32, device=device)
        starts = total + (first + torch.arange(copies, dtype=torch.int32, device=device)) * block_size  # [D]
        table[first : first + copies, p : p + block_size] = starts[:, None] + own[None, :]
        offset += p
    return DraftCopies(
        prefix_slots=prefix_slots,
        req_to_token=table,
        rows=torch.arange(c, dtype=torch.long, device=device),
        prefix_lens=[p for p in plens for _ in range(copies)],
        extend_lens=[block_size] * c,
    )


def compact_kv(prefix: Tensor, own: Tensor) -> Tensor:
    """[sum P_i + C * S, Hkv, D]: the prefixes' cached K (or V) then the copies' own, in the cache's
    dtype (the denoising path reads its own K/V back from the pool, so it sees that rounding too)."""
    return torch.cat([prefix, own.to(prefix.dtype)])
