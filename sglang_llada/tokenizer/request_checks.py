"""What a diffusion server does with each generate request before it is tokenized: refuse, with a
400 that says why, what diffusion decoding cannot honour, and make greedy the default.

Why here: SGLang 0.5.23's dLLM path silently ignores (or hangs on) request features that need
left-to-right decoding: a `regex` request never finishes, prompt logprobs come back empty,
`choices`/`select` (which scores options by prompt logprobs) gets nothing to compare. The
tokenizer manager's `_validate_one_request` runs for every generate request before it reaches the
scheduler, and a ValueError raised there becomes an HTTP 400 with its message (the server keeps
serving). The check runs only when the server decodes with a diffusion algorithm. Before it, every
generate request gets the field checks of `field_checks.py` (values the scheduler would use
as indices or shapes: prompt token ids, stop ids, input_embeds; and, on a diffusion server, the
refusal of custom_logit_processor, session_params and input_embeds).

Constrained output: `regex`, `json_schema` and the `structural_tag` SGLang's OpenAI layer writes
for tool_choice "required" / a named function are honoured by the mask-to-token algorithms
(`constraint_onto_request`: one regex moved into custom_params, decoded under the block constraint
of sglang_llada/constrained); refused with a 400 when more than one is set, when the pattern,
schema or tag does not compile (or is another form of structural tag), and on servers whose
algorithm does not constrain (the class's `constraint_refusal` says why: the editing decoders'
edits can rewrite committed tokens; `llada2_exact`'s drafted commits are verified unconstrained).

Refused (each names the field and what to do instead):
- `ebnf` (context-free; the block constraint covers regular languages);
- prompt logprobs: `return_logprob` with `logprob_start_len` >= 0 (a diffusion model never scores
  the prompt left to right); output-token logprobs (`logprob_start_len` -1, the default) are fine;
- `top_logprobs_num` > 0 and `token_ids_logprob` (only the committed token's logprob is kept).

Default temperature: a `/generate` request that sets no temperature gets SGLang's 1.0, i.e.
sampling. LLaDA2's reference decoding is greedy, so a diffusion request without a temperature
gets the checkpoint's generation_config temperature (the toys say 0.0) or, if it has none, 0.0.
OpenAI chat requests already get the generation_config default from SGLang; `/v1/completions`
keeps OpenAI's explicit default of 1.0 (pass `temperature: 0` for greedy).

Per-request decoding knobs: `custom_params: {"dllm": {"threshold": 0.8}}` (in `sampling_params` of
`/generate`; in the body of `/v1/chat/completions` and `/v1/completions`, which SGLang's OpenAI layer
copies into the sampling params) overrides, for this request only, knobs of the server's algorithm
(each class's `REQUEST_KNOBS`, sglang_llada/algorithms). Checked here against the server algorithm's
class: an unknown key, a wrong type, an out-of-range value, a `dllm` entry that is not an object, or
knobs sent to a server that decodes with one of SGLang's in-tree algorithms are a 400 naming the knob,
what it accepts and the server algorithm. Batched `/generate` requests are checked item by item
(SGLang validates each item). The scheduler validates them once more, into the request's frozen
`RequestKnobs` (`LladaAlgorithm.validate_request`), whatever the entry point.

Trajectory opt-in: `custom_params: {"dllm_trace": true}` (output/trace.py) must be a boolean and needs
one of our algorithms on a diffusion server (else a 400 that says so).

Algorithm limits: an algorithm may refuse sampling parameters it cannot honour (its class's
`request_error`: `llada2_exact` decodes greedily and refuses temperature > 0, logit_bias, penalties,
min_new_tokens), checked after the default temperature is filled in.

Getting them to the algorithm is the scheduler's part (sglang_llada/scheduler/batch_policy.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from sglang_llada.algorithms.knobs import REQUEST_KEY, request_knobs_of

if TYPE_CHECKING:
    from sglang.srt.managers.io_struct import GenerateReqInput
    from sglang.srt.managers.tokenizer_manager import TokenizerManager

CONSTRAINT_FIELDS = ("regex", "json_schema", "structural_tag")
UNSUPPORTED_GRAMMARS = ("ebnf",)


def constraint_onto_request(obj: GenerateReqInput, algorithm: str) -> None:
    """`regex` / `json_schema` / `structural_tag` -> one regex in custom_params (constrained/request.py),
    the SGLang fields cleared so that its grammar backends never see them. ValueError (a 400) when more
    than one is set, it does not compile, or the server's algorithm cannot honour it."""
    params = obj.sampling_params if isinstance(obj.sampling_params, dict) else None
    if params is None:
        return
    present = [name for name in CONSTRAINT_FIELDS if params.get(name) is not None]
    if not present:
        return
    if len(present) > 1:
        raise ValueError(f"set only one of {', '.join('`' + n + '`' for n in present)}")
    from sglang_llada.algorithms import algorithm_class, decoder_paths
    from sglang_llada.constrained.request import (
        CONSTRAINT_KEY,
        check_regex,
        regex_from_json_schema,
        regex_from_structural_tag,
    )

    if algorithm not in decoder_paths():
        raise ValueError(
            f"`{present[0]}` under diffusion decoding needs one of sglang-llada's mask-to-token "
            f"algorithms (--dllm-algorithm llada2_threshold); this server decodes with {algorithm}"
        )
    cls = algorithm_class(algorithm)
    if not cls.CONSTRAINS:
        raise ValueError(cls.constraint_refusal())
    if params.get("regex") is not None:
        regex = params["regex"]
        if not isinstance(regex, str):
            raise ValueError(f"`regex` must be a string, got {type(regex).__name__}")
        check_regex(regex)
    elif params.get("json_schema") is not None:
        regex = regex_from_json_schema(params["json_schema"])
    else:
        regex = regex_from_structural_tag(params["structural_tag"])
    custom = params.get("custom_params")
    if custom is None:
        custom = params["custom_params"] = {}
    if not isinstance(custom, dict):
        raise ValueError("custom_params must be an object")
    custom[CONSTRAINT_KEY] = {"regex": regex}
    for name in CONSTRAINT_FIELDS:
        params[name] = None


def diffusion_request_error(obj: GenerateReqInput) -> Optional[str]:
    """The reason a single (non-batched) GenerateReqInput cannot be served, or None."""
    params = obj.sampling_params if isinstance(obj.sampling_params, dict) else {}
    for name in UNSUPPORTED_GRAMMARS:
        if params.get(name) is not None:
            why = (
                f"`{name}` is not supported by diffusion decoding (LLaDA2 commits the positions of a "
                "32-token block in any order; the block constraint covers regular languages): use "
                "`regex` or `json_schema`, or drop it"
            )
            return why
    if obj.return_logprob:
        if obj.logprob_start_len is not None and obj.logprob_start_len >= 0:
            return (
                f"prompt logprobs (logprob_start_len={obj.logprob_start_len}) are not available "
                "with diffusion decoding, which never scores the prompt left to right; use "
                "logprob_start_len=-1 for the output tokens' logprobs (choices/select need "
                "prompt logprobs and are not supported either)"
            )
        if obj.top_logprobs_num:
            return (
                f"top_logprobs_num={obj.top_logprobs_num} is not supported by diffusion decoding: "
                "only the logprob of each committed token is kept; set it to 0"
            )
        if obj.token_ids_logprob:
            return (
                "token_ids_logprob is not supported by diffusion decoding: only the logprob of "
                "each committed token is kept; drop it"
            )
    return None


def request_knobs_error(obj: GenerateReqInput, algorithm: str) -> Optional[str]:
    """Why a request's `custom_params.dllm` cannot be honoured by the server's algorithm, or None."""
    params = obj.sampling_params if isinstance(obj.sampling_params, dict) else {}
    custom = params.get("custom_params")
    if not isinstance(custom, dict) or REQUEST_KEY not in custom:
        return None
    dllm = request_knobs_of(custom)
    from sglang_llada.algorithms import algorithm_class, decoder_paths

    if algorithm not in decoder_paths():
        if dllm is None or dllm == {}:
            return None
        return (
            f"custom_params.{REQUEST_KEY}: per-request decoding knobs need one of sglang-llada's algorithms "
            f"(--dllm-algorithm {', '.join(decoder_paths())}); this server decodes with {algorithm}"
        )
    try:
        algorithm_class(algorithm).check_request_knobs(dllm)
    except ValueError as exc:
        return str(exc)
    return None


def trace_error(obj: GenerateReqInput, algorithm: Optional[str]) -> Optional[str]:
    """Why a request's `custom_params.dllm_trace` (output/trace.py) cannot be honoured, or None."""
    from sglang_llada.output.trace import TRACE_KEY

    params = obj.sampling_params if isinstance(obj.sampling_params, dict) else {}
    custom = params.get("custom_params")
    if not isinstance(custom, dict) or TRACE_KEY not in custom:
        return None
    value = custom[TRACE_KEY]
    if not isinstance(value, bool):
        return f"custom_params.{TRACE_KEY} must be true or false, got {value!r}"
    if not value:
        return None
    from sglang_llada.algorithms import decoder_paths

    if algorithm is None:
        return f"custom_params.{TRACE_KEY}: the decoding trajectory exists only on a diffusion server (LLaDA2); drop it"
    if algorithm not in decoder_paths():
        return (
            f"custom_params.{TRACE_KEY} needs one of sglang-llada's algorithms (--dllm-algorithm "
            f"{', '.join(decoder_paths())}); this server decodes with {algorithm}"
        )
    return None


def default_temperature(manager: TokenizerManager) -> float:
    """The checkpoint's generation_config temperature, else 0.0 (greedy, the LLaDA2 default)."""
    try:
        value = manager.model_config.get_default_sampling_params().get("temperature")
    except Exception:  # no generation_config, or --sampling-defaults openai
        value = None
    return 0.0 if value is None else float(value)


def _dllm_algorithm(server_args: Any) -> Optional[str]:
    """The resolved --dllm-algorithm (the plugin declares it during resolution)."""
    try:
        from sglang.srt.arg_groups.overrides import resolving_view

        return resolving_view(server_args).dllm_algorithm
    except Exception:  # a plain namespace (unit tests)
        return getattr(server_args, "dllm_algorithm", None)


def validate_one_request_after(result: None, manager: TokenizerManager, obj: GenerateReqInput, *args: Any, **kwargs: Any) -> None:
    """AFTER `TokenizerManager._validate_one_request(obj, input_ids)` (runs before the request's
    SamplingParams are built): raise ValueError (-> HTTP 400) if refused, else fill the default
    temperature. Every generate request first gets the field checks of `field_checks.py`
    (token ids in the vocabulary, input_embeds shape, stop ids, ...), diffusion or not."""
    if not hasattr(obj, "sampling_params") or not hasattr(obj, "logprob_start_len"):
        return None  # embedding requests
    from sglang_llada.tokenizer.field_checks import request_error

    algorithm = _dllm_algorithm(manager.server_args)
    input_ids = args[0] if args else kwargs.get("input_ids")
    error = request_error(manager, obj, input_ids, diffusion=algorithm is not None) or trace_error(obj, algorithm)
    if error is not None:
        raise ValueError(error)
    if algorithm is None:
        return None
    error = diffusion_request_error(obj) or request_knobs_error(obj, algorithm)
    if error is not None:
        raise ValueError(error)
    constraint_onto_request(obj, algorithm)
    if isinstance(obj.sampling_params, dict) and obj.sampling_params.get("temperature") is None:
        obj.sampling_params["temperature"] = default_temperature(manager)
    error = algorithm_request_error(obj, algorithm)
    if error is not None:
        raise ValueError(error)
    return None


def algorithm_request_error(obj: GenerateReqInput, algorithm: str) -> Optional[str]:
    """What the server's algorithm itself refuses in the request's sampling params (its class's
    `request_error`, e.g. sampling under llada2_exact), or None."""
    from sglang_llada.algorithms import algorithm_class, decoder_paths

    if algorithm not in decoder_paths():
        return None
    params = obj.sampling_params if isinstance(obj.sampling_params, dict) else {}
    return algorithm_class(algorithm).request_error(params)
