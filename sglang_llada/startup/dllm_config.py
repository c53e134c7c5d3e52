"""SGLang's dLLM config (`DllmConfig`) and batch size for a LLaDA2 checkpoint.

- AFTER `DllmConfig.from_server_args`: the mask id (and LLaDA2.2's DELETE / SPLIT ids) from the
  checkpoint, the generation's decoding preset under the user's YAML, the serving block checked
  against the checkpoint's attention block, and SGLang's cap of 1 running request lifted;
- AFTER `SchedulerDllmMixin.init_diffusion_llm`: the cap sized from KV memory as for
  autoregressive models (batching on by default).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sglang_llada.startup.server_args import checkpoint_generation_of, is_llada2, override_args

if TYPE_CHECKING:
    from sglang.srt.dllm.config import DllmConfig
    from sglang.srt.managers.scheduler import Scheduler
    from sglang.srt.server_args import ServerArgs

logger = logging.getLogger("sglang_llada.plugin")

# Marks a DllmConfig whose running-request limit the scheduler still has to size from memory.
UNSIZED_MAX_RUNNING = 1 << 20


def dllm_config_from_checkpoint(result: DllmConfig | None, server_args: ServerArgs, *args: Any, **kwargs: Any) -> DllmConfig | None:
    """AFTER `DllmConfig.from_server_args`: replace the hard-coded LLaDA2 mask id (and the rest above)."""
    if result is None:
        return None
    from sglang.srt.arg_groups.overrides import resolving_view

    from sglang_llada.startup.checkpoint_tokens import resolve_diffusion_tokens

    cfg = resolving_view(server_args)
    if not is_llada2(cfg.model_path, cfg.revision, bool(cfg.trust_remote_code)):
        return result
    if cfg.max_running_requests is None:
        # SGLang's dLLM default is 1 running request. Lift it here (graph capture and the prefill
        # adder read this object); the scheduler narrows it to its memory-sized limit
        # (size_dllm_batch_from_memory).
        result.max_running_requests = UNSIZED_MAX_RUNNING
    check_block_size(cfg, result.block_size)
    override = override_args(server_args).get("mask_token_id")
    if override is not None:
        result.mask_id = int(override)
    else:
        tokens = resolve_diffusion_tokens(cfg.model_path, cfg.tokenizer_path, cfg.revision)
        result.mask_id = tokens.mask_id
    generation = checkpoint_generation_of(server_args)
    if generation.delete_token_id is not None:
        # SGLang fills these for its JointThresholdInDel only; every algorithm of a 2.2 server
        # needs them (ours keep DELETE / SPLIT out of the text).
        result.delete_token_id = generation.delete_token_id
        result.split_token_id = generation.split_token_id
    if result.algorithm == generation.algorithm and generation.algorithm_config:
        # The generation's preset (e.g. LLaDA2.1's Q mode) under the user's own keys.
        result.algorithm_config = {**generation.algorithm_config, **(result.algorithm_config or {})}
    return result


def check_block_size(cfg: Any, serving_block: int) -> None:
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


def size_dllm_batch_from_memory(result: None, scheduler: Scheduler, *args: Any, **kwargs: Any) -> None:
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


def check_fold_tree(scheduler: Scheduler) -> None:
    """A server whose algorithm folds the KV store (`fold_store`, algorithms/unmask.py) needs a radix
    tree whose `checkpoint` keeps stale blocks out (scheduler/folded_store.py hooks SGLang's two)."""
    config = getattr(scheduler, "dllm_config", None)
    if config is None:
        return
    from sglang.srt.dllm.algorithm import get_algorithm_cls

    folds = getattr(get_algorithm_cls(config.algorithm), "folds", None)
    if folds is None or not folds(config.algorithm_config):
        return
    from sglang.srt.mem_cache.radix_cache import RadixCache
    from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache

    tree = getattr(scheduler, "tree_cache", None)
    if tree is not None and type(tree) not in (RadixCache, UnifiedRadixCache):
        raise ValueError(
            f"dLLM algorithm {config.algorithm} with fold_store needs SGLang's RadixCache or "
            f"UnifiedRadixCache, not {type(tree).__name__} (it would publish blocks whose KV is not final); "
            "set fold_store: off in --dllm-algorithm-config"
        )
    logger.info("sglang-llada: %s folds each finished block's KV store into the next block's forward", config.algorithm)


def init_diffusion_llm_after(result: None, scheduler: Scheduler, *args: Any, **kwargs: Any) -> None:
    """AFTER `SchedulerDllmMixin.init_diffusion_llm`: batch sizing, then the fold_store tree check."""
    size_dllm_batch_from_memory(result, scheduler, *args, **kwargs)
    check_fold_tree(scheduler)
    return None
