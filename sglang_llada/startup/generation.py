"""Which LLaDA2.X generation a checkpoint is, and how each generation is decoded by default.

Why this exists: every LLaDA2.X checkpoint has `architectures: ["LLaDA2MoeModelLM"]` and
`model_type: llada2_moe`, but the generations are trained for different decoders:

| generation | trained for                                   | our default `--dllm-algorithm` |
|------------|-----------------------------------------------|--------------------------------|
| 2.0 / CAP  | mask-to-token unmasking                       | `llada2_threshold` (0.95)      |
| 2.1        | + token-to-token editing (S / Q modes)        | `llada2_edit`, mode Q          |
| 2.2        | + Levenshtein editing (DELETE / SPLIT tokens) | `llada2_levenshtein`, mode Q   |

Decoding a 2.2 checkpoint with the 2.0 rule would commit DELETE / SPLIT tokens as text; decoding
a 2.1 checkpoint without editing loses what it was trained for. So the generation is told from
what the checkpoint carries, in this order (the first rule that applies wins):

1. `--json-model-override-args '{"llada2_generation": "2.1"}'` (or "2.0" / "2.2"): the override;
2. config.json declares `delete_token_id` and `split_token_id` -> 2.2 (Levenshtein editing);
3. config.json declares `expert_capacity` (MoE block routing, a 2.2 feature) -> 2.2;
4. generation_config.json carries LLaDA2.1's editing knobs (`editing_threshold` or
   `max_post_steps`, the names of its reference `generate`) -> 2.1;
5. the checkpoint's name (its hub id or directory name) says LLaDA2.1 (`LLaDA2.1-mini`, ...)
   -> 2.1: the published 2.1 config.json is the same schema as 2.0's;
6. otherwise 2.0.

A 2.2 checkpoint without DELETE / SPLIT ids (rule 3 alone) cannot be Levenshtein-decoded: it is
served with token editing (`llada2_edit`), and the log line says so. An explicit
`--dllm-algorithm` always wins over the generation's default.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

GENERATIONS = ("2.0", "2.1", "2.2")
OVERRIDE_KEY = "llada2_generation"
# generation_config.json keys of LLaDA2.1's reference decoder (its `generate(editing_threshold=...,
# max_post_steps=...)`): their presence marks a checkpoint trained for editing.
EDITING_GENERATION_KEYS = ("editing_threshold", "max_post_steps")
_NAME_21 = re.compile(r"llada[-_ ]?2[._-]1(?![0-9])", re.IGNORECASE)


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
        name_, reason = override, f"--json-model-override-args {OVERRIDE_KEY}={override}"
    elif has_indel:
        name_, reason = "2.2", "config.json declares delete_token_id / split_token_id"
    elif block_routing:
        name_, reason = "2.2", "config.json declares expert_capacity (block routing)"
    elif any(k in generation_config for k in EDITING_GENERATION_KEYS):
        name_, reason = "2.1", "generation_config.json carries editing_threshold / max_post_steps"
    elif _NAME_21.search(name or ""):
        name_, reason = "2.1", f"the checkpoint name {os.path.basename(name.rstrip('/'))!r}"
    else:
        name_, reason = "2.0", "no editing fields in the checkpoint"

    if name_ == "2.0":
        algorithm, knobs = "llada2_threshold", {}
    elif name_ == "2.2" and has_indel:
        algorithm, knobs = "llada2_levenshtein", {"mode": "Q"}
    else:
        algorithm, knobs = "llada2_edit", {"mode": "Q"}
        if name_ == "2.2":
            reason += "; no delete_token_id / split_token_id, so token editing without DELETE / SPLIT"
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
