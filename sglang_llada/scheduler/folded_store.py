"""Folded store, scheduler side: which requests hold a stale block, and keeping it out of the tree.

With `fold_store` on (algorithms/unmask.py), an algorithm accepts a block in the step that commits
its last mask, before any forward has seen the block in its final state: the block's KV slots still
hold the K/V of a forward in which some of its positions were masks. The request's next denoising
forward re-encodes the block beside its next one (models/folded_blocks.py). Until then:

* the request carries a `StaleBlock` record (output/held_blocks.py; set in `mark_stale`, from the `stale` flags the run left
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

The editing decoders (`llada2_edit`, `llada2_levenshtein`, algorithms/folded_check.py) also accept a
block before its final check, which runs on the request's next forwards. Here, around that:

* `plan_fold` puts on the plan each folded row's `HeldBlock` (from the request's `PendingBlock`) and
  `may_hold` / `finishes`: whether a request would finish with given blocks -- SGLang's own
  `update_finish_state` run on a copy of its output, plus `_finish_dllm_request_if_needed`'s context
  length -- and whether it may hold a block back at all (not with frequency / presence / repetition
  penalties, which count the output so far);
* `settle_held` (output/held_blocks.py; before the result's logprobs and trajectory are added,
  output/batch_result.py):
  a held block that its check settled gets its final tokens, logprobs and trajectory written over the
  held ones in the request's output, fill ids, logprob lists and `customized_info`; if they finish the
  request, it finishes here with that block (SGLang's finish check and release), and the run's
  block of that row is dropped from the result;
* `mark_stale` (output/held_blocks.py): a block accepted before its check gets its `PendingBlock`
  (and, its KV being stale, a `StaleBlock`); a held block still unchecked after the run keeps both;
* output/streaming.py sends none of a request's held block (`held_from`) until it is settled.
"""

from __future__ import annotations

import logging
from array import array
from typing import TYPE_CHECKING, Any, Callable, Optional

from sglang_llada.algorithms import FoldPlan, HeldBlock
from sglang_llada.output.held_blocks import PendingBlock, StaleBlock
from sglang_llada.state import attach, discard, peek

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from sglang.srt.managers.schedule_batch import Req, ScheduleBatch


def _penalized(req: Req) -> bool:
    sp = req.sampling_params
    return bool(
        (getattr(sp, "frequency_penalty", 0.0) or 0.0)
        or (getattr(sp, "presence_penalty", 0.0) or 0.0)
        or (getattr(sp, "repetition_penalty", 1.0) or 1.0) != 1.0
    )


def would_finish(req: Req, blocks: list[tuple[int, list[int]]], block_size: int, context_len: Optional[int]) -> bool:
    """Whether `req` finishes once `blocks` ([(absolute start, tokens)], in order, the last one the
    newly accepted block) are its output there: SGLang's `update_finish_state` on a copy of the output
    (the request is left as it was), and `_finish_dllm_request_if_needed`'s context length."""
    if req.finished():
        return True
    n_in = len(req.origin_input_ids)
    out = array("q", req.output_ids)
    new = 0
    for start, tokens in blocks:
        cut = max(0, n_in - start)
        part = [int(t) for t in tokens[cut:]]
        at = start + cut - n_in
        if at > len(out):
            return True  # not contiguous with the output: never hold such a block
        out[at : at + len(part)] = array("q", part)
        new = len(part)
    if new == 0:
        return True
    if context_len is not None and n_in + len(out) + block_size > context_len:
        return True
    saved = (req.output_ids, req.finished_reason, req.finished_len, req.to_finish)
    try:
        req.output_ids = out
        req.update_finish_state(new_accepted_len=new)
        return req.finished()
    finally:
        req.output_ids, req.finished_reason, req.finished_len, req.to_finish = saved


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
        held: list[Optional[HeldBlock]] = []
        for i, req in enumerate(batch.reqs):
            stale = peek(req, StaleBlock)
            pending = peek(req, PendingBlock)
            if pending is not None and (stale is None or not _foldable(req, stale)):
                # its check cannot ride in this forward (the request was retracted or re-admitted):
                # the held block stays as accepted
                logger.warning("fold_store: request %s lost its held block's check (KV re-encoded); kept as accepted", req.rid)
                discard(req, PendingBlock)
                pending = None
            if stale is None:
                continue
            if _foldable(req, stale):
                rows.append(i)
                tokens.append(list(req.full_untruncated_fill_ids[stale.start : stale.end]))
                held.append(None if pending is None else pending.held)
            elif req.prefix_len >= stale.end and req.kv is not None and req.kv.cache_protected_len >= stale.end:
                discard(req, StaleBlock)  # the tree's fresh copy backs it now
        reqs = list(batch.reqs)
        s = batch.dllm_config.block_size
        config = getattr(self, "model_config", None)
        context_len = getattr(config, "context_len", None)

        def finishes(row: int, blocks: list[tuple[int, list[int]]]) -> bool:
            return would_finish(reqs[row], blocks, s, context_len)

        def may_hold(row: int, blocks: list[tuple[int, list[int]]]) -> bool:
            return not _penalized(reqs[row]) and not finishes(row, blocks)

        attach(forward_batch, FoldPlan(rows, tokens, held if any(h is not None for h in held) else None, may_hold, finishes))
    try:
        return original(self, forward_batch, batch, *a, **kw)
    finally:
        discard(forward_batch, FoldPlan)


def checkpoint_around(original: Callable[..., Any], self: Any, req: Req, *a: Any, up_to: int, **kw: Any) -> Any:
    """AROUND the radix tree's `checkpoint` (RadixCache, UnifiedRadixCache): never insert a stale block."""
    stale = peek(req, StaleBlock)
    if stale is not None:
        if up_to > stale.start:
            up_to = max(stale.start, req.kv.cache_protected_len)
        if req.finished():
            discard(req, StaleBlock)  # released next: its slots are freed, never re-encoded
            discard(req, PendingBlock)
    return original(self, req, *a, up_to=up_to, **kw)
