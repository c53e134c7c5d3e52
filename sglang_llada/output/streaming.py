"""Streaming one chunk per committed block: no empty chunks while a block is still being denoised.

SGLang 0.5.23's dLLM result path hands every request of a batch to the output streamer after each
scheduling round, and the streamer sends a chunk per round at its default `stream_interval` of 1,
new tokens or not: under FDFO (the default) a request whose block is still being denoised gets
chunks with no new text, one per forward. An AROUND hook (HookRegistry, no patch) on
`SchedulerOutputStreamer.stream_output` leaves such requests out of the round's output -- a
diffusion request that is not finished and has nothing unsent. What is streamed is unchanged:
each committed block arrives as one chunk (the first one holds what is left of the partial
prompt block), and a finished or aborted request is always sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from sglang.srt.managers.schedule_batch import Req


def nothing_new(req: Req) -> bool:
    """A diffusion request mid-block: not finished, every committed token already sent."""
    is_dllm = getattr(req, "is_dllm", None)
    return (
        is_dllm is not None
        and is_dllm()
        and not req.finished()
        and len(req.output_ids) == req.send_token_offset
    )


def stream_output_around(original: Callable[..., Any], self: Any, reqs: list[Req], *args: Any, **kwargs: Any) -> Any:
    """AROUND `SchedulerOutputStreamer.stream_output`."""
    kept = [r for r in reqs if not nothing_new(r)]
    if len(kept) == len(reqs):
        return original(self, reqs, *args, **kwargs)
    if not kept:
        return None
    return original(self, kept, *args, **kwargs)
