"""What our `LLaDA2MoeModelLM` cannot serve on GPUs, settled at server start-up (resolution step
`handle_dllm_inference`), so that a GPU server either starts safe or refuses with a message that
names the flag to change. CPU runs never show these: our CPU platform turns graph capture off and
runs SGLang's torch-native MoE.

- Prompt (`EXTEND`) forwards are not captured in CUDA graphs. SGLang 0.5.23 captures them by
  default on CUDA with *breakable* graphs (`cuda_graph_config.default_prefill_backend`), which break
  only at `RadixAttention`. Our whole-prompt attention (`LLaDA2Attention._block_causal_extend`) and
  LLaDA2.2's block routing (`routing_blocks`) read per-request lengths on the host
  (`extend_prefix_lens_cpu`) outside RadixAttention, so a replayed graph would reuse the lengths of
  the batch it was captured with. A denoising (`DLLM_EXTEND`) batch the decode graph cannot take
  falls through to the same prefill graph runner (`model_runner.py` `_forward_raw`). SGLang's
  default is turned off with a log line; a backend the user chose is refused. Decode graphs
  (denoising forwards) stay as SGLang resolves them.
- MoE runners whose top-k format our model does not produce are refused when the user chose them
  (and replaced by `triton`, with a warning, when SGLang chose one for the machine): `LLaDA2SparseMoe`
  computes its own routing (sigmoid + expert bias, LLaDA2.2's block routing) and hands `FusedMoE` a
  `StandardTopKOutput`, while SGLang's `TopK.bind_runner_backend` (layers/moe/topk.py) gives some
  runners another format, which those runners expect (e.g. `moe_runner/triton_kernels.py` asserts
  on a TRITON_KERNEL top-k).
- A KV cache under 16 bits is refused when the user asked for it (and `auto` when SGLang chose it): the block-causal attention kernel
  (kernels/block_causal_attention.py) converts a layer's whole KV pool to the query dtype instead
  of gathering the request's keys, and applies no KV scales.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from sglang.srt.server_args import ServerArgs

logger = logging.getLogger("sglang_llada.plugin")

# `--kv-cache-dtype` values that keep 16 or 32 bits per element (`auto` is the model dtype; the
# others are names SGLang or a later release may accept). Anything else, including a dtype added
# later, is refused until the attention kernel gathers and dequantises.
# What replaces a value SGLang itself resolved (not the user) that the model cannot serve.
SAFE_VALUES = {"moe_runner_backend": "triton", "kv_cache_dtype": "auto"}
FULL_PRECISION_KV_DTYPES = frozenset({"auto", "bf16", "bfloat16", "fp16", "float16", "half", "fp32", "float32", "float"})


def apply_model_limits(server_args: ServerArgs, previous: Callable[[ServerArgs], None]) -> None:
    """Resolution step `handle_dllm_inference` (it runs after `handle_cuda_graph_config` and
    `handle_moe_kernel_config`, so the graph config and MoE runner are final): for a LLaDA2
    checkpoint, refuse what our model cannot serve, then turn SGLang's default prompt graph off."""
    previous(server_args)
    from sglang_llada.startup.server_args import serves_llada2

    if not serves_llada2(server_args):
        return
    from sglang.srt.arg_groups.overrides import declare_resolution, resolving_view

    for field, error in (("moe_runner_backend", moe_runner_error(server_args)), ("kv_cache_dtype", kv_cache_dtype_error(server_args))):
        if error is None:
            continue
        value = getattr(resolving_view(server_args), field)
        if not chosen_by(server_args, field, value):
            raise ValueError(error)  # the user's own choice: refused, with what to pass instead
        # SGLang picked it for this machine / checkpoint: serve with what the model can run instead.
        declare_resolution(server_args, "sglang_llada", **{field: SAFE_VALUES[field]})
        logger.warning("sglang-llada: %s %s (SGLang's choice) replaced by %s: %s", field, value, SAFE_VALUES[field],
                       error.split(": ", 1)[1])
    disable_prompt_graphs(server_args)


# -- prompt forwards and CUDA graphs ---------------------------------------------------------------


def prefill_backend_locked(server_args: Any) -> bool:
    """Whether the user chose the prefill graph backend (`parse_cuda_graph_config` records every
    (phase, key) that came from a flag or `--cuda-graph-config` in `_cuda_graph_config_locked`)."""
    from sglang.srt.model_executor.cuda_graph_config import Phase

    return (Phase.PREFILL, "backend") in getattr(server_args, "_cuda_graph_config_locked", set())


def prefill_flag(cfg: Any) -> str:
    """The flag through which the user set the prefill graph backend, for the error message."""
    if cfg.cuda_graph_backend_prefill is not None:
        return f"--cuda-graph-backend-prefill {cfg.cuda_graph_backend_prefill}"
    return "the prefill backend of --cuda-graph-config"


def disable_prompt_graphs(server_args: Any) -> None:
    """Prefill graph backend -> DISABLED when it was SGLang's default; a ValueError naming the flag
    when the user chose a capturing backend. Nothing when no prompt graph is captured."""
    from sglang.srt.arg_groups.overrides import declare_resolution, resolving_view
    from sglang.srt.model_executor.cuda_graph_config import Backend, Phase, with_phase

    cfg = resolving_view(server_args)
    backend = cfg.cuda_graph_config.prefill.backend
    if backend == Backend.DISABLED:
        return
    if prefill_backend_locked(server_args):
        raise ValueError(
            f"sglang-llada: {prefill_flag(cfg)} captures LLaDA2's prompt (EXTEND) forwards in CUDA graphs, which "
            "LLaDA2MoeModelLM does not support: its block-causal prompt attention and LLaDA2.2's block routing read "
            "per-request lengths on the host, outside RadixAttention, and denoising batches the decode graph cannot "
            "take fall through to the prefill graph. Drop that setting (the plugin then leaves prompt forwards "
            "eager) or pass --disable-prefill-cuda-graph; decode CUDA graphs stay on."
        )
    declare_resolution(
        server_args, "sglang_llada", cuda_graph_config=with_phase(cfg.cuda_graph_config, Phase.PREFILL, backend=Backend.DISABLED)
    )
    logger.info(
        "sglang-llada: prefill CUDA graph (SGLang's default '%s') turned off: LLaDA2's prompt forwards read "
        "per-request lengths on the host outside RadixAttention (block-causal attention, block routing) and "
        "cannot be replayed from a graph; decode CUDA graphs (denoising forwards) stay '%s'",
        backend,
        cfg.cuda_graph_config.decode.backend,
    )


# -- MoE runner -----------------------------------------------------------------------------------


def nonstandard_topk_format(backend: Any) -> str | None:
    """The top-k format SGLang's `TopK.bind_runner_backend` (layers/moe/topk.py) gives this runner
    when it is not the standard one our model computes, by SGLang's own `MoeRunnerBackend`
    predicates; None for a runner that takes a standard top-k."""
    if backend.is_triton_kernels():
        return "TRITON_KERNEL"
    if backend.is_flashinfer_trtllm() or backend.is_flashinfer_mxfp4():
        # TopK hands these the router logits only (BYPASSED) and the runner routes by itself,
        # with SGLang's router policy rather than LLaDA2's (block routing included).
        return "BYPASSED"
    return None


def refused_moe_runner_backends() -> tuple[str, ...]:
    """Every built-in `--moe-runner-backend` value our model refuses."""
    from sglang.srt.layers.moe.utils import MoeRunnerBackend

    return tuple(b.value for b in MoeRunnerBackend if nonstandard_topk_format(b) is not None)


def chosen_by(server_args: Any, field: str, value: Any) -> str:
    """A note for the message when resolution, not the user, picked `value` (the record's attribute
    holds the raw input; resolution's declarations are kept beside it)."""
    return "" if getattr(server_args, field, value) == value else " (chosen by SGLang for this checkpoint)"


def moe_runner_error(server_args: Any) -> str | None:
    """Why the resolved `--moe-runner-backend` cannot run our MoE layers, or None."""
    from sglang.srt.arg_groups.overrides import resolving_view
    from sglang.srt.layers.moe.utils import resolve_moe_runner_backend

    value = resolving_view(server_args).moe_runner_backend
    try:
        backend = resolve_moe_runner_backend(value)
    except ValueError:
        return None  # not a runner SGLang knows; it reports that itself
    topk_format = nonstandard_topk_format(backend)
    if topk_format is None:
        return None
    note = chosen_by(server_args, "moe_runner_backend", value)
    fix = "Pass --moe-runner-backend triton" if note else "Use --moe-runner-backend auto or triton"
    return (
        f"sglang-llada: --moe-runner-backend {value}{note} is not supported by LLaDA2MoeModelLM: the model computes "
        "its own top-k (LLaDA2's sigmoid routing with expert bias, LLaDA2.2's block routing) and hands FusedMoE a "
        f"standard top-k, while this runner expects SGLang's TopK to give it a {topk_format} top-k. {fix} "
        f"(refused: {', '.join(refused_moe_runner_backends())})."
    )


# -- KV cache dtype -------------------------------------------------------------------------------


def kv_cache_dtype_error(server_args: Any) -> str | None:
    """Why the resolved `--kv-cache-dtype` cannot be served, or None."""
    from sglang.srt.arg_groups.overrides import resolving_view

    value = str(resolving_view(server_args).kv_cache_dtype)
    if value in FULL_PRECISION_KV_DTYPES:
        return None
    note = chosen_by(server_args, "kv_cache_dtype", value)
    return (
        f"sglang-llada: --kv-cache-dtype {value}{note} is not supported by LLaDA2MoeModelLM yet: its block-causal "
        "prompt attention (kernels/block_causal_attention.py) converts each layer's whole KV pool to the query "
        "dtype instead of gathering the request's keys (a full-pool copy per layer and forward) and applies no "
        "KV scales. Drop --kv-cache-dtype (auto) or pass --kv-cache-dtype bf16."
    )
