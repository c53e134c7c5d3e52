"""Folded store, scheduler side: which requests hold a stale block, and keeping it out of the tree.

With `fold_store` on (algorithms/unmask.py), an algorithm accepts a block in the step that commits
its last mask, before any forward has seen the block in its final state: the block's KV slots still
hold the K/V of a forward in which some of its positions were masks. The request's next denoising
forward re-encodes the block beside its next one (models/folded_blocks.py). Until then:

* the request carries a `StaleBlock` record (set in `mark_stale`, from the `stale` flags the run left
  on its `ForwardRecord`; cleared in `mark_stale` once a forward re-encoded it);
* SGLang's radix tree must not take the block: a checkpoint (`checkpoint_kv_cache` after each
  accepted block; `release_kv_cache` when the request finishes, is aborted or retracted) would
  publish the stale K/V to every request that matches the same tokens. `checkpoint_around` (AROUND
  the tree's `checkpoint`) stops the insert where the stale block starts. The block's slots then stay
  in the request's own row, beyond `cache_protected_len`, as SGLang keeps a partial page there: the
  next checkpoint inserts them once they are fresh, and `release_kv_cache` frees them (it frees
  everything past `cache_protected_len`).

A request's last block is never re-encoded: when it finishes, its stale last block is freed, not
published, so a follow-up turn re-encodes those tokens within its own prompt forward (whole-prompt
prefill: the same forward as the rest of its new prompt). Re-encoding it at the finish would cost one
forward per request to save at most one block of a later prefill; folding it would need a next block.

`plan_fold` (AROUND `TpModelWorker._forward_batch_generation_dllm`, where the forward batch meets the
scheduled requests) attaches to a denoising forward batch the rows whose stale block directly
precedes their current block (`FoldPlan`); the algorithm's run builds the layout from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from sglang_llada.algorithms import FoldPlan, ForwardRecord
from sglang_llada.state import attach, discard, peek

if TYPE_CHECKING:
    from sglang.srt.managers.schedule_batch import Req, ScheduleBatch


@dataclass
class StaleBlock:
    """On a `Req`: its accepted block [start, end) whose KV slots hold a masked state's K/V."""

    start: int
    end: int


def _foldable(req: Req, stale: StaleBlock) -> bool:
    """The stale block ends exactly where this forward's block starts, and its slots are the
    request's own (a retracted request re-encodes everything instead; a tree match means the
    slots hold another request's fresh K/V)."""
    return req.prefix_len == stale.end and req.kv is not None and req.kv.cache_protected_len <= stale.start


def plan_fold(original: Callable[..., Any], self: Any, forward_batch: Any, batch: Optional[ScheduleBatch] = None, *a: Any, **kw: Any) -> Any:
    """AROUND `TpModelWorker._forward_batch_generation_dllm`: the fold plan onto the forward batch."""
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    if batch is not None and forward_batch.forward_mode == ForwardMode.DLLM_EXTEND:
        rows: list[int] = []
        tokens: list[list[int]] = []
        for i, req in enumerate(batch.reqs):
            stale = peek(req, StaleBlock)
            if stale is None:
                continue
            if _foldable(req, stale):
                rows.append(i)
                tokens.append(list(req.full_untruncated_fill_ids[stale.start : stale.end]))
            elif req.prefix_len >= stale.end and req.kv is not None and req.kv.cache_protected_len >= stale.end:
                discard(req, StaleBlock)  # the tree's fresh copy backs it now
        if rows:
            attach(forward_batch, FoldPlan(rows, tokens))
    try:
        return original(self, forward_batch, batch, *a, **kw)
    finally:
        discard(forward_batch, FoldPlan)


def mark_stale(batch: ScheduleBatch, result: Any) -> None:
    """Called by output/batch_result.py before SGLang processes a diffusion batch's result: blocks
    re-encoded by this run are fresh; blocks it accepted before a forward saw them final are stale."""
    rec = peek(result.logits_output, ForwardRecord) if result is not None else None
    if rec is None:
        return
    for i in rec.folded_rows or ():
        discard(batch.reqs[i], StaleBlock)
    if not rec.stale:
        return
    s = batch.dllm_config.block_size
    fdfo = result.accept_length_per_req_cpu is not None
    for i, stale in enumerate(rec.stale):
        if not stale or (fdfo and not result.accept_length_per_req_cpu[i]):
            continue
        req = batch.reqs[i]
        attach(req, StaleBlock(req.extend_end - s, req.extend_end))


def checkpoint_around(original: Callable[..., Any], self: Any, req: Req, *a: Any, up_to: int, **kw: Any) -> Any:
    """AROUND the radix tree's `checkpoint` (RadixCache, UnifiedRadixCache): never insert a stale block."""
    stale = peek(req, StaleBlock)
    if stale is not None:
        if up_to > stale.start:
            up_to = max(stale.start, req.kv.cache_protected_len)
        if req.finished():
            discard(req, StaleBlock)  # released next: its slots are freed, never re-encoded
    return original(self, req, *a, up_to=up_to, **kw)
