"""Requests the scheduler would trust blindly are refused with a 400 before they are queued (a
forward that fails anyway aborts only its batch: sglang_llada/scheduler/fault_isolation.py).

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
by `request_checks.validate_one_request_after`, the AFTER hook on
`TokenizerManager._validate_one_request`, which SGLang calls per request and per item of a batched
request, with the token ids that will be sent, before the request is queued; a ValueError there is an
HTTP 400 and the server keeps serving. Each message names the field, the offending value and its
index, and the valid range:
- the prompt's token ids (`input_ids`, or the tokenized `text`) are ints in `[0, vocab_size)`;
- `sampling_params.stop_token_ids` are ints in `[0, vocab_size)`;
- `sampling_params.stop_regex` patterns compile (SGLang answered a 500 for `"("`);
- `input_embeds` is a non-empty list of rows of `hidden_size` numbers.
vocab_size and hidden_size are the tokenizer manager's `model_config` (the checkpoint's config).

On a diffusion server (any `--dllm-algorithm`) these fields are refused outright, each because the
diffusion path cannot serve it (`return_sampling_mask`, `return_routed_experts` and
`return_indexer_topk` too: SGLang's token sampler and capturers, which produce them, never run):
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
test only (tests/e2e/test_soak_e2e.py shows the soak failing without it); never set it when serving.
"""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING, Any, Iterable, Optional

if TYPE_CHECKING:
    from sglang.srt.managers.io_struct import GenerateReqInput
    from sglang.srt.managers.tokenizer_manager import TokenizerManager

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


def diffusion_unservable_error(obj: GenerateReqInput) -> Optional[str]:
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
    if getattr(obj, "return_sampling_mask", False):
        return (
            "return_sampling_mask is not supported by diffusion decoding: the mask describes the token "
            "sampler's kept set for one next token, and diffusion steps choose many positions' tokens "
            "in a kernel of their own; drop return_sampling_mask"
        )
    for name in ("return_routed_experts", "return_indexer_topk"):
        if getattr(obj, name, False):
            return (
                f"{name} is not supported for LLaDA2 diffusion models: the sglang-llada model class "
                f"routes its own MoE / attention and does not record them; drop {name}"
            )
    return None


def model_limits(manager: TokenizerManager) -> tuple[Optional[int], Optional[int]]:
    """(vocab_size, hidden_size) of the served model, from the tokenizer manager's model config
    (None for one the config does not give: that check is skipped)."""
    config = getattr(manager, "model_config", None)
    limits = []
    for name in ("vocab_size", "hidden_size"):
        value = getattr(config, name, None)
        limits.append(int(value) if isinstance(value, int) and value > 0 else None)
    return limits[0], limits[1]


def request_error(
    manager: TokenizerManager, obj: GenerateReqInput, input_ids: Optional[Iterable[Any]], *, diffusion: bool
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
