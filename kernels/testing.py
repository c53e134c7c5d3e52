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

`graph_hazards(fn)` -- what a forward captured in a CUDA graph must not do: everything `host_syncs`
counts, plus tensors made from host data (`torch.tensor(list)`, `torch.as_tensor(ndarray)`: aten
`lift_fresh`; on a GPU a host-to-device copy, and in a graph the capture-time values replayed
forever) and ops whose output size depends on the data (SYNC_OPS' nonzero / masked_select /
unique, and DATA_DEPENDENT_OPS: repeat_interleave without output_size, bincount, ...). The
recorder sees CPU runs the same way: every op is dispatched whatever the device.
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

__all__ = ["DATA_DEPENDENT_OPS", "HOST_DATA_OPS", "SYNC_METHODS", "SYNC_OPS", "graph_hazards", "host_syncs", "interpreted"]


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
# aten ops that turn host (Python / numpy) data into a tensor: a host-to-device copy on a GPU
HOST_DATA_OPS = frozenset({"aten.lift_fresh", "aten.lift_fresh_copy"})
# aten ops whose output size depends on tensor data (besides SYNC_OPS' nonzero / masked_select / unique)
DATA_DEPENDENT_OPS = frozenset({"aten.repeat_interleave", "aten.bincount", "aten.histc", "aten._unique", "aten.unique_dim"})


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

    def __init__(self, methods: _MethodSyncs, graph: bool = False) -> None:
        super().__init__()
        self.methods = methods
        self.graph = graph  # also record GRAPH hazards (HOST_DATA_OPS, DATA_DEPENDENT_OPS)
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
        elif self.graph and (name in HOST_DATA_OPS or _data_dependent(name, args, kwargs or {})):
            self.names.append(name)
        return func(*args, **(kwargs or {}))


def _data_dependent(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """An op in DATA_DEPENDENT_OPS whose output size is not given by the caller: repeat_interleave
    with tensor repeats and no `output_size` (with it, or with an int repeat, the size is known)."""
    if name not in DATA_DEPENDENT_OPS:
        return False
    if name == "aten.repeat_interleave":
        repeats = args[1] if len(args) > 1 else kwargs.get("repeats", args[0] if args else None)
        return isinstance(repeats, torch.Tensor) and kwargs.get("output_size") is None
    return True


def host_syncs(fn: Callable[[], object]) -> list[str]:
    """Names of the host-synchronising calls made while running `fn()`, one per sync (methods first)."""
    methods = _MethodSyncs()
    ops = _OpSyncs(methods)
    with methods, ops:
        fn()
    return methods.names + ops.names


def graph_hazards(fn: Callable[[], object]) -> list[str]:
    """What `fn()` does that a CUDA-graph capture cannot hold: host syncs (as `host_syncs`), tensors
    made from host data, data-dependent output sizes; one name per occurrence, methods first."""
    methods = _MethodSyncs()
    ops = _OpSyncs(methods, graph=True)
    with methods, ops:
        fn()
    return methods.names + ops.names
