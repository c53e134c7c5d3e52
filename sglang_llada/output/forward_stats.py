"""Per-request forward counts of diffusion decoding, reported in each response's `meta_info`.

Fields (present on every response of a diffusion request; documented in README):
  dllm_forwards           model forwards that denoised this request's blocks, including the
                          forward that writes a finished block's KV (unless fold_store folded it
                          into the next block's first forward) -- the "forwards" of TPF;
  dllm_prefill_forwards   forwards that only encoded prompt blocks (nothing to denoise);
  dllm_tokens_per_forward completion_tokens / dllm_forwards (TPF), once dllm_forwards > 0;
  dllm_positions          token positions those denoising forwards computed for this request (a
                          block per forward, plus llada2_exact's verification copies and the blocks
                          fold_store re-encoded): the work behind the forwards, which a GPU pays
                          for once a batch is large.
While streaming, each chunk carries the counts so far.

How (all through SGLang's hook registry, no patch):
  1. our decoders' run loop (algorithms/base.py `LladaAlgorithm.run`) counts its `forward` calls
     (its verification forwards too) and puts them in the run's `ForwardRecord` on the logits
     output; for SGLang's in-tree algorithms, AROUND `DllmAlgorithm.run` does the same;
  2. BEFORE `SchedulerDllmMixin.process_batch_result_dllm` (output/batch_result.py) adds that count
     to every request of the batch (its `ForwardCounts` record), as denoising or prefill depending on
     whether its forward held masks;
  3. AROUND `Scheduler.get_output_streamer_class` adds SGLang's request-level "customized info"
     fields to the scheduler's output, and AROUND `TokenizerManager.update_request_meta_info`
     turns the accumulated lists into plain numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from sglang_llada.algorithms import ForwardRecord
from sglang_llada.state import attach, peek, record

if TYPE_CHECKING:
    from sglang.srt.dllm.algorithm.base import DllmAlgorithm
    from sglang.srt.managers.schedule_batch import Req, ScheduleBatch
    from sglang.srt.managers.scheduler import Scheduler
    from sglang.srt.managers.tokenizer_manager import TokenizerManager

FORWARDS = "dllm_forwards"
PREFILL_FORWARDS = "dllm_prefill_forwards"
POSITIONS = "dllm_positions"
TOKENS_PER_FORWARD = "dllm_tokens_per_forward"
# The names the counts travel under through SGLang's customized-info channel. SGLang keeps
# such fields as lists (and slices them per token when streaming incrementally); the public
# fields are plain numbers, so they get other names and are filled in at the very end.
_CHANNEL = {
    FORWARDS: "sglang_llada.forwards",
    PREFILL_FORWARDS: "sglang_llada.prefill_forwards",
    POSITIONS: "sglang_llada.positions",
}


@dataclass
class ForwardCounts:
    """On a `Req`: the forwards spent on it so far."""

    forwards: int = 0  # denoising forwards (incl. the KV-storing one): FORWARDS
    prefill_forwards: int = 0  # forwards that only encoded its prompt blocks: PREFILL_FORWARDS
    positions: int = 0  # positions its denoising forwards computed for it: POSITIONS
    block_start: int = 0  # `forwards` before its current block's first forward (output/trace.py)

    def get(self, public: str) -> int:
        return {FORWARDS: self.forwards, PREFILL_FORWARDS: self.prefill_forwards, POSITIONS: self.positions}[public]


def run_around(original: Callable[..., Any], self: DllmAlgorithm, model_runner: Any, *args: Any, **kwargs: Any) -> Any:
    """AROUND `DllmAlgorithm.run` (step 1), for SGLang's in-tree algorithms: our decoders' run
    counts its forwards and builds its `ForwardRecord` itself (algorithms/base.py `LladaAlgorithm.run`,
    which reaches this hook through `super().run`)."""
    from sglang_llada.algorithms.base import CountingRunner, LladaAlgorithm

    if isinstance(self, LladaAlgorithm):
        return original(self, model_runner, *args, **kwargs)
    counting = CountingRunner(model_runner)
    out = original(self, counting, *args, **kwargs)
    if out[0] is not None:  # LogitsProcessorOutput (or a tensor): both take an attribute
        lens = getattr(args[0], "extend_seq_lens_cpu", None) if args else None
        attach(out[0], ForwardRecord(
            forwards=counting.forwards,
            row_positions=None if lens is None else [int(n) * counting.forwards for n in lens],
        ))
    return out


def count_forwards(batch: ScheduleBatch, result: Any) -> None:
    """Step 2 (called by output/batch_result.py before SGLang processes the batch's result)."""
    run = peek(result.logits_output, ForwardRecord) if result is not None else None
    if run is None or not run.forwards:
        return
    n = run.forwards
    for i, req in enumerate(batch.reqs):
        committed = len(req.origin_input_ids) + len(req.output_ids)
        counts = record(req, ForwardCounts)
        if req.extend_end > committed:
            if not req.dllm_incomplete_ids:  # this run started a block (FDFO keeps unfinished ones)
                counts.block_start = counts.forwards
            counts.forwards += n
            if run.row_positions is not None:
                counts.positions += run.row_positions[i]
        else:
            counts.prefill_forwards += n


def streamer_class_around(original: Callable[..., Any], self: Scheduler, *args: Any, **kwargs: Any) -> Any:
    """AROUND `Scheduler.get_output_streamer_class` (step 3)."""
    base = original(self, *args, **kwargs)
    if getattr(self, "dllm_config", None) is None or getattr(self, "rust_server", None) is not None:
        return base  # not a diffusion server, or Rust egress (which takes no extra fields)
    return _with_forward_counts(base)


def _counts(req: Req) -> ForwardCounts:
    return peek(req, ForwardCounts) or ForwardCounts()


def _with_forward_counts(base: Any) -> type:
    def build_additional_customized_info(self: Any, reqs: list[Any]) -> dict[str, list[Any]]:
        info = base.build_additional_customized_info(self, reqs)
        for public, channel in _CHANNEL.items():
            info[channel] = [[_counts(r).get(public)] for r in reqs]
        return info

    def is_request_level_customized_info_key(self: Any, key: str) -> bool:
        return key in _CHANNEL.values() or base.is_request_level_customized_info_key(self, key)

    return type(
        f"LLaDA2{base.__name__}",
        (base,),
        {
            "__slots__": (),
            "has_additional_customized_info": True,
            "build_additional_customized_info": build_additional_customized_info,
            "is_request_level_customized_info_key": is_request_level_customized_info_key,
        },
    )


def meta_info_around(
    original: Callable[..., Any], self: TokenizerManager, meta_info: dict[str, Any], state: Any, *args: Any, **kwargs: Any
) -> Any:
    """AROUND `TokenizerManager.update_request_meta_info` (step 3, in the tokenizer process)."""
    out = original(self, meta_info, state, *args, **kwargs)
    reported = getattr(state, "customized_info_reported_keys", None)
    for public, channel in _CHANNEL.items():
        values = meta_info.pop(channel, None)
        if reported is not None:
            reported.discard(channel)  # else SGLang re-attaches the raw list to stream chunks
        if values:
            meta_info[public] = int(values[-1])  # the counts so far, newest last
    forwards = meta_info.get(FORWARDS)
    completion = meta_info.get("completion_tokens")
    if isinstance(forwards, int) and forwards > 0 and isinstance(completion, int):
        meta_info[TOKENS_PER_FORWARD] = round(completion / forwards, 4)
    return out
