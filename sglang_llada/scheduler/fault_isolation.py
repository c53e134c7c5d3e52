"""A diffusion batch whose forward raises is aborted (500 to its requests), not the whole server.

SGLang 0.5.23 has no recovery for an exception in a batch: the
scheduler's `run_scheduler_process` catches it only to log it and SIGQUIT the server
(`--crash-dump-folder` only writes the recent requests to disk first; there is no "abort the
request on error" path around `run_batch`). So an AROUND hook on `Scheduler.run_batch` catches an
exception raised while running a diffusion batch, and aborts exactly that batch: every request of it
gets finish reason abort with status 500 and a message naming the error (the HTTP client gets a 500;
a stream ends with a chunk carrying that finish reason), its KV is released without being inserted
into the radix cache (it may be half written), it leaves the dLLM queues, and the scheduler loop goes
on; an AROUND hook on `Scheduler.process_batch_result` skips the failed batch's (absent) result.
This is SGLang's own
path for aborting a queued dLLM request (`Scheduler.abort_request`: `send_abort_output`, then
`release_kv_cache(checkpoint=False)`), applied to the batch's requests. Which request of the batch
caused the error is not known, so its other requests are aborted too: a 500 for a few requests
instead of the loss of all of them. Not recovered, and left to SGLang's crash path: exceptions in a
server with more than one rank in the batch's collectives (tensor / pipeline parallel, DP
attention), where the other ranks would wait forever in a collective; accelerator errors
(`torch.AcceleratorError`, e.g. a CUDA device-side assert, after which the device context is
unusable) and out-of-memory errors, which the next batch would meet again; exceptions while the
batch is being built (`get_next_batch_to_run`), where the scheduler's queues and KV are half
updated and no batch exists to abort -- the validation above keeps request data from reaching
those. A recovered failure is logged with its traceback and the aborted request ids.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from sglang.srt.managers.schedule_batch import ScheduleBatch
    from sglang.srt.managers.scheduler import Scheduler

logger = logging.getLogger(__name__)


class FailedForward:
    """What the run_batch hook returns for a diffusion batch whose forward raised and was aborted."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _recoverable(scheduler: Scheduler, batch: ScheduleBatch | None, exc: BaseException) -> bool:
    if not isinstance(exc, Exception) or batch is None or not batch.is_dllm():
        return False
    if getattr(scheduler, "dllm_config", None) is None:
        return False
    import torch

    unrecoverable = tuple(
        t for t in (getattr(torch, "AcceleratorError", None), getattr(torch, "OutOfMemoryError", None)) if t
    )
    if unrecoverable and isinstance(exc, unrecoverable):
        return False
    return _single_rank(scheduler)


def _single_rank(scheduler: Scheduler) -> bool:
    """Whether the scheduler's forwards involve no other rank (no tensor / pipeline parallel peers,
    no DP-attention MLP sync): only then can one rank skip a batch without leaving peers waiting."""
    try:
        from sglang.srt.runtime_context import get_parallel

        parallel = get_parallel()
        sizes = (parallel.tp_size, parallel.pp_size)
    except Exception:  # runtime context not published (unit tests): the scheduler's own record
        sizes = (getattr(scheduler, "tp_size", 1), getattr(scheduler, "pp_size", 1))
    return all(int(s) == 1 for s in sizes) and not getattr(scheduler, "require_mlp_sync", False)


def abort_failed_batch(scheduler: Scheduler, batch: ScheduleBatch, message: str) -> list[str]:
    """Aborts every request of `batch` with status 500 and `message`, releases its KV without caching
    it, and drops it from the dLLM queues. Returns the aborted request ids."""
    from http import HTTPStatus

    from sglang.srt.managers.schedule_batch import FINISH_ABORT
    from sglang.srt.managers.scheduler import _make_abort_req
    from sglang.srt.mem_cache.common import release_kv_cache

    status = int(HTTPStatus.INTERNAL_SERVER_ERROR)
    aborted: list[str] = []
    seen: set[int] = set()
    for req in batch.reqs:
        if id(req) in seen:
            continue
        seen.add(id(req))
        req.finished_reason = FINISH_ABORT(message, status, "InternalServerError")
        req.to_finish = None
        if req.kv.holds_kv or req.kv.holds_mamba:
            # Not checkpointed: this round's KV may be half written.
            release_kv_cache(req, scheduler.tree_cache, checkpoint=False)
        scheduler._release_aborted_request(req)
        reason = {"type": "abort", "status_code": status, "message": message, "err_type": "InternalServerError"}
        scheduler.send_abort_output(_make_abort_req(req, finished_reason=reason), req)
        aborted.append(req.rid)
    # Finished now: out of the dLLM queues here, and out of `last_batch` when the next round filters it.
    scheduler.dllm_manager.filter_finished_reqs()
    return aborted


def run_batch_around(original: Callable[..., Any], self: Scheduler, batch: ScheduleBatch, *args: Any, **kwargs: Any) -> Any:
    """AROUND `Scheduler.run_batch`: a diffusion batch whose run raises is aborted (see module docstring)."""
    try:
        return original(self, batch, *args, **kwargs)
    except Exception as exc:
        if not _recoverable(self, batch, exc):
            raise
        message = (
            f"internal error while running this request's diffusion batch ({type(exc).__name__}: {exc}); "
            "the request was aborted, the server keeps serving"
        )
        try:
            rids = abort_failed_batch(self, batch, message)
        except Exception:
            logger.exception("sglang-llada: could not abort the failed diffusion batch; stopping as SGLang does")
            raise exc from None
        logger.error(
            "sglang-llada: a diffusion batch failed and was aborted (%d request(s): %s); the scheduler goes on",
            len(rids),
            ", ".join(map(str, rids)),
            exc_info=exc,
        )
        return FailedForward(message)


def process_batch_result_around(
    original: Callable[..., Any], self: Any, batch: Any, result: Any, *args: Any, **kwargs: Any
) -> Any:
    """AROUND `Scheduler.process_batch_result`: nothing to process for an aborted batch."""
    if isinstance(result, FailedForward):
        return None
    return original(self, batch, result, *args, **kwargs)
