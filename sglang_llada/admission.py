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

from typing import Any, Callable, Iterable

_DLLM = "sglang.srt.dllm"
_ADDER = "sglang.srt.managers.schedule_policy.PrefillAdder"


def register_hooks() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    mixin = f"{_DLLM}.mixin.scheduler.SchedulerDllmMixin"
    HookRegistry.register(f"{mixin}.process_dllm_incoming_reqs", _incoming_around, HookType.AROUND)
    HookRegistry.register(f"{mixin}._process_dllm_batches", _decode_when_no_prefill_fits, HookType.AROUND)
    HookRegistry.register(f"{_ADDER}.add_one_req", _fits_or_waits, HookType.AROUND)
    HookRegistry.register(f"{_ADDER}._commit_prefill_admission", _charge_admitted_future, HookType.AROUND)
    HookRegistry.register(f"{_ADDER}._add_dllm_req", _charge_admitted_future, HookType.AROUND)


def future_tokens(req: Any, block_size: int, clip: int) -> int:
    """KV tokens `req` may still allocate beyond the `prefix_len` it holds or has matched.

    Blocks sit at absolute positions, so a request of prompt P and at most M new tokens ends
    within ceil((P + M) / block) blocks; the last one is allocated whole.
    """
    max_new = min(int(req.sampling_params.max_new_tokens or 0), clip)
    end = -(-(len(req.origin_input_ids) + max_new) // block_size) * block_size
    return max(0, end - int(req.prefix_len or 0))


def _admitted(manager: Any) -> Iterable[Any]:
    """Requests that hold KV and will write more: those past their first admission."""
    from sglang.srt.dllm.mixin.req import DllmReqPhase

    staging = (DllmReqPhase.STAGING_PREFILL, DllmReqPhase.STAGING_DECODE)
    seen: set[int] = set()
    for req in (*manager.waiting_queue, *manager.staging_queue):
        if id(req) not in seen and req.dllm_phase in staging and not req.finished():
            seen.add(id(req))
            yield req


def _is_dllm(adder: Any) -> bool:
    return getattr(adder, "dllm_config", None) is not None


def _incoming_around(original: Callable[..., Any], self: Any, adder: Any, reqs: list[Any], *a: Any, **kw: Any) -> Any:
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
    adder.llada_holders = len(admitted)
    try:
        return original(self, adder, reqs, *a, **kw)
    finally:
        budget.total_offset = sglang_offset + (budget.total_offset - reserve)
        admitted_now = {id(r) for r in adder.can_run_list}
        for r in reqs:
            if id(r) not in admitted_now:
                r.dllm_phase, r.dllm_initialized, r.dllm_block_offset = before[id(r)]


def _fits_or_waits(original: Callable[..., Any], self: Any, req: Any, *a: Any, **kw: Any) -> Any:
    """Refuse a new dLLM request whose prompt and `max_new_tokens` (in whole blocks) do not fit
    beside the admitted requests' reservation. With nothing admitted, SGLang's own check decides
    (it already bounds a request by the pool), so a lone request is never starved by rounding."""
    if not _is_dllm(self) or not (getattr(self, "llada_holders", 0) or self.can_run_list):
        return original(self, req, *a, **kw)
    from sglang.srt.managers.schedule_policy import CLIP_MAX_NEW_TOKENS, AddReqResult

    need = future_tokens(req, self.dllm_config.block_size, CLIP_MAX_NEW_TOKENS) + self.page_size
    with self._lock_node(req.last_node):  # its cached prefix will be pinned, so not evictable
        if need > self.rem_total_tokens:
            return AddReqResult.NO_TOKEN
    return original(self, req, *a, **kw)


def _charge_admitted_future(original: Callable[..., Any], self: Any, req: Any, *a: Any, **kw: Any) -> Any:
    """A request admitted this round: SGLang charges only the tokens it extends now; charge what
    it will still write too, so that the next request admitted in the same round sees it."""
    if not _is_dllm(self):
        return original(self, req, *a, **kw)
    from sglang.srt.managers.schedule_policy import CLIP_MAX_NEW_TOKENS

    future = future_tokens(req, self.dllm_config.block_size, CLIP_MAX_NEW_TOKENS)
    charged = self.memory_budget.total_offset
    result = original(self, req, *a, **kw)
    charged = self.memory_budget.total_offset - charged  # extend (paged) + a page, as SGLang counts
    self.memory_budget.total_offset += max(0, future + self.page_size - charged)
    return result


def _decode_when_no_prefill_fits(original: Callable[..., Any], self: Any, adder: Any, running_batch: Any, *a: Any, **kw: Any) -> Any:
    # For dLLM requests `running_batch` stays empty (they live in the dLLM queues), so nothing
    # clears a "batch is full" left by an earlier round's refusal; each round asks afresh.
    running_batch.batch_is_full = False
    mode = original(self, adder, running_batch, *a, **kw)
    if adder.can_run_list or not self.dllm_manager.get_prefill_requests():
        return mode
    decode = self.dllm_manager.get_decode_requests()
    if not decode:
        return mode
    from sglang.srt.dllm.mixin.req import DllmReqPhase
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    running_batch.batch_is_full = False  # set by the refused prompt; the denoising blocks fit
    self._process_batch_by_phase(
        adder, decode, DllmReqPhase.STAGING_DECODE, DllmReqPhase.INCOMING_DECODE, running_batch=running_batch
    )
    return ForwardMode.DLLM_EXTEND

