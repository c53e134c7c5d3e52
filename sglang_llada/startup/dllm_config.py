"""SGLang's dLLM config (`DllmConfig`) and batch size for a LLaDA2 checkpoint.

- AFTER `DllmConfig.from_server_args`: the mask id (and LLaDA2.2's DELETE / SPLIT ids) from the
  checkpoint, the generation's decoding preset under the user's YAML, the serving block checked
  against the checkpoint's attention block, and SGLang's cap of 1 running request lifted;
- AFTER `SchedulerDllmMixin.init_diffusion_llm`: the cap sized from KV memory as for
  autoregressive models (batching on by default), then lowered (an explicit --max-running-requests
  too) until a denoising step's logits fit the free device memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sglang_llada.startup.server_args import LLADA2_ARCH, checkpoint_generation_of, is_llada2, override_args

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


# Share of the device memory still free at start-up (after SGLang loaded the weights, allocated the
# KV pool and captured the graphs) that one denoising step's logits may take. The other half is left
# to the rest of the forward (attention and MoE scratch, the hidden states), communication buffers
# and allocator fragmentation: an OOM in a denoising step kills the server.
STEP_LOGITS_MEMORY_FRACTION = 0.5


@dataclass(frozen=True)
class StepLogitsBytes:
    """What one running request adds to a denoising step's memory, buffer by buffer (bytes). Each
    request's block brings `positions` rows of logits over the whole vocabulary."""

    fp32_logits: int  # LogitsProcessor's full_logits [positions, V], cast to fp32
    fp32_scratch: int  # one fp32 copy of them: logit_bias / penalties or the banned-column copy (algorithms/base.py)
    lm_head_output: int  # the LM head's [positions, V] in the model dtype, alive while it is cast
    lm_head_shard: int  # with --tp > 1: each rank's [positions, V / tp] before the all-gather
    vocab_vectors: int  # per-request [V] vectors: penalty counts (int32) and their copy, logit_bias (fp32)

    @property
    def total(self) -> int:
        return self.fp32_logits + self.fp32_scratch + self.lm_head_output + self.lm_head_shard + self.vocab_vectors


def step_logits_bytes(positions: int, vocab: int, model_itemsize: int, tp_size: int = 1) -> StepLogitsBytes:
    """Per-request bytes of a denoising step's logits, counted conservatively (all buffers alive at once)."""
    rows = positions * vocab
    return StepLogitsBytes(
        fp32_logits=rows * 4,
        fp32_scratch=rows * 4,
        lm_head_output=rows * model_itemsize,
        lm_head_shard=positions * -(-vocab // tp_size) * model_itemsize if tp_size > 1 else 0,
        vocab_vectors=vocab * (4 + 4 + 4),
    )


def positions_per_request(config: DllmConfig) -> int:
    """Logit rows one request adds to a forward: one block, or for llada2_exact the `draft_depth`
    states of its block that a verification forward runs at once: the deepest a request may ask for
    in custom_params (the knob's maximum) when that exceeds the server's value, so that no request
    mix can exceed the bound."""
    from sglang_llada.algorithms.exact import DRAFT_DEPTH, ExactAlgorithm

    blocks = 1
    if config.algorithm == ExactAlgorithm.NAME:
        server = int((config.algorithm_config or {}).get(DRAFT_DEPTH.name, DRAFT_DEPTH.default))
        blocks = max(server, int(DRAFT_DEPTH.high or server))
    return int(config.block_size) * max(1, blocks)


def free_device_bytes(scheduler: Scheduler) -> int:
    """Device memory free now on this rank's device, the minimum over the TP ranks (their schedulers
    must agree on the limit). SGLang's `get_available_gpu_memory` answers in GiB; on our CPU platform
    it reads host memory."""
    from sglang.srt.utils import get_available_gpu_memory

    runner = scheduler.tp_worker.model_runner
    tp_size = int(getattr(scheduler, "tp_size", 1) or 1)
    free_gib = get_available_gpu_memory(
        runner.device, runner.gpu_id, distributed=tp_size > 1, cpu_group=getattr(scheduler, "tp_cpu_group", None)
    )
    return int(free_gib * (1 << 30))


def memory_bounded_limit(wanted: int, per_request: int, budget: int) -> int:
    """`wanted` running requests, fewer if their step logits exceed `budget`; never under 1."""
    return max(1, min(wanted, budget // max(1, per_request)))


def _size(n: int) -> str:
    """Bytes for a log line: GiB, MiB or KiB, whichever reads as a number >= 1."""
    for unit, shift in (("GiB", 30), ("MiB", 20)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.2f} {unit}"
    return f"{n / 1024:.1f} KiB"


def serves_llada2_model(scheduler: Scheduler) -> bool:
    hf_config = getattr(getattr(scheduler, "model_config", None), "hf_config", None)
    return LLADA2_ARCH in (getattr(hf_config, "architectures", None) or [])


def size_dllm_batch_from_memory(result: None, scheduler: Scheduler, *args: Any, **kwargs: Any) -> None:
    """AFTER `SchedulerDllmMixin.init_diffusion_llm` (the KV pool is allocated and graphs captured by
    then): the running-request limit of a LLaDA2 server. Without --max-running-requests it is what
    SGLang sizes for an autoregressive model from the KV memory (`scheduler.max_running_requests`);
    either way it is lowered until one denoising step's logits fit STEP_LOGITS_MEMORY_FRACTION of the
    free device memory. Requests join and leave between denoising rounds."""
    import torch

    config = getattr(scheduler, "dllm_config", None)
    if config is None or not serves_llada2_model(scheduler):
        return None
    explicit = config.max_running_requests != UNSIZED_MAX_RUNNING
    wanted = max(1, int(config.max_running_requests if explicit else scheduler.max_running_requests))
    model_config = scheduler.model_config
    positions = positions_per_request(config)
    itemsize = torch.empty((), dtype=model_config.dtype).element_size()
    step = step_logits_bytes(positions, int(model_config.vocab_size), itemsize, int(getattr(scheduler, "tp_size", 1) or 1))
    free = free_device_bytes(scheduler)
    budget = int(free * STEP_LOGITS_MEMORY_FRACTION)
    limit = memory_bounded_limit(wanted, step.total, budget)
    config.max_running_requests = limit
    scheduler.dllm_manager.max_running_reqs = limit
    numbers = (
        f"each running request adds {_size(step.total)} to a denoising step ({positions} positions x "
        f"{model_config.vocab_size} vocab: fp32 logits {_size(step.fp32_logits)}, fp32 scratch "
        f"{_size(step.fp32_scratch)}, LM-head output {_size(step.lm_head_output + step.lm_head_shard)}); "
        f"budget {_size(budget)} = {STEP_LOGITS_MEMORY_FRACTION:.0%} of {_size(free)} free device memory"
    )
    if budget < step.total:
        logger.warning(
            "sglang-llada: even one running request's denoising step may not fit: %s. Lower "
            "--mem-fraction-static to leave more device memory free", numbers,
        )
    elif explicit and limit < wanted:
        logger.warning(
            "sglang-llada: --max-running-requests %d lowered to %d so that a denoising step's logits fit: %s",
            wanted, limit, numbers,
        )
    source = f"--max-running-requests {wanted}" if explicit else f"{wanted} sized from KV memory"
    lowered = ", lowered so that a denoising step's logits fit" if limit < wanted else ""
    override = "" if explicit else "; --max-running-requests overrides"
    logger.info(
        "sglang-llada: diffusion batching on, up to %d running requests (%s%s%s; %s)", limit, source, lowered, override, numbers
    )
    return None


def check_fold_tree(scheduler: Scheduler) -> None:
    """A server whose algorithm folds the KV store (`fold_store`: the mask-to-token algorithms of
    algorithms/unmask.py and the editing decoders `llada2_edit` / `llada2_levenshtein`,
    algorithms/folded_check.py) needs a radix tree whose `checkpoint` keeps stale blocks out
    (scheduler/folded_store.py hooks SGLang's two)."""
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


def check_kv_cache_dtype(scheduler: Scheduler) -> None:
    """The KV pool's dtype as SGLang's model runner resolved it, checkpoint quantization included
    (`--kv-cache-dtype auto` becomes fp8 for a checkpoint whose quant config says so, which server
    argument resolution cannot see): under 16 bits is refused, as startup/model_limits.py refuses
    the flag."""
    import torch

    runner = getattr(getattr(scheduler, "tp_worker", None), "model_runner", None)
    dtype = getattr(runner, "kv_cache_dtype", None)
    if not serves_llada2_model(scheduler) or not isinstance(dtype, torch.dtype):
        return
    if torch.empty((), dtype=dtype).element_size() < 2:
        raise ValueError(
            f"sglang-llada: this checkpoint's KV cache resolves to {dtype} (its quantization config), which "
            "LLaDA2MoeModelLM does not support yet: its block-causal prompt attention converts each layer's "
            "whole KV pool to the query dtype and applies no KV scales. Pass --kv-cache-dtype bf16"
        )


def init_diffusion_llm_after(result: None, scheduler: Scheduler, *args: Any, **kwargs: Any) -> None:
    """AFTER `SchedulerDllmMixin.init_diffusion_llm`: the KV dtype check, batch sizing, then the
    fold_store tree check."""
    check_kv_cache_dtype(scheduler)
    size_dllm_batch_from_memory(result, scheduler, *args, **kwargs)
    check_fold_tree(scheduler)
    return None
