"""The knobs of our decoding algorithms, read from `--dllm-algorithm-config` and checked up front.

Why this exists: SGLang 0.5.23 hands an algorithm `config.algorithm_config`, the raw mapping loaded
from the YAML file of `--dllm-algorithm-config` (an empty dict without the flag), and its in-tree
algorithms read it with `.get(name, default)`: a typo (`treshold: 0.9`) or an out-of-range value
(`threshold: 9`) is silently ignored or silently changes the decoding. Our algorithms instead
validate every key when the scheduler builds them (server start-up), so a bad file fails with a
`ValueError` that names the algorithm, the knob, the allowed range and the value found.

Keys that SGLang itself reads from the same file (`block_size` in `DllmConfig.from_server_args`,
`capture_input_preparation`) are accepted and left to SGLang.

Per-request knobs (`check_request_knobs`): a request may override some of its server algorithm's
knobs for itself with `custom_params: {"dllm": {...}}` (each algorithm class lists them in
`REQUEST_KNOBS`, the same `Knob` objects, the step budgets capped at `REQUEST_STEP_CAP`). They are
checked by the same rules at the door, in the tokenizer process (tokenizer/request_checks.py: a bad
one is an HTTP 400 before the request is queued), and validated once in the scheduler process
(`LladaAlgorithm.validate_request`), which keeps the result on the request as a frozen
`RequestKnobs`; a batch carries its rows' records (`BatchKnobs`), and a step reads them, resolved
against the server's values, as one [B] tensor per knob (base.py `step_knobs`): never parsed again.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Optional, Sequence, Union

# Keys of the YAML mapping consumed by SGLang's DllmConfig, not by the algorithm.
SGLANG_KEYS = frozenset({"block_size", "capture_input_preparation"})

Value = Union[int, float, str]

# Where a request puts its knobs: `custom_params: {"dllm": {...}}` (sampling params of /generate, the
# body of the OpenAI endpoints).
REQUEST_KEY = "dllm"
# The most post-edit (`max_edit_steps`) or DELETE / SPLIT (`max_indel_steps`) steps a request may ask
# for; `max_steps` of the editing algorithms covers max(server value, this), so SGLang's synchronous
# loop never cuts a request's block short.
REQUEST_STEP_CAP = 64
YAML_HINT = "set it in the YAML file passed by --dllm-algorithm-config"


@dataclass(frozen=True)
class Knob:
    """One configuration key: its default, its type and its allowed range (bounds inclusive unless open)."""

    name: str
    default: Value
    kind: type  # int, float or str
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    choices: tuple[str, ...] = ()

    def allowed(self) -> str:
        """The allowed values in words, for error messages."""
        if self.kind is str:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        noun = "an integer" if self.kind is int else "a number"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high is None else "]"
        return f"{noun} in {left}{lo}, {hi}{right}"

    def check(self, value: Any, algorithm: str, hint: str = YAML_HINT) -> Value:
        """`value` converted to the knob's type, or a ValueError naming the knob and its range."""
        if self.kind is str and isinstance(value, bool) and {"on", "off"} <= set(self.choices):
            value = "on" if value else "off"  # YAML 1.1 reads an unquoted on / off (yes / no) as a boolean
        if not self.accepts(value):
            raise ValueError(f"dLLM algorithm {algorithm}: `{self.name}` must be {self.allowed()}, got {value!r} ({hint})")
        return self.kind(value)

    def capped(self, high: float) -> "Knob":
        """The same knob with an upper bound (a request's copy of an unbounded step budget)."""
        return dataclasses.replace(self, high=high if self.high is None else min(self.high, high))

    def accepts(self, value: Any) -> bool:
        if self.kind is str:
            return isinstance(value, str) and value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False  # YAML `true` is an int to Python; strings are never coerced
        if self.kind is int and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or value <= self.high


# Shared by every algorithm: honour each request's temperature / top-k / top-p / seed ("request",
# the default; a request at temperature 0 -- the toy checkpoints' generation_config default, as in
# the LLaDA2 reference -- decodes greedily), or force greedy decoding for every request ("greedy").
SAMPLING = Knob("sampling", "request", str, choices=("greedy", "request"))

# Folded store (models/folded_blocks.py, scheduler/folded_store.py; algorithms/base.py): `on` accepts a
# block before a forward has seen it final and re-encodes it in the request's next forward (the
# mask-to-token decoders, unmask.py: in the step that commits its last mask; the editing decoders,
# folded_check.py: before their final check, which runs on that next forward's logits); `auto` is `on`
# where denoising forwards run eagerly (our CPU platform), `off` elsewhere (CUDA graphs replay a
# fixed forward, which cannot carry the extra blocks).
FOLD_STORE = Knob("fold_store", "auto", str, choices=("auto", "on", "off"))


def read_knobs(config: Optional[Mapping[str, Any]], knobs: Sequence[Knob], algorithm: str) -> dict[str, Value]:
    """{knob name: validated value} from `config.algorithm_config`; defaults for absent keys.

    Unknown keys are an error (a misspelt knob would otherwise be ignored without a word).
    """
    config = {} if config is None else config
    if not isinstance(config, Mapping):
        raise ValueError(f"dLLM algorithm {algorithm}: --dllm-algorithm-config must be a YAML mapping")
    by_name = {k.name: k for k in knobs}
    unknown = sorted(str(key) for key in config if key not in by_name and key not in SGLANG_KEYS)
    if unknown:
        known = ", ".join(sorted(by_name) + sorted(SGLANG_KEYS))
        raise ValueError(f"dLLM algorithm {algorithm}: unknown key(s) {', '.join(unknown)} (known: {known})")
    return {k.name: k.check(config.get(k.name, k.default), algorithm) for k in knobs}


def check_request_knobs(dllm: Any, knobs: Sequence[Knob], algorithm: str) -> dict[str, Value]:
    """A request's `custom_params.dllm` mapping, validated against `knobs` (the server algorithm's
    REQUEST_KNOBS): {knob name: value of the knob's type}, or a ValueError naming the knob, what it
    accepts and the server algorithm. `None` is the same as no knob."""
    allowed = ", ".join(k.name for k in knobs) or "nothing"
    where = f"server algorithm {algorithm}; a request may set: {allowed}"
    if dllm is None:
        return {}
    if not isinstance(dllm, Mapping):
        raise ValueError(
            f"custom_params.{REQUEST_KEY} must be a JSON object of decoding knobs, got "
            f"{type(dllm).__name__} {dllm!r} ({where})"
        )
    by_name = {k.name: k for k in knobs}
    out: dict[str, Value] = {}
    for key, value in dllm.items():
        knob = by_name.get(key)
        if knob is None:
            why = (
                "is server-wide (--dllm-algorithm-config), a request cannot set it"
                if key == SAMPLING.name
                else "is not a per-request knob"
            )
            raise ValueError(f"custom_params.{REQUEST_KEY}: `{key}` {why} ({where})")
        if not knob.accepts(value):
            raise ValueError(
                f"custom_params.{REQUEST_KEY}.{key} must be {knob.allowed()}, got {value!r} ({where})"
            )
        out[key] = knob.kind(value)
    return out


def request_knobs_of(custom_params: Any) -> Any:
    """The raw `dllm` entry of a request's custom_params (None when absent)."""
    return custom_params.get(REQUEST_KEY) if isinstance(custom_params, Mapping) else None


@dataclass(frozen=True)
class RequestKnobs:
    """A request's decoding knobs, {knob name: value}: its `custom_params.dllm` validated once, by
    the scheduler's check (base.py `validate_request`), and kept on the request (`sglang_llada.state`)
    for every batch it joins. Read-only."""

    values: Mapping[str, Value]

    @staticmethod
    def of(checked: Mapping[str, Value]) -> Optional["RequestKnobs"]:
        """The record of validated knobs (`check_request_knobs`' result); None when there are none."""
        return RequestKnobs(MappingProxyType(dict(checked))) if checked else None


@dataclass(frozen=True)
class BatchKnobs:
    """On a diffusion batch's SamplingBatchInfo (scheduler/batch_policy.py), when some request of it
    sets knobs: each row's `RequestKnobs` (None: the server's values), in batch order."""

    rows: tuple[Optional[RequestKnobs], ...]
