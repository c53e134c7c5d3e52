"""Server-argument resolution steps (`register_resolution_hook`): diffusion decoding on by default
for LLaDA2 checkpoints (and only for them), with the algorithm of the checkpoint's LLaDA2.X
generation and the tool-call parser of its chat template; `--device cpu` implied when our CPU
platform is the active one."""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from sglang.srt.server_args import ServerArgs

    from sglang_llada.startup.generation import Generation

logger = logging.getLogger("sglang_llada.plugin")

LLADA2_ARCH = "LLaDA2MoeModelLM"
MODEL_PACKAGE = "sglang_llada.models"
MODEL_CLASS = f"{MODEL_PACKAGE}.llada2.{LLADA2_ARCH}"
# LLaDA2's chat template writes tool calls as `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>`,
# Qwen 2.5's format, which SGLang's `--tool-call-parser auto` does not recognise in this template.
LLADA2_TOOL_CALL_PARSER = "qwen25"


def default_device_for_cpu_platform(server_args: ServerArgs, previous: Callable[[ServerArgs], None]) -> None:
    """Resolution step `handle_missing_default_values`: `--device cpu` when our platform is active.

    SGLang derives the default device string from the platform *before* it asks the
    platform for its defaults, and an out-of-tree platform answers with a `torch.device`
    where a string is expected; so the default is declared here, ahead of that step.
    """
    from sglang.srt.arg_groups.overrides import declare_resolution, resolving_view

    from sglang_llada.platform import activate

    if resolving_view(server_args).device is None and activate() is not None:
        declare_resolution(server_args, "sglang_llada", device="cpu")
    previous(server_args)


@lru_cache(maxsize=8)
def is_llada2(model_path: str, revision: str | None, trust_remote_code: bool) -> bool:
    """Whether the checkpoint's config names our architecture."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            model_path, revision=revision, trust_remote_code=trust_remote_code
        )
    except Exception:  # not a HF checkpoint we can read; SGLang will report it itself
        return False
    return LLADA2_ARCH in (getattr(config, "architectures", None) or [])


def serves_llada2(server_args: ServerArgs) -> bool:
    from sglang.srt.arg_groups.overrides import resolving_view

    cfg = resolving_view(server_args)
    return cfg.model_path is not None and is_llada2(cfg.model_path, cfg.revision, bool(cfg.trust_remote_code))


def enable_diffusion_by_default(server_args: ServerArgs, previous: Callable[[ServerArgs], None]) -> None:
    """Resolution step `handle_model_source_paths`: a LLaDA2 checkpoint is served as a diffusion LM,
    with its generation's algorithm unless `--dllm-algorithm` is given, and its template's tool-call
    parser unless `--tool-call-parser` is given."""
    previous(server_args)
    from sglang.srt.arg_groups.overrides import declare_resolution, resolving_view

    if not serves_llada2(server_args):
        return
    cfg = resolving_view(server_args)
    generation = checkpoint_generation_of(server_args)
    chosen = cfg.dllm_algorithm  # the user's --dllm-algorithm, if any
    algorithm = chosen
    if algorithm is None:
        algorithm = generation.algorithm
        declare_resolution(server_args, "sglang_llada", dllm_algorithm=algorithm)
    if cfg.tool_call_parser is None:  # OpenAI `tools` give `tool_calls` with no flag
        declare_resolution(server_args, "sglang_llada", tool_call_parser=LLADA2_TOOL_CALL_PARSER)
    logger.info(
        "sglang-llada plugin active: %s served as a diffusion LM by %s, %s; decoding algorithm %s%s",
        cfg.model_path,
        MODEL_CLASS,
        generation.describe(),
        algorithm,
        " (the generation's default; --dllm-algorithm overrides)"
        if chosen is None
        else " (--dllm-algorithm)",
    )


def checkpoint_generation_of(server_args: ServerArgs) -> Generation:
    """The checkpoint's LLaDA2.X generation (generation.py), --json-model-override-args applied; a
    bad override or field is a start-up error that says what to fix."""
    from sglang.srt.arg_groups.overrides import resolving_view

    from sglang_llada.startup.checkpoint_tokens import _local_dir
    from sglang_llada.startup.generation import checkpoint_generation

    cfg = resolving_view(server_args)
    model_dir = _local_dir(cfg.model_path, cfg.revision)
    return checkpoint_generation(model_dir, override_args(server_args), name=cfg.model_path)


def override_args(server_args: ServerArgs) -> dict[str, Any]:
    """`--json-model-override-args` as a dict ({} when absent or not an object)."""
    raw = getattr(server_args, "json_model_override_args", None) or "{}"
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}
