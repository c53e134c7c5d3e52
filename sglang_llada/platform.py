"""A torch-native CPU platform for SGLang, so the stock server runs where no accelerator exists.

SGLang 0.5.23's own CPU engine (`SGLANG_USE_CPU_ENGINE=1`) needs a CPU build of `sgl_kernel`
that is not published, so on a laptop or a CI machine SGLang cannot start at all. This
platform keeps every kernel on plain PyTorch: torch-native attention, no Triton, no graph
capture, gloo for tensor parallelism.

`activate()` is the `sglang.srt.platforms` entry point. It returns None (= "not this machine")
whenever an accelerator is present or SGLang's own CPU engine was asked for, so GPU hosts are
untouched.
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

PLATFORM_CLASS = "sglang_llada.platform.TorchCpuPlatform"
DEFAULT_CPU_MAX_TOTAL_TOKENS = 131072


def _has_accelerator() -> bool:
    import torch

    if torch.cuda.is_available():  # CUDA and ROCm
        return True
    for name in ("xpu", "npu", "mps"):
        backend = getattr(torch, name, None)
        is_available = getattr(backend, "is_available", None)
        if callable(is_available) and is_available():
            return True
    return False


def activate() -> str | None:
    """Entry point: the platform class path on an accelerator-less host, else None."""
    if os.environ.get("SGLANG_USE_CPU_ENGINE", "0") == "1":
        return None  # the user asked for SGLang's own (sgl_kernel) CPU engine
    if _has_accelerator():
        return None
    return PLATFORM_CLASS


def _split_cores(num_ranks: int) -> str:
    """`SGLANG_CPU_OMP_THREADS_BIND` value giving each rank an equal, disjoint set of cores."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cores:
        cores = list(range(os.cpu_count() or 1))
    groups: list[str] = []
    per_rank = max(1, len(cores) // num_ranks)
    for rank in range(num_ranks):
        chunk = cores[rank * per_rank : (rank + 1) * per_rank] or [cores[rank % len(cores)]]
        groups.append(",".join(str(c) for c in chunk))
    return "|".join(groups)


def _make_platform_class() -> type:
    # Imported lazily: the entry point module must stay import-light, and these classes
    # only exist once SGLang itself is importable.
    from sglang.srt.platforms.cpu import CpuDeviceMixin
    from sglang.srt.platforms.device_mixin import PlatformEnum
    from sglang.srt.platforms.interface import PlatformCapabilities, SRTPlatform

    class _TorchCpuPlatform(CpuDeviceMixin, SRTPlatform):
        _enum = PlatformEnum.OOT
        device_name = "cpu"
        device_type = "cpu"
        # Everything off: no Triton launches, no graph capture, no pynccl.
        capabilities = PlatformCapabilities()

        def get_default_attention_backend(self) -> str:
            return "torch_native"

        def is_pin_memory_available(self, device: Any = None) -> bool:
            return False

        def apply_server_args_defaults(self, server_args: Any) -> None:
            # Runs inside SGLang's resolution pipeline (writes are recorded as declarations).
            if getattr(server_args, "device", None) in (None, "cpu"):
                server_args.device = "cpu"
            if getattr(server_args, "attention_backend", None) is None:
                server_args.attention_backend = "torch_native"
            # No graph capture on CPU. Declared explicitly because SGLang's dLLM resolution
            # switches to FlashInfer whenever the decode graph is left on.
            from sglang.srt.model_executor.cuda_graph_config import Backend, Phase, with_phase

            graphs = server_args.cuda_graph_config
            for phase in (Phase.DECODE, Phase.PREFILL):
                graphs = with_phase(graphs, phase, backend=Backend.DISABLED)
            server_args.cuda_graph_config = graphs
            # An idle scheduler otherwise polls its sockets in a busy loop and holds one core at
            # ~90%; on a 2-core laptop that halves the speed of everything else. SGLang's own
            # IdleSleeper blocks in zmq.Poller instead (wakes on the first message, no added latency).
            server_args.sleep_on_idle = True
            if getattr(server_args, "max_total_tokens", None) is None:
                # SGLang sizes the KV pool from free host RAM (15 GB on a 24 GB laptop), which
                # takes seconds to allocate and starves a second server. Cap it; the user
                # can raise it with --max-total-tokens.
                server_args.max_total_tokens = DEFAULT_CPU_MAX_TOTAL_TOKENS
            world = (
                int(getattr(server_args, "tp_size", 1) or 1)
                * int(getattr(server_args, "pp_size", 1) or 1)
                * int(getattr(server_args, "dp_size", 1) or 1)
            )
            if world > 1 and not os.environ.get("SGLANG_CPU_OMP_THREADS_BIND"):
                # SGLang binds one rank per NUMA node unless told otherwise; a laptop has
                # one node, so `--tp 2` would assert. Split the cores instead. Set in the
                # launcher process, before the scheduler ranks are spawned, so they inherit it.
                os.environ["SGLANG_CPU_OMP_THREADS_BIND"] = _split_cores(world)
                logger.info(
                    "sglang-llada CPU platform: %d ranks, SGLANG_CPU_OMP_THREADS_BIND=%s",
                    world,
                    os.environ["SGLANG_CPU_OMP_THREADS_BIND"],
                )

    _TorchCpuPlatform.__name__ = _TorchCpuPlatform.__qualname__ = "TorchCpuPlatform"
    return _TorchCpuPlatform


def __getattr__(name: str) -> Any:
    # `TorchCpuPlatform` is built on first access so that importing this module (done by
    # every SGLang process to call `activate`) does not import SGLang's platform stack.
    if name == "TorchCpuPlatform":
        cls = _make_platform_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
