"""SGLang's two name lookups that must find our classes: the model registry (architecture name ->
model class) and the dLLM algorithm lookup (`--dllm-algorithm` name -> algorithm class)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from sglang_llada.startup.server_args import LLADA2_ARCH

if TYPE_CHECKING:
    from sglang.srt.models.registry import _ModelRegistry


def resolve_model_cls_around(original: Callable[..., Any], self: _ModelRegistry, architectures: Any) -> Any:
    """AROUND `_ModelRegistry.resolve_model_cls`: `LLaDA2MoeModelLM` is ours.

    `SGLANG_EXTERNAL_MODEL_PACKAGE` (set by plugin.py) already makes our class win the registry, but
    the registry swallows import errors of that package and would silently fall back to the in-tree
    class; importing ours here makes a broken install fail loudly (and still wins when the user set
    their own external package)."""
    archs = [architectures] if isinstance(architectures, str) else list(architectures or [])
    if archs and archs[0] == LLADA2_ARCH:
        from sglang_llada.models.llada2 import LLaDA2MoeModelLM

        return LLaDA2MoeModelLM, LLADA2_ARCH
    return original(self, architectures)


def get_algorithm_cls_around(original: Callable[..., Any], name: str, *args: Any, **kwargs: Any) -> Any:
    """AROUND `sglang.srt.dllm.algorithm.get_algorithm_cls`, SGLang's only algorithm lookup (server
    argument resolution, DllmConfig, request validation): our names resolve to our classes; an
    unknown name gets an error that lists every available one."""
    from sglang_llada.algorithms import algorithm_class, decoder_paths

    if name in decoder_paths():
        return algorithm_class(name)
    try:
        return original(name, *args, **kwargs)
    except RuntimeError as exc:
        from sglang.srt.dllm.algorithm import algo_name_to_cls

        known = ", ".join([*decoder_paths(), *sorted(algo_name_to_cls)])
        raise RuntimeError(f"Unknown diffusion LLM algorithm {name!r} (--dllm-algorithm); available: {known}") from exc
