"""Every Triton kernel of kernels/ compiles for sm_80 (A100) and sm_90 (H100) at LLaDA2 sizes, without
spilling registers and within the block's shared memory and register file. Compile only: no GPU needed.

Why here: the other kernel tests run the kernels in the Triton interpreter, which never lowers them to
PTX, so a kernel could pass all of them and still fail to compile, or spill, on a real GPU.

The work is bench/kernel_compile.py's (its docstring says how the launch parameters are captured from the
real launchers under a fake GPU driver); this file runs its CI subset (`Case.quick`: per kernel the
launches with the most register pressure, fp32 and a 16-bit dtype where it matters) for both targets in
one module-scoped sweep, about 20 s on 2 cores. The full sweep (every model, dtype and variant) is
`python bench/kernel_compile.py` -> bench/results/kernel_compile.md.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "kernel_compile.py"


def _load_bench() -> ModuleType:
    """bench/kernel_compile.py as a module (bench/ is not a package, and nothing edits sys.path)."""
    spec = importlib.util.spec_from_file_location("kernel_compile_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


kc = _load_bench()


def _kernels(module: ModuleType) -> list[str]:
    """The launched `@triton.jit` functions of a module: those no other jit function of it calls
    (helpers such as confidence's `_mix32` are inlined into the kernels that call them)."""
    fns = kc.jit_functions(module)
    called = {name for name in fns for other, fn in fns.items() if other != name and re.search(rf"\b{name}\(", fn.src)}
    return [name for name in fns if name not in called]


KERNELS = [(module.__name__.rsplit(".", 1)[1], name) for module in kc.MODULES for name in _kernels(module)]
TARGETS = [kc.target_name(arch) for arch in kc.TARGETS]


@pytest.fixture(scope="module")
def results() -> dict[tuple[str, str], list[Any]]:
    """(kernel, target) -> the compiled launches of the CI subset."""
    out: dict[tuple[str, str], list[Any]] = {}
    for r in kc.sweep([c for c in kc.cases() if c.quick], kc.TARGETS):
        out.setdefault((r.kernel, r.target), []).append(r)
    return out


def _where(r: Any) -> str:
    return f"{r.kernel} {r.target} {r.dtype} {'; '.join(r.configs)} (num_warps {r.num_warps})"


def test_every_kernel_module_is_swept() -> None:
    """A kernel module added to kernels/ must be added to the sweep."""
    kernel_dir = BENCH.parents[1] / "kernels"
    modules = {p.stem for p in kernel_dir.glob("*.py") if re.search(r"^\s*@triton\.jit", p.read_text(), re.MULTILINE)}
    assert modules == {m.__name__.rsplit(".", 1)[1] for m in kc.MODULES}
    assert len(KERNELS) == 6, KERNELS  # attention, confidence, select_commit, logit_adjust, block routing x 2


def test_launches_are_captured_from_the_launchers() -> None:
    """The fake driver yields what the launchers pass on a GPU, and leaves triton's driver as it was."""
    saved = kc.driver._active
    model = kc.FLASH_22
    with kc.fake_gpu(90) as launches:
        kc._confidence(model, kc.DTYPES["bf16"], "filtered")()
        kc._block_route(model, kc.DTYPES["fp32"])()
    assert kc.driver._active is saved
    conf, admit, choose = launches
    named = lambda launch: {launch.fn.arg_names[k[0]]: v for k, v in launch.constexprs.items()}  # noqa: E731
    assert named(conf) == {"BLOCK_V": 4096, "MAY_SAMPLE": True, "HAS_CUT": True}
    assert conf.signature["logits_ptr"] == "*bf16" and conf.options.num_warps == 8 and not conf.options.enable_fp_fusion
    assert conf.options.arch == "sm90"
    # libdevice's exp, as on a GPU; 32 tokens x 256 experts per tile; stride_e == 1 is specialised
    assert named(admit) == {"USE_LIBDEVICE": True, "BLOCK_T": 32, "BLOCK_E": 256, "stride_e": 1}
    assert named(choose) == {"K": 8, "USE_LIBDEVICE": True, "BLOCK_C": 64, "stride_e": 1}
    assert (admit.options.num_warps, choose.options.num_warps) == (4, 2)


def test_ptxas_log_is_parsed() -> None:
    log = (
        "ptxas info    : Function properties for k\n"
        "    88 bytes stack frame, 88 bytes spill stores, 88 bytes spill loads\n"
        "ptxas info    : Used 255 registers, used 1 barriers, 448 bytes cmem[0]\n"
    )
    assert kc.parse_ptxas(log) == {"registers": 255, "stack": 88, "spill_stores": 88, "spill_loads": 88}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("module, kernel", KERNELS)
def test_compiles(results: dict[tuple[str, str], list[Any]], module: str, kernel: str, target: str) -> None:
    rs = results.get((kernel, target), [])
    assert rs, f"the CI subset compiles no launch of {module}.{kernel} for {target}"
    for r in rs:
        assert r.error is None, f"{_where(r)}: {r.error}"
        assert r.registers is not None and r.shared is not None, f"{_where(r)}: no ptxas report"


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("module, kernel", KERNELS)
def test_no_register_spills(results: dict[tuple[str, str], list[Any]], module: str, kernel: str, target: str) -> None:
    spilled = [
        f"{_where(r)}: {r.registers} registers, {r.spill_stores} B spill stores / {r.spill_loads} B spill loads"
        for r in results.get((kernel, target), [])
        if r.spills
    ]
    assert not spilled, "\n".join(spilled)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("module, kernel", KERNELS)
def test_fits_the_block_limits(results: dict[tuple[str, str], list[Any]], module: str, kernel: str, target: str) -> None:
    """Shared memory within the block's opt-in maximum, registers x threads within the register file."""
    over = [f"{_where(r)}: {why}" for r in results.get((kernel, target), []) for why in kc.over_limits(r)]
    assert not over, "\n".join(over)
