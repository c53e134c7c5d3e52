"""The two SGLang functions where whole-prompt prefill (prefill.py) and KV admission (admission.py)
meet: one wrapper each, calling both concerns in the order written here (tests/units/
test_scheduler_rounds.py pins it).

- `SchedulerDllmMixin._process_dllm_batches` builds one scheduling round. Admission first clears a
  stale "batch is full"; SGLang builds the round; prefill turns a round of prompt blocks into one
  EXTEND forward; admission then serves the denoising blocks if no prompt was admitted (so that
  decision sees the round prefill left).
- `PrefillAdder._add_dllm_req` adds one request to the round. Both concerns note the budgets SGLang is
  about to charge; after SGLang adds the request, prefill charges a many-block prefill as one block of
  the round's dLLM budget, and admission charges the KV the request will still write. The two touch
  different budgets (`rem_dllm_tokens`, `memory_budget.total_offset`), so their order is free; it is
  fixed here anyway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from sglang_llada.scheduler import admission, prefill

if TYPE_CHECKING:
    from sglang.srt.dllm.mixin.scheduler import SchedulerDllmMixin
    from sglang.srt.managers.schedule_batch import Req, ScheduleBatch
    from sglang.srt.managers.schedule_policy import PrefillAdder


def process_dllm_batches_around(
    original: Callable[..., Any], self: SchedulerDllmMixin, adder: PrefillAdder, running_batch: ScheduleBatch, *a: Any, **kw: Any
) -> Any:
    """AROUND `SchedulerDllmMixin._process_dllm_batches`."""
    admission.clear_batch_full(running_batch)
    mode = original(self, adder, running_batch, *a, **kw)
    mode = prefill.whole_prompt_mode(self, adder, mode)
    return admission.decode_when_no_prompt_admitted(self, adder, running_batch, mode)


def add_dllm_req_around(original: Callable[..., Any], self: PrefillAdder, req: Req, *a: Any, **kw: Any) -> Any:
    """AROUND `PrefillAdder._add_dllm_req`."""
    rem_blocks = self.rem_dllm_tokens
    future = admission.future_charge_start(self, req)
    out = original(self, req, *a, **kw)
    prefill.charge_one_block(self, req, rem_blocks)
    admission.future_charge_end(self, future)
    return out
