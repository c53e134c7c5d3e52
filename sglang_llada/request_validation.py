"""Requests the scheduler would trust blindly are refused with a 400 before they are queued, and a
forward that fails on one batch's data aborts that batch instead of the server.

Why: SGLang 0.5.23's tokenizer manager checks prompt length, sampling ranges (`SamplingParams.verify`:
temperature, top_p, top_k, min_p, penalties, max/min_new_tokens, logit_bias keys, sampling_seed) and
the JSON types of `/generate`, but not the values below, which the scheduler process then uses as
tensor indices or shapes. One bad request raised in the scheduler, the scheduler died, and the whole
server exited with every request in flight (the same for autoregressive models):

- `input_ids` outside `[0, vocab_size)` (an id of 10**9, a negative id; `/generate` single and
  batched, `/v1/completions` with a token-id prompt, which SGLang turns into the same
  `GenerateReqInput.input_ids`): IndexError in the embedding;
- `sampling_params.stop_token_ids` outside the vocabulary, with `min_new_tokens` > 0 (also
  `/v1/chat/completions` `stop_token_ids` + `min_tokens`): the min-new-tokens penalizer scatters
  them into a [batch, vocab] tensor while the batch is built;
- `input_embeds` rows that are not `hidden_size` long: ValueError in the first layer norm.

Checked here (`request_error`), for every generate request, diffusion or autoregressive: it is called
by `request_policy.validate_one_request_after`, the AFTER hook on
`TokenizerManager._validate_one_request`, which SGLang calls per request and per item of a batched
request, with the token ids that will be sent, before the request is queued; a ValueError there is an
HTTP 400 and the server keeps serving. Each message names the field, the offending value and its
index, and the valid range:
- the prompt's token ids (`input_ids`, or the tokenized `text`) are ints in `[0, vocab_size)`;
- `sampling_params.stop_token_ids` are ints in `[0, vocab_size)`;
- `sampling_params.stop_regex` patterns compile (SGLang answered a 500 for `"("`);
- `input_embeds` is a non-empty list of rows of `hidden_size` numbers.
vocab_size and hidden_size are the tokenizer manager's `model_config` (the checkpoint's config).

On a diffusion server (any `--dllm-algorithm`) three fields are refused outright, each because the
diffusion path cannot serve it:
- `custom_logit_processor` (accepted by SGLang only with `--enable-custom-logit-processor`): logit
  processors run in SGLang's token sampler, which diffusion decoding never calls; the processor was
  silently ignored, and a malformed one raised in the scheduler while the batch was built;
- `session_params`: SGLang 0.5.23 builds session requests without their diffusion state; such a
  request was never answered (a client without a timeout hung forever);
- `input_embeds` (reachable with `--disable-radix-cache`): a diffusion round embeds the prompt
  together with the masked block it denoises, and SGLang has embeddings for the prompt positions
  only (and in fp32: a well-shaped request crashed the scheduler too).

Already refused by SGLang, not repeated here: negative `max_new_tokens`, negative or NaN
`temperature` and the other `verify` ranges, `logit_bias` keys outside the vocabulary, non-integer
`sampling_seed`, empty `input_ids` / empty `/v1/completions` prompts, duplicate `rid`s (in flight, or
within one batched request), `token_ids_logprob` ids, `routed_dp_rank`, `lora_path` without LoRA,
malformed JSON and wrong JSON types (`/generate`'s contract check, pydantic for the OpenAI routes).
Left as SGLang answers them (a 500, the server keeps serving): `input_embeds: []` and a
`sampling_params` list whose length differs from the batch, which fail in
`GenerateReqInput.normalize_batch_and_arguments`, before any hook.

`SGLANG_LLADA_DISABLE_REQUEST_VALIDATION=1` turns every check of this module off. It exists for one
test only (tests/test_soak_e2e.py shows the soak failing without it); never set it when serving.

Forward failures (`register_hooks`): SGLang 0.5.23 has no recovery for an exception in a batch: the
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
import os
import re
from typing import Any, Callable, Iterable, Optional

logger = logging.getLogger(__name__)

DISABLE_ENV = "SGLANG_LLADA_DISABLE_REQUEST_VALIDATION"


def validation_disabled() -> bool:
    """True when the test-only switch turns this module's request checks off."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# ------------------------------------------------------------------------------------------------
# request checks (tokenizer manager)
# ------------------------------------------------------------------------------------------------


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def token_ids_error(
    ids: Optional[Iterable[Any]], field: str, vocab_size: int, *, where: str = "index"
) -> Optional[str]:
    """Why a list of token ids cannot be used with a vocabulary of `vocab_size`, or None.

    The message names `field`, the first offending value and its `where` (e.g. "prompt position 3").
    """
    if ids is None:
        return None
    ids = list(ids)
    if not ids:
        return None
    if all(_is_token_id(t) for t in ids) and 0 <= min(ids) and max(ids) < vocab_size:
        return None
    for i, t in enumerate(ids):
        if not _is_token_id(t):
            return f"{field}: {t!r} at {where} {i} is not a token id; token ids are integers in [0, {vocab_size})"
        if not 0 <= t < vocab_size:
            return (
                f"{field}: token id {t} at {where} {i} is outside this model's vocabulary; "
                f"token ids must be in [0, {vocab_size}) (vocab_size {vocab_size})"
            )
    return None  # unreachable: some id failed the fast check above


def input_embeds_error(embeds: Any, hidden_size: int) -> Optional[str]:
    """Why `input_embeds` of one request is not a [positions][hidden_size] list, or None."""
    if embeds is None:
        return None
    if not isinstance(embeds, (list, tuple)) or not embeds:
        return f"input_embeds must be a non-empty list of rows of {hidden_size} numbers (one row per prompt position)"
    for i, row in enumerate(embeds):
        if not isinstance(row, (list, tuple)):
            return (
                f"input_embeds[{i}] is {type(row).__name__}, not a row of numbers: input_embeds must be "
                f"a list of rows of {hidden_size} numbers, this model's hidden size"
            )
        if len(row) != hidden_size:
            return (
                f"input_embeds[{i}] has {len(row)} values; each row must have {hidden_size}, "
                f"this model's hidden size"
            )
    return None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return [value]


def sampling_params_error(params: Any, vocab_size: Optional[int]) -> Optional[str]:
    """Why a request's sampling params hold values the scheduler cannot use, or None
    (stop ids are checked only when `vocab_size` is known)."""
    if not isinstance(params, dict):
        return None
    if vocab_size is not None:
        # SGLang drops None entries of stop_token_ids itself (SamplingParams.__post_init__).
        stop_ids = [t for t in _as_list(params.get("stop_token_ids")) if t is not None]
        error = token_ids_error(stop_ids, "sampling_params.stop_token_ids", vocab_size)
        if error is not None:
            return error
    patterns = params.get("stop_regex")
    for i, pattern in enumerate(_as_list(patterns)):
        field = "sampling_params.stop_regex" + (f"[{i}]" if isinstance(patterns, (list, tuple)) else "")
        if not isinstance(pattern, str):
            return f"{field} must be a string (a regular expression), got {type(pattern).__name__}"
        try:
            re.compile(pattern)
        except re.error as exc:
            return f"{field} = {pattern!r} is not a valid regular expression: {exc}"
    return None


def diffusion_unservable_error(obj: Any) -> Optional[str]:
    """Why a request carries a field a diffusion server cannot serve (see the module docstring), or None."""
    if getattr(obj, "custom_logit_processor", None):
        return (
            "custom_logit_processor is not supported by diffusion decoding: logit processors run in "
            "SGLang's token sampler, which the diffusion decoders never call (they choose every "
            "token of a block from the model's logits themselves); drop custom_logit_processor"
        )
    if getattr(obj, "session_params", None):
        return (
            "session_params is not supported by diffusion decoding: SGLang 0.5.23 builds session "
            "requests without their diffusion state, so they would never finish; send the whole "
            "conversation as one prompt"
        )
    if getattr(obj, "input_embeds", None) is not None:
        return (
            "input_embeds is not supported by diffusion decoding: each round embeds the prompt together "
            "with the masked block being denoised, from token ids, and SGLang holds embeddings for the "
            "prompt positions only; send input_ids or text"
        )
    return None


def model_limits(manager: Any) -> tuple[Optional[int], Optional[int]]:
    """(vocab_size, hidden_size) of the served model, from the tokenizer manager's model config
    (None for one the config does not give: that check is skipped)."""
    config = getattr(manager, "model_config", None)
    limits = []
    for name in ("vocab_size", "hidden_size"):
        value = getattr(config, name, None)
        limits.append(int(value) if isinstance(value, int) and value > 0 else None)
    return limits[0], limits[1]


def request_error(
    manager: Any, obj: Any, input_ids: Optional[Iterable[Any]], *, diffusion: bool
) -> Optional[str]:
    """Why a (non-batched) GenerateReqInput must be refused before it is queued, or None.

    `input_ids`: the prompt's token ids as SGLang will send them (the tokenized text, or the
    request's `input_ids`); `diffusion`: whether the server decodes with a diffusion algorithm.
    """
    if validation_disabled():
        return None
    vocab_size, hidden_size = model_limits(manager)
    error = None
    if vocab_size is not None:
        field = "input_ids" if getattr(obj, "input_ids", None) is not None else "the tokenized text"
        error = token_ids_error(input_ids, field, vocab_size, where="prompt position")
    if error is None and hidden_size is not None:
        error = input_embeds_error(getattr(obj, "input_embeds", None), hidden_size)
    if error is None:
        error = sampling_params_error(getattr(obj, "sampling_params", None), vocab_size)
    if error is None and diffusion:
        error = diffusion_unservable_error(obj)
    return error


# ------------------------------------------------------------------------------------------------
# forward failures (scheduler)
# ------------------------------------------------------------------------------------------------


class FailedForward:
    """What the run_batch hook returns for a diffusion batch whose forward raised and was aborted."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _recoverable(scheduler: Any, batch: Any, exc: BaseException) -> bool:
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


def _single_rank(scheduler: Any) -> bool:
    """Whether the scheduler's forwards involve no other rank (no tensor / pipeline parallel peers,
    no DP-attention MLP sync): only then can one rank skip a batch without leaving peers waiting."""
    try:
        from sglang.srt.runtime_context import get_parallel

        parallel = get_parallel()
        sizes = (parallel.tp_size, parallel.pp_size)
    except Exception:  # runtime context not published (unit tests): the scheduler's own record
        sizes = (getattr(scheduler, "tp_size", 1), getattr(scheduler, "pp_size", 1))
    return all(int(s) == 1 for s in sizes) and not getattr(scheduler, "require_mlp_sync", False)


def abort_failed_batch(scheduler: Any, batch: Any, message: str) -> list[str]:
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


def run_batch_around(original: Callable[..., Any], self: Any, batch: Any, *args: Any, **kwargs: Any) -> Any:
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
            raise exc
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


_hooks_registered = False


def register_hooks() -> None:
    """Registers the two scheduler hooks above (idempotent)."""
    global _hooks_registered
    if _hooks_registered:
        return
    _hooks_registered = True
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register("sglang.srt.managers.scheduler.Scheduler.run_batch", run_batch_around, HookType.AROUND)
    HookRegistry.register(
        "sglang.srt.managers.scheduler.Scheduler.process_batch_result", process_batch_result_around, HookType.AROUND
    )
