"""Folded store: a finished block's KV written by the forward that starts the request's next block.

Why this exists: the KV cache keeps the K/V of the last forward that saw a block, and a block's
last denoising forward saw it with the positions it then committed still masked. SGLang's
algorithms (and ours, without folding) therefore spend one more forward per block whose only use
is to re-encode the finished block and store its KV (about one forward in four on the shipped toy).
With folding the algorithm accepts the block as soon as its last mask is committed; the block's
slots still hold the stale K/V, and the request's next denoising forward re-encodes it: that
forward carries, beside every request's current block, one more block per folded request -- the
finished block's final tokens at their own positions, written to their own slots.

How, per attention layer: the K/V of all the forward's tokens are written to the pool first (the
current blocks at `out_cache_loc`, the folded blocks at their slots), then
`kernels/block_causal_attention.py` runs over B + F rows: the B current blocks see their cached
prefix (which ends with the folded block, now fresh) and their own block; the F folded blocks see
the prefix before them and themselves. That is LLaDA2's block-causal mask over the two blocks, as
the whole-prompt prefill applies it to prompt blocks. The folded tokens' hidden states are dropped
before the LM head: only the current blocks' logits come back.

The scheduler side (which requests carry a stale block, and keeping it out of the radix tree until
it is fresh) is sglang_llada/scheduler/folded_store.py; the layout is attached to the forward batch
for one forward (`sglang_llada.state`), by the algorithm (algorithms/base.py).

The editing decoders (`llada2_edit`, `llada2_levenshtein`) also read the folded blocks' logits: their
block ends after a step that changes nothing, and that step runs on the folded forward's logits of
the previous block (algorithms/folded_check.py). `folded_forward(..., folded_logits=True)` returns
them beside the batch's; a folded block sees exactly what a forward of its own would show it (its
prefix and itself), so they are that forward's logits.

Shapes: B batch rows, F folded rows (F <= B), S = block_size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch

Tensor = torch.Tensor


@dataclass
class FoldedBlocks:
    """The extra blocks of one folded forward (built once, read by every attention layer)."""

    token_ids: Tensor  # [F * S] int64: the folded blocks' final tokens, block after block
    positions: Tensor  # [F * S] int64: their absolute positions
    slots: Tensor  # [F * S] KV pool slots they are written to (their requests' own rows)
    req_pool_indices: Tensor  # [B + F]: the batch's rows, then each folded block's request row
    prefix_lens: list[int]  # [B + F]: the batch's cached prefixes, then each folded block's start
    extend_lens: list[int]  # [B + F]: S each


def folded_blocks(
    req_to_token: Tensor,
    req_pool_indices: Tensor,
    prefix_lens: Sequence[int],
    rows: Sequence[int],
    token_ids: Union[Sequence[Sequence[int]], Tensor],
    block_size: int,
) -> FoldedBlocks:
    """The layout for folding, into a denoising forward of B rows, the block just before the current
    one of each batch row in `rows`, whose tokens are `token_ids` [F][S] (host ints, or an [F * S]
    device tensor).

    req_to_token: SGLang's [R, max_context] slot table; req_pool_indices [B]; prefix_lens: every batch
    row's cached prefix length (host list), which ends with its folded block.
    """
    device = req_pool_indices.device
    s = block_size
    starts = [int(prefix_lens[r]) - s for r in rows]
    if isinstance(token_ids, Tensor):
        sizes_ok = token_ids.numel() == len(rows) * s
    else:
        sizes_ok = all(len(t) == s for t in token_ids) and len(token_ids) == len(rows)
    if any(p < 0 for p in starts) or not sizes_ok:
        raise ValueError(f"folded blocks need {len(rows)} blocks of {s} tokens after a prefix of one block at least")
    rows_dev = torch.tensor(list(rows), dtype=torch.long).to(device)
    fold_pool = req_pool_indices[rows_dev]  # [F]
    own = torch.arange(s, device=device)
    start_dev = torch.tensor(starts, dtype=torch.long).to(device)
    positions = (start_dev[:, None] + own[None, :]).reshape(-1)  # [F * S]
    slots = req_to_token[fold_pool[:, None], positions.view(-1, s)].reshape(-1)  # [F * S]
    if isinstance(token_ids, Tensor):
        ids = token_ids.reshape(-1).to(device=device, dtype=torch.long)
    else:
        ids = torch.tensor([int(t) for block in token_ids for t in block], dtype=torch.long).to(device)
    return FoldedBlocks(
        token_ids=ids,
        positions=positions,
        slots=slots.to(torch.long),
        req_pool_indices=torch.cat([req_pool_indices, fold_pool]),
        prefix_lens=[int(p) for p in prefix_lens] + starts,
        extend_lens=[s] * (len(prefix_lens) + len(rows)),
    )


def folded_forward(model: Any, forward_batch: Any, layout: FoldedBlocks, folded_logits: bool = False) -> tuple[Any, Optional[Tensor]]:
    """One folded forward of `model` (our LLaDA2MoeModelLM) inside the batch's forward context:
    (the batch's logits output, the folded blocks' [F * S, V] logits or None).

    Without `folded_logits` this is `model.forward_folded`. With it, the same forward (the model's
    layers over the batch's and the folded tokens, the layout attached for its attention layers)
    also sends the folded tokens' hidden states through the LM head, separately from the batch's
    (whose logits are computed exactly as `forward_folded` computes them)."""
    if not folded_logits:
        return model.forward_folded(forward_batch, layout), None
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    from sglang_llada.state import attach, discard

    if forward_batch.forward_mode != ForwardMode.DLLM_EXTEND:
        raise ValueError(f"a folded forward is a denoising forward (DLLM_EXTEND), not {forward_batch.forward_mode}")
    input_ids, positions = forward_batch.input_ids, forward_batch.positions
    n = input_ids.shape[0]
    folded_ids = layout.token_ids.to(input_ids.dtype)
    ids = torch.cat([input_ids, folded_ids])
    pos = torch.cat([positions, layout.positions.to(positions.dtype)])
    with torch.no_grad():
        attach(forward_batch, layout)
        try:
            hidden = model.model(ids, pos, forward_batch)
        finally:
            discard(forward_batch, FoldedBlocks)
        out = model.logits_processor(input_ids, hidden[:n], model.lm_head, forward_batch)
        extra = model.logits_processor(folded_ids, hidden[n:], model.lm_head, forward_batch)
    return out, extra.full_logits
