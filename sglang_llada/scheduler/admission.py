"""KV admission for dLLM requests: a request is admitted only if the KV that every admitted
request will still write fits beside it, so a denoising block never finds the pool full.

SGLang 0.5.23's dLLM scheduler admits diffusion requests beyond what the KV pool holds, and the
scheduler then dies with "Prefill out of memory", losing every request. Seen with
`--max-total-tokens 1536` and 8 concurrent 300-600-token prompts, for our algorithms and for
SGLang's own `LowConfidence` alike (`bench/kv_pressure_repro.py`). Three causes, each fixed by a
hook (HookRegistry, no patch):

1. A refused request slips in anyway. `process_dllm_incoming_reqs` prepares a request
   (`init_next_round_input`, which moves its phase from INCOMING_* to STAGING_*) before asking the
   adder whether it fits. When the adder refuses, the request stays in the dLLM queue with a
   STAGING phase, and the next round takes it for an admitted one: `add_dllm_staging_req` gives it
   a block even with no memory left (`_get_dllm_remain_tokens` falls back to a block).
   AROUND `process_dllm_incoming_reqs`: a request that was not admitted gets its phase and block
   state back, so it is asked again next round.
2. Admitted requests reserve nothing ahead. Running diffusion requests live in the dLLM queues,
   not in the `running_batch` whose future tokens `PrefillAdder` reserves, and an admitted request
   is charged only the tokens it extends now. AROUND `process_dllm_incoming_reqs` the adder's
   reservation is set to what every admitted request may still write (`future_tokens`), and
   AROUND `_commit_prefill_admission` / `_add_dllm_req` a request admitted in this round adds its
   own, so the next candidate in the same round sees it. SGLang's own check then compares a new
   request's prompt + `max_new_tokens` against that budget; AROUND `add_one_req` the plugin
   makes the same check in whole blocks (the last block is allocated whole) and also for the
   `ignore_eos` path taken with the radix cache disabled, which checks only the prompt. A
   request that does not fit waits in the queue, as SGLang does for autoregressive models; it
   is never dropped.
3. Running requests starve. A round serves prompt blocks first and denoising blocks only when no
   prompt waits, so a waiting prompt that does not fit would leave every round empty (and the
   scheduler, whose idle check ignores the dLLM queue, would stop on a "memory leak").
   AROUND `_process_dllm_batches`: when the prompt round admits nothing, the round serves the
   denoising blocks instead; they finish and free the memory the prompt waits for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from sglang_llada.state import peek, record

if TYPE_CHECKING:
    from sglang.srt.dllm.mixin.scheduler import SchedulerDllmMixin
    from sglang.srt.managers.schedule_batch import Req, ScheduleBatch
    from sglang.srt.managers.schedule_policy import PrefillAdder
    from sglang.srt.model_executor.forward_batch_info import ForwardMode


@dataclass
class AdmissionState:
    """On a `PrefillAdder` for the length of one dLLM admission round."""

    holders: int = 0  # requests admitted in earlier rounds that still hold KV and will write more


def future_tokens(req: Req, block_size: int, clip: int) -> int:
    """KV tokens `req` may still allocate beyond the `prefix_len` it holds or has matched.

    Blocks sit at absolute positions, so a request of prompt P and at most M new tokens ends
    within ceil((P + M) / block) blocks; the last one is allocated whole.
    """
    max_new = min(int(req.sampling_params.max_new_tokens or 0), clip)
    end = -(-(len(req.origin_input_ids) + max_new) // block_size) * block_size
    return max(0, end - int(req.prefix_len or 0))


def _admitted(manager: Any) -> Iterable[Req]:  # a DllmManager
    """Requests that hold KV and will write more: those past their first admission."""
    from sglang.srt.dllm.mixin.req import DllmReqPhase

    staging = (DllmReqPhase.STAGING_PREFILL, DllmReqPhase.STAGING_DECODE)
    seen: set[int] = set()
    for req in (*manager.waiting_queue, *manager.staging_queue):
        if id(req) not in seen and req.dllm_phase in staging and not req.finished():
            seen.add(id(req))
            yield req


def _is_dllm(adder: PrefillAdder) -> bool:
    return getattr(adder, "dllm_config", None) is not None


def incoming_around(original: Callable[..., Any], self: SchedulerDllmMixin, adder: PrefillAdder, reqs: list[Req], *a: Any, **kw: Any) -> Any:
    """AROUND `SchedulerDllmMixin.process_dllm_incoming_reqs` (causes 1 and 2)."""
    from sglang.srt.managers.schedule_policy import CLIP_MAX_NEW_TOKENS

    # Cause 1: remember what `init_next_round_input` changes, to undo it for a refused request.
    before = {id(r): (r.dllm_phase, r.dllm_initialized, r.dllm_block_offset) for r in reqs}
    # Cause 2: the reservation is exactly what the admitted requests may still write (this
    # round's staging blocks included, which SGLang has charged on its own terms; the exact sum
    # replaces those charges while the new requests are asked, and they come back afterwards).
    block, page = self.dllm_config.block_size, adder.page_size
    admitted = list(_admitted(self.dllm_manager))
    reserve = sum(future_tokens(r, block, CLIP_MAX_NEW_TOKENS) + page for r in admitted)
    budget = adder.memory_budget
    sglang_offset = budget.total_offset
    budget.total_offset = reserve
    record(adder, AdmissionState).holders = len(admitted)
    try:
        return original(self, adder, reqs, *a, **kw)
    finally:
        budget.total_offset = sglang_offset + (budget.total_offset - reserve)
        admitted_now = {id(r) for r in adder.can_run_list}
        for r in reqs:
            if id(r) not in admitted_now:
                r.dllm_phase, r.dllm_initialized, r.dllm_block_offset = before[id(r)]


def fits_or_waits(original: Callable[..., Any], self: PrefillAdder, req: Req, *a: Any, **kw: Any) -> Any:
    """AROUND `PrefillAdder.add_one_req`. Refuse a new dLLM request whose prompt and `max_new_tokens` (in whole blocks) do not fit
    beside the admitted requests' reservation. With nothing admitted, SGLang's own check decides
    (it already bounds a request by the pool), so a lone request is never starved by rounding."""
    state = peek(self, AdmissionState)
    if not _is_dllm(self) or not ((state.holders if state else 0) or self.can_run_list):
        return original(self, req, *a, **kw)
    from sglang.srt.managers.schedule_policy import CLIP_MAX_NEW_TOKENS, AddReqResult

    need = future_tokens(req, self.dllm_config.block_size, CLIP_MAX_NEW_TOKENS) + self.page_size
    with self._lock_node(req.last_node):  # its cached prefix will be pinned, so not evictable
        if need > self.rem_total_tokens:
            return AddReqResult.NO_TOKEN
    return original(self, req, *a, **kw)


def future_charge_start(adder: PrefillAdder, req: Req) -> tuple[int, int] | None:
    """Before SGLang adds `req` to the round: (its future tokens, the adder's offset now), or None
    when the adder is not a dLLM one. `future_charge_end` completes the charge."""
    if not _is_dllm(adder):
        return None
    from sglang.srt.managers.schedule_policy import CLIP_MAX_NEW_TOKENS

    assert adder.dllm_config is not None
    return future_tokens(req, adder.dllm_config.block_size, CLIP_MAX_NEW_TOKENS), adder.memory_budget.total_offset


def future_charge_end(adder: PrefillAdder, start: tuple[int, int] | None) -> None:
    """A request admitted this round: SGLang charged only the tokens it extends now (paged, plus a
    page); charge what it will still write too, so that the next request admitted in the same
    round sees it."""
    if start is None:
        return
    future, before = start
    charged = adder.memory_budget.total_offset - before
    adder.memory_budget.total_offset += max(0, future + adder.page_size - charged)


def charge_admitted_future(original: Callable[..., Any], self: PrefillAdder, req: Req, *a: Any, **kw: Any) -> Any:
    """AROUND `PrefillAdder._commit_prefill_admission` (a new request admitted); `_add_dllm_req`
    does the same inside scheduler/rounds.py."""
    start = future_charge_start(self, req)
    result = original(self, req, *a, **kw)
    future_charge_end(self, start)
    return result


def clear_batch_full(running_batch: ScheduleBatch) -> None:
    """Before a round: for dLLM requests `running_batch` stays empty (they live in the dLLM queues),
    so nothing clears a "batch is full" left by an earlier round's refusal; each round asks afresh."""
    running_batch.batch_is_full = False


def decode_when_no_prompt_admitted(
    scheduler: SchedulerDllmMixin, adder: PrefillAdder, running_batch: ScheduleBatch, mode: ForwardMode
) -> ForwardMode:
    """After a round was built (cause 3): when the prompt round admitted nothing while prompts wait,
    the round serves the denoising blocks instead."""
    if adder.can_run_list or not scheduler.dllm_manager.get_prefill_requests():
        return mode
    decode = scheduler.dllm_manager.get_decode_requests()
    if not decode:
        return mode
    from sglang.srt.dllm.mixin.req import DllmReqPhase
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    running_batch.batch_is_full = False  # set by the refused prompt; the denoising blocks fit
    scheduler._process_batch_by_phase(
        adder, decode, DllmReqPhase.STAGING_DECODE, DllmReqPhase.INCOMING_DECODE, running_batch=running_batch
    )
    return ForwardMode.DLLM_EXTEND
