"""Every SGLang seam the plugin uses, as data: target, kind, our function, the stage it serves, why.

`install()` (called by `plugin.register()` in every SGLang process) installs the rows SGLang applies
at start-up: hook-registry hooks, resolution steps, the HF config and the model-package variable.
Entry points are declared in pyproject.toml and the frontend template is registered by
`import sglang_llada.frontend` in a client; their rows are here so the table is complete.
`python -m sglang_llada.seams` prints the table as Markdown (docs/structures.md holds that
output; tests/units/test_seams.py fails when the table, the installed hooks, pyproject.toml, the docs
or SGLang 0.5.23's own functions disagree).

One row per SGLang function: where two concerns meet at one function, one of our functions calls
both, in an order written in its code (scheduler/rounds.py, scheduler/batch_policy.py,
output/batch_result.py). Rows are in the order a /generate request meets them.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable

HOOK_KINDS = ("BEFORE", "AFTER", "AROUND")
INSTALLED_KINDS = (*HOOK_KINDS, "resolution", "config", "env")

_DLLM_MIXIN = "sglang.srt.dllm.mixin.scheduler.SchedulerDllmMixin"
_ADDER = "sglang.srt.managers.schedule_policy.PrefillAdder"
_SCHEDULER = "sglang.srt.managers.scheduler.Scheduler"
_TOKENIZER = "sglang.srt.managers.tokenizer_manager.TokenizerManager"


@dataclass(frozen=True)
class Seam:
    stage: str  # start-up | model | request front end | scheduling | batch results
    kind: str  # BEFORE / AFTER / AROUND (HookRegistry), resolution, config, env, entry point, client import
    target: str  # the SGLang (or transformers) function, step, group or variable
    ours: str  # "module:function" (or the value, for env)
    why: str

    def function(self) -> Callable[..., Any]:
        module, name = self.ours.split(":")
        fn: Callable[..., Any] = getattr(importlib.import_module(module), name)
        return fn


SEAMS: tuple[Seam, ...] = (
    # -- start-up: launcher and every scheduler rank ------------------------------------------------
    Seam("start-up", "entry point", "sglang.srt.plugins", "sglang_llada.plugin:register",
         "SGLang runs it in every process it starts; it calls install()"),
    Seam("start-up", "entry point", "sglang.srt.platforms", "sglang_llada.platform:activate",
         "a torch CPU platform when the machine has no accelerator"),
    Seam("start-up", "config", "transformers.AutoConfig.register", "sglang_llada.configs.llada2:LLaDA2MoeConfig",
         "`model_type: llada2_moe` loads without --trust-remote-code"),
    Seam("start-up", "env", "SGLANG_EXTERNAL_MODEL_PACKAGE", "sglang_llada.models",
         "our LLaDA2MoeModelLM wins SGLang's model registry (unless the user set their own package)"),
    Seam("start-up", "AROUND", "sglang.srt.models.registry._ModelRegistry.resolve_model_cls",
         "sglang_llada.startup.registries:resolve_model_cls_around",
         "imports our class directly, so a broken install fails loudly instead of falling back"),
    Seam("start-up", "resolution", "handle_missing_default_values",
         "sglang_llada.startup.server_args:default_device_for_cpu_platform",
         "--device cpu implied when our CPU platform is active"),
    Seam("start-up", "resolution", "handle_model_source_paths",
         "sglang_llada.startup.server_args:enable_diffusion_by_default",
         "a LLaDA2 checkpoint is served as a diffusion LM, with its generation's algorithm"),
    Seam("start-up", "resolution", "handle_dllm_inference",
         "sglang_llada.startup.model_limits:apply_model_limits",
         "prompt forwards never captured in CUDA graphs; MoE runners and KV dtypes the model cannot serve refused"),
    Seam("start-up", "AROUND", "sglang.srt.dllm.algorithm.get_algorithm_cls",
         "sglang_llada.startup.registries:get_algorithm_cls_around",
         "our algorithm names resolve; an unknown name lists every available one"),
    Seam("start-up", "AFTER", "sglang.srt.dllm.config.DllmConfig.from_server_args",
         "sglang_llada.startup.dllm_config:dllm_config_from_checkpoint",
         "mask / DELETE / SPLIT ids from the checkpoint, the generation's preset, no cap of 1 request"),
    Seam("start-up", "AFTER", f"{_DLLM_MIXIN}.init_diffusion_llm",
         "sglang_llada.startup.dllm_config:init_diffusion_llm_after",
         "running requests sized from KV memory, lowered until a denoising step's logits fit; fold_store's tree checked"),
    Seam("model", "AROUND", "sglang.srt.layers.moe.fused_moe_native.moe_forward_native",
         "sglang_llada.models.moe_native_scaling:scale_routed_output",
         "SGLang's CPU MoE path applies routed_scaling_factor as its GPU runner does (the AR twin)"),
    # -- request front end: TokenizerManager -------------------------------------------------------
    Seam("request front end", "client import", "sglang.lang.chat_template.register_chat_template",
         "sglang_llada.frontend:register",
         "the frontend DSL's LLaDA2 chat template (`import sglang_llada.frontend` in the program)"),
    Seam("request front end", "AFTER", f"{_TOKENIZER}._validate_one_request",
         "sglang_llada.tokenizer.request_checks:validate_one_request_after",
         "400 for what the scheduler would trust blindly or diffusion cannot honour; greedy by default"),
    # -- scheduling: admission, rounds, batches, forward -------------------------------------------
    Seam("scheduling", "AROUND", f"{_DLLM_MIXIN}.process_dllm_incoming_reqs",
         "sglang_llada.scheduler.admission:incoming_around",
         "a refused request is asked again next round; admitted requests' future KV is reserved"),
    Seam("scheduling", "AROUND", f"{_ADDER}.add_one_req", "sglang_llada.scheduler.admission:fits_or_waits",
         "a request whose blocks do not fit beside the reservation waits"),
    Seam("scheduling", "AROUND", f"{_ADDER}._commit_prefill_admission",
         "sglang_llada.scheduler.admission:charge_admitted_future",
         "a newly admitted request's future KV is charged within the round"),
    Seam("scheduling", "AROUND", f"{_ADDER}._get_dllm_extend_len", "sglang_llada.scheduler.prefill:extend_len_around",
         "a new request extends over all its full prompt blocks"),
    Seam("scheduling", "AROUND", f"{_ADDER}._add_dllm_req", "sglang_llada.scheduler.rounds:add_dllm_req_around",
         "prefill charges one block of the round; admission charges the future KV"),
    Seam("scheduling", "AROUND", f"{_ADDER}.add_dllm_staging_req", "sglang_llada.scheduler.prefill:staging_req_around",
         "a continuing prefill extends over its remaining full blocks"),
    Seam("scheduling", "AROUND", f"{_DLLM_MIXIN}._process_dllm_batches",
         "sglang_llada.scheduler.rounds:process_dllm_batches_around",
         "prompt-only rounds run as one EXTEND forward; denoising runs when no prompt fits"),
    Seam("scheduling", "AFTER", "sglang.srt.dllm.mixin.req.ReqDllmMixin._init_fill_ids_for_dllm",
         "sglang_llada.scheduler.prefill:block_offset_after",
         "after a many-block prefill the next block starts at the cached prefix"),
    Seam("scheduling", "AFTER", "sglang.srt.sampling.sampling_batch_info.SamplingBatchInfo.from_schedule_batch",
         "sglang_llada.scheduler.batch_policy:from_schedule_batch_after",
         "each row's decoding knobs, its seed, then its output constraint, on the diffusion batch"),
    Seam("scheduling", "AROUND", f"{_SCHEDULER}.run_batch", "sglang_llada.scheduler.fault_isolation:run_batch_around",
         "a diffusion batch whose forward raises is aborted with 500s; the scheduler goes on"),
    Seam("scheduling", "AROUND", "sglang.srt.managers.tp_worker.TpModelWorker._forward_batch_generation_dllm",
         "sglang_llada.scheduler.folded_store:plan_fold",
         "fold_store: a denoising forward also re-encodes its requests' stale blocks"),
    Seam("scheduling", "AROUND", "sglang.srt.dllm.algorithm.base.DllmAlgorithm.run",
         "sglang_llada.output.forward_stats:run_around",
         "counts the model forwards of each denoising round of SGLang's in-tree algorithms (ours count their own)"),
    # -- batch results and streaming -----------------------------------------------------------------
    Seam("batch results", "AROUND", f"{_SCHEDULER}.process_batch_result",
         "sglang_llada.scheduler.fault_isolation:process_batch_result_around",
         "an aborted batch has no result to process"),
    Seam("batch results", "BEFORE", f"{_DLLM_MIXIN}.process_batch_result_dllm",
         "sglang_llada.output.batch_result:process_batch_result_before",
         "forward counts, settled held blocks, output-token logprobs, traces and stale-block marks, onto each request"),
    Seam("batch results", "AROUND", "sglang.srt.mem_cache.radix_cache.RadixCache.checkpoint",
         "sglang_llada.scheduler.folded_store:checkpoint_around",
         "fold_store: a block whose KV is not final yet never enters the radix tree"),
    Seam("batch results", "AROUND", "sglang.srt.mem_cache.unified_radix_cache.UnifiedRadixCache.checkpoint",
         "sglang_llada.scheduler.folded_store:checkpoint_around",
         "the same for SGLang's default tree"),
    Seam("batch results", "AROUND", f"{_SCHEDULER}.get_output_streamer_class",
         "sglang_llada.output.forward_stats:streamer_class_around",
         "forward counts travel to the tokenizer process as customized info"),
    Seam("batch results", "AROUND",
         "sglang.srt.managers.scheduler_components.output_streamer.SchedulerOutputStreamer.stream_output",
         "sglang_llada.output.streaming:stream_output_around",
         "one stream chunk per committed block, none mid-block"),
    Seam("batch results", "AROUND", f"{_TOKENIZER}.update_request_meta_info",
         "sglang_llada.output.forward_stats:meta_info_around",
         "dllm_forwards / dllm_prefill_forwards / dllm_tokens_per_forward in meta_info"),
)


def installed_seams() -> tuple[Seam, ...]:
    """The rows `install()` installs (the rest are declared elsewhere: pyproject.toml, the client)."""
    return tuple(s for s in SEAMS if s.kind in INSTALLED_KINDS)


def install() -> None:
    """Installs every row of `installed_seams()`. Import-light: SGLang applies the hooks (and imports
    their targets) after all plugins ran; our modules import SGLang lazily inside their functions."""
    from sglang.srt.arg_groups.resolution_hooks import register_resolution_hook
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    for seam in installed_seams():
        if seam.kind in HOOK_KINDS:
            HookRegistry.register(seam.target, seam.function(), HookType[seam.kind])
        elif seam.kind == "resolution":
            register_resolution_hook(seam.target)(seam.function())
        elif seam.kind == "config":
            from transformers import AutoConfig

            config: Any = seam.function()
            AutoConfig.register(config.model_type, config, exist_ok=True)
        elif seam.kind == "env":
            os.environ.setdefault(seam.target, seam.ours)


def markdown_table() -> str:
    """The table as Markdown (docs/structures.md)."""
    rows = ["| # | stage | kind | SGLang target | ours | why |", "|---|---|---|---|---|---|"]
    for i, s in enumerate(SEAMS, 1):
        target = s.target.replace("sglang.srt.", "")
        rows.append(f"| {i} | {s.stage} | {s.kind} | `{target}` | `{s.ours}` | {s.why} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
