"""Streaming one chunk per committed block: no empty chunks while a block is still being denoised.

SGLang 0.5.23's dLLM result path hands every request of a batch to the output streamer after each
scheduling round, and the streamer sends a chunk per round at its default `stream_interval` of 1,
new tokens or not: under FDFO (the default) a request whose block is still being denoised gets
chunks with no new text, one per forward. An AROUND hook (HookRegistry, no patch) on
`SchedulerOutputStreamer.stream_output` leaves such requests out of the round's output -- a
diffusion request that is not finished and has nothing unsent. What is streamed is unchanged:
each committed block arrives as one chunk (the first one holds what is left of the partial
prompt block), and a finished or aborted request is always sent.

A block an editing decoder accepted before its final check (fold_store, algorithms/folded_check.py)
is held back: its tokens are in the request's output_ids but may still change, so for the length of
the call the streamer sees the output without them (`held_from`, output/held_blocks.py); they
go out with the chunk after their check settled them.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from sglang_llada.output.held_blocks import held_from

if TYPE_CHECKING:
    from sglang.srt.managers.schedule_batch import Req


def _sendable(req: Req) -> Optional[int]:
    """Where a request's sendable output ends when a held block cuts it short, else None."""
    return None if req.finished() else held_from(req)


def nothing_new(req: Req) -> bool:
    """A diffusion request mid-block: not finished, every committed token already sent."""
    is_dllm = getattr(req, "is_dllm", None)
    if is_dllm is None or not is_dllm() or req.finished():
        return False
    end = _sendable(req)
    return (len(req.output_ids) if end is None else end) <= req.send_token_offset


@contextlib.contextmanager
def _without_held(reqs: list[Req]) -> Iterator[None]:
    """The requests' held blocks out of their output_ids for the length of the block."""
    cut: list[tuple[Req, Any]] = []
    try:
        for req in reqs:
            end = _sendable(req)
            if end is not None and end < len(req.output_ids):
                cut.append((req, req.output_ids[end:]))
                del req.output_ids[end:]
        yield
    finally:
        for req, tail in cut:
            req.output_ids.extend(tail)


def stream_output_around(original: Callable[..., Any], self: Any, reqs: list[Req], *args: Any, **kwargs: Any) -> Any:
    """AROUND `SchedulerOutputStreamer.stream_output`."""
    kept = [r for r in reqs if not nothing_new(r)]
    if not kept:
        return None
    with _without_held(kept):
        return original(self, kept if len(kept) < len(reqs) else reqs, *args, **kwargs)
