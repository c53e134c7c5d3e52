"""Which LLaDA2.X generation a checkpoint is, and how each generation is decoded by default.

Why this exists: every LLaDA2.X checkpoint has `architectures: ["LLaDA2MoeModelLM"]` and
`model_type: llada2_moe`, but the generations are trained for different decoders: 2.0 (and CAP)
for mask-to-token unmasking, 2.1 adds token-to-token editing (S / Q modes), 2.2 adds Levenshtein
editing (DELETE / SPLIT tokens). Decoding a 2.2 checkpoint with the 2.0 rule would commit DELETE /
SPLIT tokens as text; decoding a 2.1 checkpoint without editing loses what it was trained for. So
the generation is told from what the checkpoint carries: `RULES`, in order, the first rule that
applies wins (the override, then the DELETE / SPLIT ids, block routing, LLaDA2.1's editing keys in
generation_config.json, a LLaDA2.1 name, else 2.0), and each generation is decoded with its
`DEFAULT_DECODING`. Both are data: docs/llada2-generations.md's table is rendered from them
(`python -m sglang_llada.doc_tables --write`; tests/units/test_doc_tables.py fails when it is stale).

A 2.2 checkpoint without DELETE / SPLIT ids (block routing alone) cannot be Levenshtein-decoded: it
is served with 2.1's token editing (`llada2_edit`), and the log line says so. An explicit
`--dllm-algorithm` always wins over the generation's default.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

GENERATIONS = ("2.0", "2.1", "2.2")
OVERRIDE_KEY = "llada2_generation"
# generation_config.json keys of LLaDA2.1's reference decoder (its `generate(editing_threshold=...,
# max_post_steps=...)`): their presence marks a checkpoint trained for editing.
EDITING_GENERATION_KEYS = ("editing_threshold", "max_post_steps")
_NAME_21 = re.compile(r"llada[-_ ]?2[._-]1(?![0-9])", re.IGNORECASE)

# generation -> its default decoding: (--dllm-algorithm, keys added to its --dllm-algorithm-config;
# the user's keys win), used when the user gave no --dllm-algorithm.
DEFAULT_DECODING: Mapping[str, tuple[str, Mapping[str, Any]]] = {
    "2.0": ("llada2_threshold", {}),
    "2.1": ("llada2_edit", {"mode": "Q"}),
    "2.2": ("llada2_levenshtein", {"mode": "Q"}),
}


@dataclass(frozen=True)
class Facts:
    """What the rules read from a checkpoint."""

    generation_config: Mapping[str, Any]
    name: str  # hub id or path
    override: Optional[str]  # the validated llada2_generation override
    has_indel: bool  # config.json declares delete_token_id and split_token_id
    block_routing: bool  # config.json declares expert_capacity


@dataclass(frozen=True)
class Rule:
    """One detection rule: when `applies`, the checkpoint is `generation` (None: the override's)."""

    carries: str  # what the checkpoint carries, in Markdown (docs/llada2-generations.md)
    generation: Optional[str]
    applies: Callable[[Facts], bool]
    reason: str  # the log line's why; {name} (the checkpoint's basename) and {override} filled in
    # decode with this generation's default instead of its own (`reason` says why)
    decoding: Optional[str] = None


# In order: the first rule that applies wins.
RULES: tuple[Rule, ...] = (
    Rule(
        f"`--json-model-override-args '{{\"{OVERRIDE_KEY}\": \"2.1\"}}'` (or \"2.0\", \"2.2\")",
        None,
        lambda f: f.override is not None,
        f"--json-model-override-args {OVERRIDE_KEY}={{override}}",
    ),
    Rule(
        "config.json `delete_token_id` and `split_token_id`",
        "2.2",
        lambda f: f.has_indel,
        "config.json declares delete_token_id / split_token_id",
    ),
    Rule(
        "config.json `expert_capacity` (block routing), no DELETE / SPLIT ids",
        "2.2",
        lambda f: f.block_routing,
        "config.json declares expert_capacity (block routing); no delete_token_id / split_token_id, "
        "so token editing without DELETE / SPLIT",
        decoding="2.1",  # no Levenshtein edits without the ids (the rule above took every checkpoint with them)
    ),
    Rule(
        "generation_config.json " + " or ".join(f"`{k}`" for k in EDITING_GENERATION_KEYS),
        "2.1",
        lambda f: any(k in f.generation_config for k in EDITING_GENERATION_KEYS),
        "generation_config.json carries " + " / ".join(EDITING_GENERATION_KEYS),
    ),
    Rule(
        "the checkpoint's name (hub id or directory) says LLaDA2.1",
        "2.1",
        lambda f: bool(_NAME_21.search(f.name)),
        "the checkpoint name {name!r}",
    ),
    Rule("none of these", "2.0", lambda f: True, "no editing fields in the checkpoint"),
)


@dataclass(frozen=True)
class Generation:
    """A checkpoint's generation, why it was chosen, and its default decoding."""

    name: str  # "2.0" | "2.1" | "2.2"
    reason: str
    algorithm: str
    # Keys added to the algorithm's config when the algorithm is the generation's default
    # (the user's --dllm-algorithm-config keys win).
    algorithm_config: Mapping[str, Any] = field(default_factory=dict)
    delete_token_id: Optional[int] = None
    split_token_id: Optional[int] = None
    block_routing: bool = False

    def describe(self) -> str:
        knobs = ", ".join(f"{k} {v}" for k, v in self.algorithm_config.items())
        return f"LLaDA{self.name} ({self.reason}): default decoding {self.algorithm}" + (
            f" ({knobs})" if knobs else ""
        )


class GenerationError(ValueError):
    """The override or the checkpoint's generation fields are invalid."""


def _read_json(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {}


def _token_id(config: Mapping[str, Any], key: str, vocab_size: int) -> Optional[int]:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab_size:
        raise GenerationError(
            f"config.json `{key}` must be a token id in [0, {vocab_size}), got {value!r}; fix the "
            f"checkpoint or pass --json-model-override-args '{{\"{key}\": <id>}}'"
        )
    return value


def detect_generation(
    config: Mapping[str, Any],
    generation_config: Mapping[str, Any],
    name: str,
    override: Optional[str] = None,
) -> Generation:
    """The generation of a checkpoint from its config.json / generation_config.json dicts (with
    --json-model-override-args already applied to `config`) and its name (hub id or path)."""
    vocab = int(config.get("vocab_size") or 1 << 62)
    delete_id = _token_id(config, "delete_token_id", vocab)
    split_id = _token_id(config, "split_token_id", vocab)
    block_routing = config.get("expert_capacity") is not None
    if (delete_id is None) != (split_id is None):
        raise GenerationError(
            "config.json declares only one of delete_token_id / split_token_id; LLaDA2.2's "
            "Levenshtein editing needs both (published ids 156930 / 156931): pass "
            "--json-model-override-args '{\"delete_token_id\": 156930, \"split_token_id\": 156931}'"
        )
    has_indel = delete_id is not None

    if override is not None:
        override = str(override)
        if override not in GENERATIONS:
            raise GenerationError(
                f"`{OVERRIDE_KEY}` must be one of {', '.join(GENERATIONS)}, got {override!r} "
                "(--json-model-override-args)"
            )
        if override == "2.2" and not has_indel:
            raise GenerationError(
                "llada2_generation 2.2 needs the DELETE / SPLIT token ids: add "
                "\"delete_token_id\" and \"split_token_id\" to --json-model-override-args"
            )

    facts = Facts(generation_config, name or "", override, has_indel, block_routing)
    rule = next(r for r in RULES if r.applies(facts))
    name_ = rule.generation or str(override)
    reason = rule.reason.format(name=os.path.basename((name or "").rstrip("/")), override=override)
    algorithm, preset = DEFAULT_DECODING[rule.decoding or name_]
    knobs = dict(preset)
    return Generation(
        name=name_,
        reason=reason,
        algorithm=algorithm,
        algorithm_config=knobs,
        delete_token_id=delete_id,
        split_token_id=split_id,
        block_routing=block_routing,
    )


def checkpoint_generation(
    model_dir: str, overrides: Optional[Mapping[str, Any]] = None, name: Optional[str] = None
) -> Generation:
    """`detect_generation` for a local checkpoint directory (overrides: the parsed
    --json-model-override-args, applied on top of config.json as SGLang does)."""
    overrides = dict(overrides or {})
    config = _read_json(os.path.join(model_dir, "config.json"))
    config.update({k: v for k, v in overrides.items() if k != OVERRIDE_KEY})
    gen_config = _read_json(os.path.join(model_dir, "generation_config.json"))
    return detect_generation(config, gen_config, name or model_dir, overrides.get(OVERRIDE_KEY))
