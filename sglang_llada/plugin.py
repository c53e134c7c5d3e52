"""The `sglang.srt.plugins` entry point: what makes stock SGLang serve LLaDA2 as a diffusion model.

SGLang calls `register()` once in every process it starts (launcher, scheduler ranks,
detokenizer), all spawned, so it must be idempotent and import-light: it only records
hooks; SGLang applies them (and imports their targets) right after all plugins ran.

Seams used, all official:
- `transformers.AutoConfig.register`: a config class for `model_type: llada2_moe`;
- `SGLANG_EXTERNAL_MODEL_PACKAGE`: our `LLaDA2MoeModelLM` wins the model registry;
- `register_resolution_hook("handle_model_source_paths")`: diffusion decoding on by
  default for LLaDA2 checkpoints (and only for them), with the decoding algorithm of the
  checkpoint's LLaDA2.X generation (`generation.py`);
- `HookRegistry` AROUND `sglang.srt.dllm.algorithm.get_algorithm_cls`: our decoding algorithms
  (`algorithms/`) are found by name, next to SGLang's own;
- `HookRegistry` AFTER `DllmConfig.from_server_args`: the mask id (and LLaDA2.2's DELETE /
  SPLIT ids) from the checkpoint, the generation's decoding preset, and no cap of 1 running
  request; AFTER `SchedulerDllmMixin.init_diffusion_llm`: the cap sized from
  KV memory as for autoregressive models (batching on by default);
- `HookRegistry` AFTER `TokenizerManager._validate_one_request`: a 400 for requests diffusion
  decoding cannot honour or whose per-request decoding knobs (`custom_params.dllm`) are
  invalid, greedy unless a temperature is given; AFTER `SamplingBatchInfo.from_schedule_batch`:
  each request's knobs on the diffusion batch (`request_policy.py`); in the same AFTER hook, a
  400 for values the scheduler would trust blindly (token ids outside the vocabulary, input_embeds
  of the wrong width, ...: `request_validation.py`);
- `HookRegistry` AROUND `Scheduler.run_batch` / `Scheduler.process_batch_result`: a diffusion batch
  whose forward raises is aborted (its requests get a 500, their KV is freed) and the scheduler
  goes on, instead of the whole server exiting (`request_validation.py`);
- `HookRegistry` BEFORE `process_batch_result_dllm`: output-token logprobs (`logprobs.py`);
- `HookRegistry` AFTER `SamplingBatchInfo.from_schedule_batch`: request seeds reach the
  diffusion sampler (`request_seeds.py`);
- `HookRegistry` on the dLLM run / result / output path: forward counts in `meta_info`
  (see `forward_stats.py`);
- `HookRegistry` on SGLang's prefill adder and dLLM batch builder: every full prompt block in one
  forward (`prefill.py`);
- `HookRegistry` AROUND `SchedulerOutputStreamer.stream_output`: one stream chunk per committed
  block, none while a block is being denoised (`streaming.py`);
- `HookRegistry` AROUND `fused_moe_native.moe_forward_native`: SGLang's CPU MoE path applies
  `routed_scaling_factor` as its GPU runner does (`moe_native_scaling.py`; in-tree MoE classes
  such as the Bailing MoE V2 twin were served with their routed experts scaled by 1 / factor).
"""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from typing import Any, Callable

logger = logging.getLogger(__name__)

LLADA2_ARCH = "LLaDA2MoeModelLM"
MODEL_PACKAGE = "sglang_llada.models"
MODEL_CLASS = f"{MODEL_PACKAGE}.llada2.{LLADA2_ARCH}"
# LLaDA2 paper / reference generation defaults: threshold 0.95 with top-1 fallback, block 32;
# ours runs the step with no host synchronization but the done flags (algorithms/unmask.py).
DEFAULT_ALGORITHM = "llada2_threshold"
DEFAULT_BLOCK_SIZE = 32
# Marks a DllmConfig whose running-request limit the scheduler still has to size from memory.
UNSIZED_MAX_RUNNING = 1 << 20

_registered = False


def register() -> None:
    """Entry point (`sglang.srt.plugins`). Safe to call any number of times."""
    global _registered
    if _registered:
        return
    _registered = True
    _register_hf_config()
    _register_model_package()
    _register_hooks()


def _register_hf_config() -> None:
    from transformers import AutoConfig

    from sglang_llada.configs.llada2 import LLaDA2MoeConfig

    AutoConfig.register(LLaDA2MoeConfig.model_type, LLaDA2MoeConfig, exist_ok=True)


def _register_model_package() -> None:
    # The registry module reads this variable when first imported (in each process, after
    # plugins ran) and then skips importing SGLang's ~250 model modules up front. It
    # swallows import errors of that package, though, and would silently fall back to the
    # in-tree class; the AROUND hook below imports ours directly, so a broken install fails
    # loudly (and still wins when the user set their own external package).
    os.environ.setdefault("SGLANG_EXTERNAL_MODEL_PACKAGE", MODEL_PACKAGE)
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(
        "sglang.srt.models.registry._ModelRegistry.resolve_model_cls",
        _resolve_model_cls_around,
        HookType.AROUND,
    )


def _resolve_model_cls_around(original: Callable[..., Any], self: Any, architectures: Any) -> Any:
    archs = [architectures] if isinstance(architectures, str) else list(architectures or [])
    if archs and archs[0] == LLADA2_ARCH:
        from sglang_llada.models.llada2 import LLaDA2MoeModelLM

        return LLaDA2MoeModelLM, LLADA2_ARCH
    return original(self, architectures)


def _register_hooks() -> None:
    from sglang.srt.arg_groups.resolution_hooks import register_resolution_hook
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    register_resolution_hook("handle_model_source_paths")(_enable_diffusion_by_default)
    register_resolution_hook("handle_missing_default_values")(_default_device_for_cpu_platform)
    HookRegistry.register(
        "sglang.srt.dllm.algorithm.get_algorithm_cls", _get_algorithm_cls_around, HookType.AROUND
    )
    HookRegistry.register(
        "sglang.srt.dllm.config.DllmConfig.from_server_args",
        _dllm_config_from_checkpoint,
        HookType.AFTER,
    )
    HookRegistry.register(
        "sglang.srt.dllm.mixin.scheduler.SchedulerDllmMixin.init_diffusion_llm",
        _size_dllm_batch_from_memory,
        HookType.AFTER,
    )
    from sglang_llada.request_policy import register_hooks as register_request_knobs
    from sglang_llada.request_policy import validate_one_request_after

    register_request_knobs()  # per-request decoding knobs reach the diffusion batch

    HookRegistry.register(
        "sglang.srt.managers.tokenizer_manager.TokenizerManager._validate_one_request",
        validate_one_request_after,
        HookType.AFTER,
    )
    from sglang_llada.forward_stats import register_hooks as register_forward_stats
    from sglang_llada.logprobs import register_hooks as register_logprobs

    register_logprobs()
    from sglang_llada.request_seeds import register_hooks as register_seeds

    register_seeds()
    from sglang_llada.prefill import register_hooks as register_prefill

    register_prefill()
    from sglang_llada.streaming import register_hooks as register_streaming

    register_streaming()
    from sglang_llada.moe_native_scaling import register_hooks as register_moe_native_scaling

    register_moe_native_scaling()
    from sglang_llada.admission import register_hooks as register_admission

    register_admission()
    from sglang_llada.request_validation import register_hooks as register_forward_failure_abort

    register_forward_failure_abort()

    register_forward_stats()


def _default_device_for_cpu_platform(server_args: Any, previous: Callable[[Any], None]) -> None:
    """Resolution step: `--device cpu` implied when our CPU platform is the active one.

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
def _is_llada2(model_path: str, revision: str | None, trust_remote_code: bool) -> bool:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            model_path, revision=revision, trust_remote_code=trust_remote_code
        )
    except Exception:  # not a HF checkpoint we can read; SGLang will report it itself
        return False
    return LLADA2_ARCH in (getattr(config, "architectures", None) or [])


def _enable_diffusion_by_default(server_args: Any, previous: Callable[[Any], None]) -> None:
    """Resolution step: serve LLaDA2 as a diffusion model when no `--dllm-algorithm` is given."""
    previous(server_args)
    from sglang.srt.arg_groups.overrides import declare_resolution, resolving_view

    cfg = resolving_view(server_args)
    if cfg.model_path is None or not _is_llada2(
        cfg.model_path, cfg.revision, bool(cfg.trust_remote_code)
    ):
        return
    generation = _generation(server_args)
    chosen = cfg.dllm_algorithm  # the user's --dllm-algorithm, if any
    algorithm = chosen
    if algorithm is None:
        algorithm = generation.algorithm
        declare_resolution(server_args, "sglang_llada", dllm_algorithm=algorithm)
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


def _generation(server_args: Any) -> Any:
    """The checkpoint's LLaDA2.X generation (sglang_llada/generation.py), --json-model-override-args
    applied; a bad override or field is a start-up error that says what to fix."""
    from sglang.srt.arg_groups.overrides import resolving_view

    from sglang_llada.checkpoint_tokens import _local_dir
    from sglang_llada.generation import checkpoint_generation

    cfg = resolving_view(server_args)
    model_dir = _local_dir(cfg.model_path, cfg.revision)
    return checkpoint_generation(model_dir, _override_args(server_args), name=cfg.model_path)


def _override_args(server_args: Any) -> dict[str, Any]:
    raw = getattr(server_args, "json_model_override_args", None) or "{}"
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _size_dllm_batch_from_memory(result: Any, scheduler: Any, *args: Any, **kwargs: Any) -> None:
    """AFTER `SchedulerDllmMixin.init_diffusion_llm`: as many running requests as SGLang sizes for an
    autoregressive model from the KV memory (`scheduler.max_running_requests`), unless
    --max-running-requests was given. Requests join and leave between denoising rounds."""
    config = getattr(scheduler, "dllm_config", None)
    if config is None or config.max_running_requests != UNSIZED_MAX_RUNNING:
        return None
    limit = max(1, int(scheduler.max_running_requests))
    config.max_running_requests = limit
    scheduler.dllm_manager.max_running_reqs = limit
    logger.info(
        "sglang-llada: diffusion batching on, up to %d running requests (sized from KV memory; "
        "--max-running-requests overrides)", limit,
    )
    return None


def _get_algorithm_cls_around(original: Callable[..., Any], name: str, *args: Any, **kwargs: Any) -> Any:
    """AROUND `sglang.srt.dllm.algorithm.get_algorithm_cls`, SGLang's only algorithm lookup (server
    argument resolution, DllmConfig, request validation): our names resolve to our classes; an
    unknown name gets an error that lists every available one."""
    from sglang_llada.algorithms import CLASS_PATHS, algorithm_class

    if name in CLASS_PATHS:
        return algorithm_class(name)
    try:
        return original(name, *args, **kwargs)
    except RuntimeError as exc:
        from sglang.srt.dllm.algorithm import algo_name_to_cls

        known = ", ".join([*CLASS_PATHS, *sorted(algo_name_to_cls)])
        raise RuntimeError(f"Unknown diffusion LLM algorithm {name!r} (--dllm-algorithm); available: {known}") from exc


def _dllm_config_from_checkpoint(result: Any, server_args: Any, *args: Any, **kwargs: Any) -> Any:
    """AFTER `DllmConfig.from_server_args`: replace the hard-coded LLaDA2 mask id."""
    if result is None:
        return None
    from sglang.srt.arg_groups.overrides import resolving_view

    from sglang_llada.checkpoint_tokens import resolve_diffusion_tokens

    cfg = resolving_view(server_args)
    if not _is_llada2(cfg.model_path, cfg.revision, bool(cfg.trust_remote_code)):
        return result
    if cfg.max_running_requests is None:
        # SGLang's dLLM default is 1 running request. Lift it here (graph capture and the prefill
        # adder read this object); the scheduler narrows it to its memory-sized limit
        # (_size_dllm_batch_from_memory).
        result.max_running_requests = UNSIZED_MAX_RUNNING
    _check_block_size(cfg, result.block_size)
    override = _override_args(server_args).get("mask_token_id")
    if override is not None:
        result.mask_id = int(override)
    else:
        tokens = resolve_diffusion_tokens(cfg.model_path, cfg.tokenizer_path, cfg.revision)
        result.mask_id = tokens.mask_id
    generation = _generation(server_args)
    if generation.delete_token_id is not None:
        # SGLang fills these for its JointThresholdInDel only; every algorithm of a 2.2 server
        # needs them (ours keep DELETE / SPLIT out of the text).
        result.delete_token_id = generation.delete_token_id
        result.split_token_id = generation.split_token_id
    if result.algorithm == generation.algorithm and generation.algorithm_config:
        # The generation's preset (e.g. LLaDA2.1's Q mode) under the user's own keys.
        result.algorithm_config = {**generation.algorithm_config, **(result.algorithm_config or {})}
    return result


def _check_block_size(cfg: Any, serving_block: int) -> None:
    """The serving block must be the checkpoint's attention block: whole-prompt prefill applies
    the checkpoint's block-causal mask, and the model was trained on that block."""
    from transformers import AutoConfig

    from sglang_llada.models.llada2 import model_block_size

    config = AutoConfig.from_pretrained(cfg.model_path, revision=cfg.revision, trust_remote_code=bool(cfg.trust_remote_code))
    model_block = model_block_size(config)
    if serving_block != model_block:
        raise ValueError(
            f"block_size {serving_block} (--dllm-algorithm-config) does not match this LLaDA2 "
            f"checkpoint's attention block {model_block}; remove block_size from the algorithm "
            f"config or set it to {model_block}"
        )
