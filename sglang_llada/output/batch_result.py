"""BEFORE `SchedulerDllmMixin.process_batch_result_dllm`, SGLang's step that turns a diffusion
batch's result into committed tokens: what the plugin adds to each request first, in this order:
its forward counts (forward_stats.py), then, for the editing decoders under fold_store, the held
blocks the run settled (output/held_blocks.py `settle_held`: written over the held ones; a request
that they finish finishes here and its row's new block is dropped from the result -- the one change
made to the result), then its new tokens' logprobs (logprobs.py), then their trajectory (trace.py,
which reads the counts), then which of its blocks hold stale KV or are held back
(output/held_blocks.py `mark_stale`: before SGLang checkpoints or releases the request). All read
the `ForwardRecord` the algorithm's run left on the logits output."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sglang_llada.output.forward_stats import count_forwards
from sglang_llada.output.held_blocks import mark_stale, settle_held
from sglang_llada.output.logprobs import append_logprobs
from sglang_llada.output.trace import append_trace

if TYPE_CHECKING:
    from sglang.srt.dllm.mixin.scheduler import SchedulerDllmMixin
    from sglang.srt.managers.schedule_batch import ScheduleBatch


def process_batch_result_before(self: SchedulerDllmMixin, batch: ScheduleBatch, result: Any, *args: Any, **kwargs: Any) -> None:
    """BEFORE `SchedulerDllmMixin.process_batch_result_dllm`."""
    count_forwards(batch, result)
    settle_held(self, batch, result)
    append_logprobs(batch, result)
    append_trace(batch, result)
    mark_stale(batch, result)
    return None
