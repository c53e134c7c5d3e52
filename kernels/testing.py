"""Helpers shared by the kernel tests and the benches (bench/*_bench.py): run Triton kernels in the interpreter, count host syncs.

`interpreted(kernel_module)` -- why the Triton interpreter is switched on this way: a machine without
a GPU runs the kernels in the Triton interpreter on CPU tensors. Triton 3.8 decides
interpreter-or-compiler when `@triton.jit` decorates a function: `triton.jit` reads
`triton.knobs.runtime.interpret` (the TRITON_INTERPRET environment variable) at that moment and
returns an `InterpretedFunction` instead of a `JITFunction`. That includes triton's own library
helpers (`tl.max`, `tl.sum` are `@jit` functions in triton.language.standard), decorated when triton
is first imported -- in a full test session, by whichever module imports sglang first. Setting the
variable in a test module would therefore work only when that module happens to run first, and
would leak into the servers other tests start. Instead, `interpreted(...)` does what `triton.jit`
does under TRITON_INTERPRET=1, for the duration of a `with` block: it swaps every `JITFunction` of
triton.language(.standard) and of the kernel module for an `InterpretedFunction` of the same Python
function, and restores them afterwards. On a CUDA machine it does nothing, so the same code runs the
compiled kernel on the GPU.

`host_syncs(fn)` -- the kernels and their torch twins promise not to synchronise the host with the
device (no .item(), .tolist(), .cpu(), boolean indexing, nonzero). On CPU nothing is actually
transferred, so the promise cannot be timed; instead `fn` runs under a TorchFunctionMode (tensor
methods that copy data to the host: tolist, item, cpu, numpy, __bool__, ...; invisible to dispatch
on CPU) and a TorchDispatchMode (aten ops that need device data on the host: _local_scalar_dense,
nonzero, masked_select, boolean indexing), and the names of what would synchronise on a GPU are
returned. A sync is counted once: the aten ops under a recorded method (the _local_scalar_dense
under an .item()) are not counted again.
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any, Callable, Iterator, Optional

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

try:  # as in the kernel modules: keep host_syncs importable without triton
    import triton.experimental.gluon  # noqa: F401  (triton imports it lazily at the first launch; it must see the real stdlib)
    import triton.language as tl
    import triton.language.standard as tl_standard
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only on exotic platforms
    HAS_TRITON = False

__all__ = ["SYNC_METHODS", "SYNC_OPS", "host_syncs", "interpreted"]


@contextlib.contextmanager
def interpreted(kernel_module: ModuleType) -> Iterator[None]:
    """Runs `kernel_module`'s Triton kernels in the interpreter (no-op on CUDA: compiled kernels).

    Every attribute it replaces is put back afterwards, including the `triton.language.core` builtins
    that the interpreter itself re-points at its numpy builder and never restores after nested calls.
    (Names the interpreter adds to a module's globals stay: its cached rewritten functions need them.)
    """
    if torch.cuda.is_available():
        yield
        return
    if not HAS_TRITON:
        raise RuntimeError("triton is not installed")
    touched = (tl, tl.core, tl.math, tl_standard, tl.tensor, kernel_module)
    snapshot = [(obj, dict(vars(obj))) for obj in touched]
    twins: dict[int, InterpretedFunction] = {}
    for module in (tl, tl_standard, kernel_module):
        for name, obj in list(vars(module).items()):
            if isinstance(obj, JITFunction):
                setattr(module, name, twins.setdefault(id(obj), InterpretedFunction(obj.fn)))
    try:
        assert not any(isinstance(v, JITFunction) for v in vars(kernel_module).values())
        yield
    finally:
        for obj, attrs in snapshot:
            for name, value in attrs.items():
                if vars(obj).get(name) is not value:
                    setattr(obj, name, value)


# aten ops that make the host wait for device data (aten.item rarely reaches dispatch: it is composite)
SYNC_OPS = frozenset(
    {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.item", "aten._unique2", "aten.unique_consecutive"}
)
# tensor methods / torch functions that copy data to the host
SYNC_METHODS = frozenset({"item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero"})
_INDEX_OPS = frozenset({"aten.index", "aten.index_put", "aten.index_put_"})


class _MethodSyncs(TorchFunctionMode):
    """Records calls named in SYNC_METHODS; `depth` > 0 while a recorded call runs."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.depth = 0

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: Optional[dict[str, Any]] = None
    ) -> Any:
        name = getattr(func, "__name__", "")
        counted = name in SYNC_METHODS and self.depth == 0
        if counted:
            self.names.append(name)
        self.depth += counted  # an item() is one sync, not also the _local_scalar_dense under it
        try:
            return func(*args, **(kwargs or {}))
        finally:
            self.depth -= counted


class _OpSyncs(TorchDispatchMode):
    """Records aten ops in SYNC_OPS and boolean indexing, unless a recorded method is running."""

    def __init__(self, methods: _MethodSyncs) -> None:
        super().__init__()
        self.methods = methods
        self.names: list[str] = []

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Optional[dict[str, Any]] = None
    ) -> Any:
        name = str(func.overloadpacket)
        bool_index = name in _INDEX_OPS and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ())
        )
        if (name in SYNC_OPS or bool_index) and self.methods.depth == 0:
            self.names.append(name)
        return func(*args, **(kwargs or {}))


def host_syncs(fn: Callable[[], object]) -> list[str]:
    """Names of the host-synchronising calls made while running `fn()`, one per sync (methods first)."""
    methods = _MethodSyncs()
    ops = _OpSyncs(methods)
    with methods, ops:
        fn()
    return methods.names + ops.names
