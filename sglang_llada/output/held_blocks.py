"""The requests' stale and held blocks, as a diffusion batch's result is taken in.

The records a request carries between forwards when its algorithm accepted a block early
(`fold_store`; scheduler/folded_store.py says why and plans the forwards that fold them), and the
two steps of output/batch_result.py that write them: `settle_held` (a held block whose folded check
passed: its final tokens, logprobs and trajectory written over the held ones) and `mark_stale` (the
run's early-accepted blocks become `StaleBlock` / `PendingBlock`, re-encoded ones are cleared).
output/streaming.py sends nothing of a held block (`held_from`) until it is settled.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from sglang_llada.algorithms import ForwardRecord, HeldBlock
from sglang_llada.output.forward_stats import ForwardCounts
from sglang_llada.output.trace import COMMITTED, REWRITTEN, wants_trace
from sglang_llada.state import attach, discard, peek

if TYPE_CHECKING:
    from sglang.srt.managers.schedule_batch import Req, ScheduleBatch


@dataclass
class StaleBlock:
    """On a `Req`: its accepted block [start, end) whose KV slots hold a masked state's K/V."""

    start: int
    end: int


@dataclass
class PendingBlock:
    """On a `Req`: its block [start, end) accepted by an editing decoder before its final check
    (algorithms/folded_check.py): output_ids[out_start:out_end] hold it as accepted, nothing of it is
    sent, and `held` carries what the check needs. `block_start`: the request's forward count before
    the block's first forward (its trajectory's origin, output/trace.py)."""

    start: int
    end: int
    out_start: int
    out_end: int
    block_start: int
    held: HeldBlock


def held_from(req: Req) -> Optional[int]:
    """Where a request's held block starts in its output_ids (nothing from there is sent), or None."""
    pending = peek(req, PendingBlock)
    return None if pending is None else pending.out_start


def mark_stale(batch: ScheduleBatch, result: Any) -> None:
    """Called by output/batch_result.py before SGLang processes a diffusion batch's result: blocks
    re-encoded by this run are fresh; blocks it accepted before a forward saw them final are stale,
    and an editing decoder's (accepted before its final check) are held back."""
    rec = peek(result.logits_output, ForwardRecord) if result is not None else None
    if rec is None:
        return
    for i in rec.folded_rows or ():
        discard(batch.reqs[i], StaleBlock)
    for i, still in (rec.still_held or {}).items():
        pending = peek(batch.reqs[i], PendingBlock)
        if pending is not None:
            pending.held = still  # checked again by the request's next forward
    if not rec.stale:
        return
    s = batch.dllm_config.block_size
    fdfo = result.accept_length_per_req_cpu is not None
    for i, stale in enumerate(rec.stale):
        if not stale or (fdfo and not result.accept_length_per_req_cpu[i]):
            continue
        req = batch.reqs[i]
        if req.finished():
            continue
        start, end = req.extend_end - s, req.extend_end
        attach(req, StaleBlock(start, end))
        held = (rec.held or {}).get(i)
        if held is not None:
            n_in = len(req.origin_input_ids)
            counts = peek(req, ForwardCounts)
            block_start = counts.block_start if counts is not None else 0
            # SGLang appends the block's tokens past the prompt next: output_ids[out_start:out_end]
            out_start = len(req.output_ids)
            attach(req, PendingBlock(start, end, out_start, out_start + end - max(start, n_in), block_start, held))


def settle_held(scheduler: Any, batch: ScheduleBatch, result: Any) -> None:
    """Called by output/batch_result.py before SGLang processes a diffusion batch's result, after the
    forward counts and before the logprobs: each held block this run settled is written over the held
    one (tokens, fill ids, logprobs, trajectory); one whose final tokens end its request finishes it
    here, and the row's block of this run is dropped from the result (see the module docstring)."""
    rec = peek(result.logits_output, ForwardRecord) if result is not None else None
    if rec is None or not rec.settled:
        return
    for i, done in rec.settled.items():
        req = batch.reqs[i]
        pending = peek(req, PendingBlock)
        if pending is None:
            continue
        discard(req, PendingBlock)
        discard(req, StaleBlock)  # the forward that settled it stored its final KV
        if req.finished():
            continue
        s = pending.end - pending.start
        cut = s - (pending.out_end - pending.out_start)  # the block's prompt positions
        tokens = done.tokens[cut:]
        req.output_ids[pending.out_start : pending.out_end] = array("q", tokens)
        fill = req.full_untruncated_fill_ids
        if len(fill) >= pending.end:
            fill[pending.start : pending.end] = array("q", done.tokens)
        if req.return_logprob:
            values, idx = req.logprob.output_token_logprobs_val, req.logprob.output_token_logprobs_idx
            if len(values) >= pending.out_end:
                values[pending.out_start : pending.out_end] = done.logprobs.to("cpu").tolist()[cut:]
                idx[pending.out_start : pending.out_end] = tokens
        info = req.customized_info
        if wants_trace(req) and info is not None and len(info.get(COMMITTED, ())) >= pending.out_end:
            first = done.first_at.to("cpu").tolist()[cut:]
            last = done.last_at.to("cpu").tolist()[cut:]
            origin = pending.block_start
            info[COMMITTED][pending.out_start : pending.out_end] = [origin + f if f > 0 else None for f in first]
            info[REWRITTEN][pending.out_start : pending.out_end] = [
                origin + lst if lst > 0 and lst != f else None for f, lst in zip(first, last)
            ]
        if not done.finishes:
            continue
        # the request ends with this block, as the unfolded decoder ends it: SGLang's finish check on
        # it, its release; this run's block of the row was never decoded (folded_check.py)
        assert len(req.output_ids) == pending.out_end, (len(req.output_ids), pending)
        req.update_finish_state(new_accepted_len=pending.out_end - pending.out_start)
        if req.finished():
            scheduler._finish_dllm_request_if_needed(req)
        if result.accept_length_per_req_cpu is not None:
            result.accept_length_per_req_cpu[i] = 0
            if result.dllm_algo_state is not None:
                result.dllm_algo_state[i] = None
        else:
            new = result.next_token_ids[i]
            result.next_token_ids[i] = new[:0]
