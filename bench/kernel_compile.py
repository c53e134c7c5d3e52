"""Every Triton kernel of `kernels/` compiled for sm_80 and sm_90 at LLaDA2 sizes, with ptxas's registers, spills and shared memory.

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python bench/kernel_compile.py
    # writes bench/results/kernel_compile.{json,md}; --targets 90 for one target, --quick for the CI subset

Why: CI has no GPU, and the Triton interpreter that runs the kernel tests (kernels/testing.py) never
lowers a kernel: a kernel can pass every parity test and still fail to compile for a real GPU, spill
registers, or ask for more shared memory than an A100 / H100 block may have. Triton compiles for a
named target on a machine with no GPU, and the wheel ships ptxas, so all of that is checked here
(and, on a representative subset, by tests/kernels/test_kernel_compile.py).

How the configurations are derived (not written by hand): for each LLaDA2 model (2.0-mini, 2.0-flash,
2.2-flash) and each dtype the plugin passes, the real launcher (`*_triton` in kernels/) is called on
meta tensors of the real shapes while triton's active driver is a stand-in that reports the target
GPU. `JITFunction.run` then binds the arguments exactly as it would on that GPU -- pointer dtypes,
integer specialisation (== 1, divisible by 16), the launcher's constexprs, num_warps and compile
options parsed for the target -- and calls `_do_compile`, which is replaced here by a recorder, so
nothing is compiled or launched inside the launcher. Each recorded launch is then compiled with
`triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))` as `_do_compile` would, in a
throw-away cache (always a fresh compile, so the seconds are real), and ptxas's own `-v` log for the
cubin Triton builds (`knobs.nvidia.dump_ptxas_log`) gives registers, spills and stack. Shared memory
is the dynamic shared memory Triton allocates (`metadata.shared`, what the launch requests).
Identical launches (e.g. the confidence kernel of all three models: the same V) are compiled once and
listed with every configuration that produces them.

One input cannot come from a plain meta tensor: block routing picks libdevice's exp when
`router_logits.is_cuda`, so its router logits are a meta tensor that says it is on CUDA. Meta
tensors report address 0, so every pointer is specialised as 16-byte aligned, as CUDA allocations
are. The batch sizes (prompt length, number of blocks) only change the grid, never what is compiled.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import re
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.driver import driver
from triton.runtime.jit import JITFunction

from sglang_llada.kernels import block_causal_attention as bca
from sglang_llada.kernels import block_routing as br
from sglang_llada.kernels import confidence as conf
from sglang_llada.kernels import logit_adjust as la
from sglang_llada.kernels import select_commit as sc

MODULES: tuple[ModuleType, ...] = (bca, conf, sc, la, br)
TARGETS = (80, 90)  # A100 (sm_80) and H100 (sm_90a: Triton compiles sm_90 with the arch-specific features)
# Most dynamic shared memory one block may opt into (CUDA programming guide, compute capabilities table).
MAX_SHARED = {80: 166912, 90: 232448}
REGISTER_FILE = 65536  # 32-bit registers per SM on sm_80 / sm_90: a block needs regs * threads <= this
ALL_KEYS = 1 << 30  # sglang_llada/models/llada2.py: denoising, folded and draft-copy forwards see every key of their row
META = torch.device("meta")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass(frozen=True)
class Model:
    """The sizes that reach a kernel (config.json of each checkpoint; tensor parallel size 1)."""

    name: str
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    experts: int
    top_k: int
    expert_capacity: Optional[int]  # None: no block routing (LLaDA2.0)
    block_size: int
    context_len: int


# /work/shared/reference/llada2-mini/config.json; flash: 4096 hidden, 32 heads, the same vocab and MoE shape.
MINI = Model("LLaDA2.0-mini", 16, 4, 128, 157184, 256, 8, None, 32, 32768)
FLASH = Model("LLaDA2.0-flash", 32, 4, 128, 157184, 256, 8, None, 32, 32768)
# 2.2-flash: flash plus block routing; capacity 48 of 256 experts per 32-token block (../shared/docs/anchors.md).
FLASH_22 = dataclasses.replace(FLASH, name="LLaDA2.2-flash", expert_capacity=48)
MODELS = (MINI, FLASH, FLASH_22)


@dataclasses.dataclass(frozen=True)
class Case:
    """One call of a real launcher: `launch()` runs it on meta tensors (under `fake_gpu`)."""

    module: str
    variant: str  # what the plugin is doing when it makes this call
    model: Model
    dtype: str
    launch: Callable[[], object]
    quick: bool = False  # part of the CI subset (tests/kernels/test_kernel_compile.py)


@dataclasses.dataclass(frozen=True)
class Launch:
    """What `JITFunction.run` hands to `_do_compile`: enough to compile exactly that kernel."""

    fn: Any  # JITFunction
    signature: dict[str, str]
    constexprs: dict[tuple[int, ...], Any]
    attrs: dict[tuple[int, ...], Any]
    options: Any  # the backend's options dataclass (CUDAOptions), parsed for the target

    def key(self) -> str:
        """Identical launches compile to the same kernel (the options include num_warps and the arch)."""
        opts = sorted(vars(self.options).items())
        return repr((self.fn.__name__, sorted(self.signature.items()), sorted(self.constexprs.items()), sorted(self.attrs.items()), opts))


@dataclasses.dataclass
class Result:
    """One compiled kernel for one target; the ptxas and shared-memory fields are None when it failed."""

    kernel: str
    module: str
    configs: list[str]
    target: str
    dtype: str
    num_warps: int
    num_stages: int
    registers: Optional[int]
    spill_stores: Optional[int]  # bytes
    spill_loads: Optional[int]  # bytes
    stack: Optional[int]  # bytes of stack frame (local memory, spill slots included)
    shared: Optional[int]  # bytes of dynamic shared memory the launch requests
    compile_s: float
    constexprs: dict[str, Any]
    signature: dict[str, str]
    error: Optional[str] = None

    @property
    def spills(self) -> Optional[int]:
        return None if self.spill_stores is None or self.spill_loads is None else self.spill_stores + self.spill_loads


# ----------------------------------------------------------------------------------------------
# launches captured from the real launchers
# ----------------------------------------------------------------------------------------------


class _FakeDriver:
    """The part of a triton driver that `JITFunction.run` uses before it compiles. The device is a
    name per target so that each target gets its own binder (`device_caches` is keyed by device)."""

    def __init__(self, arch: int) -> None:
        self.arch = arch
        self.device = f"fake-sm{arch}"

    def get_current_target(self) -> GPUTarget:
        return GPUTarget("cuda", self.arch, 32)

    def get_current_device(self) -> str:
        return self.device

    def get_current_stream(self, device: object = None) -> int:
        return 0


class _CudaMeta(torch.Tensor):
    """A meta tensor that says it is on CUDA: block routing chooses libdevice's exp by `is_cuda`."""

    @property
    def is_cuda(self) -> bool:  # type: ignore[override]
        return True


def jit_functions(module: ModuleType) -> dict[str, Any]:
    """name -> JITFunction of every `@triton.jit` function of a kernel module (kernels and helpers)."""
    return {name: obj for name, obj in vars(module).items() if isinstance(obj, JITFunction)}


@contextlib.contextmanager
def fake_gpu(arch: int) -> Iterator[list[Launch]]:
    """Inside: launching a kernel of MODULES records a `Launch` for `arch` instead of compiling and running it."""
    fake = _FakeDriver(arch)
    fns = [fn for module in MODULES for fn in jit_functions(module).values()]
    launches: list[Launch] = []

    def recorder(fn: Any) -> Callable[..., None]:
        def record(key: Any, signature: Any, device: Any, constexprs: Any, options: Any, attrs: Any, warmup: Any) -> None:
            launches.append(Launch(fn, dict(signature), dict(constexprs), dict(attrs), options))  # None: run() returns before launching

        return record

    # DriverConfig.reset_active() would build the real default driver, which raises on a machine
    # without a GPU; the previous value (None until something needed a driver) is put back instead.
    saved = driver._active
    driver.set_active(fake)
    for fn in fns:
        fn._do_compile = recorder(fn)  # an instance attribute shadows JITFunction._do_compile
    try:
        yield launches
    finally:
        for fn in fns:
            vars(fn).pop("_do_compile", None)
            fn.device_caches.pop(fake.device, None)  # the binder built for the fake target
        driver._active = saved


def _meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device=META)


# Batches: a 1,000-token prompt in one forward (prompt) and 8 requests of one 32-token block each
# (denoising). Only the grid depends on them; they are here so the launchers see plausible shapes.
PROMPT = ([0], [1000])
DENOISE = ([992] * 8, [32] * 8)


def _attention(
    m: Model, dtype: torch.dtype, lens: tuple[list[int], list[int]], block: int, table_width: int,
    table_dtype: torch.dtype = torch.int32, rows_dtype: torch.dtype = torch.int64,
) -> Callable[[], object]:
    """`block_causal_attention_triton` as the model calls it (models/llada2.py `_block_causal_extend` and friends)."""

    def launch() -> object:
        prefix, extend = lens
        t, h, hkv, d = sum(extend), m.heads, m.kv_heads, m.head_dim
        qkv = _meta(t, (h + 2 * hkv) * d, dtype=dtype)  # the fused projection: q is a strided view of it
        q = qkv[:, : h * d].reshape(-1, h, d)
        slots = 65536
        cache = _meta(slots, hkv, d, dtype=dtype)  # the pool converts to q's dtype anyway (fp8 caches too)
        table = _meta(256, table_width, dtype=table_dtype)
        rows = _meta(len(extend), dtype=rows_dtype)
        return bca.block_causal_attention_triton(q, cache, cache, table, rows, prefix, extend, block, d**-0.5)

    return launch


def _confidence(m: Model, dtype: torch.dtype, mode: str) -> Callable[[], object]:
    """`confidence_triton` for a denoising step of 8 blocks; mode: greedy | sampled | filtered
    (algorithms/sampling.py: temperature always comes with seeds and offsets; top-k / top-p / min-p
    add the cut-off)."""

    def launch() -> object:
        n = 8 * m.block_size
        kwargs: dict[str, Any] = {}
        if mode != "greedy":
            kwargs.update(temperature=_meta(n), seeds=_meta(n, dtype=torch.int64), offsets=_meta(n, dtype=torch.int64))
        if mode == "filtered":
            kwargs.update(top_k=_meta(n, dtype=torch.int32), top_p=_meta(n), min_p=_meta(n))
        return conf.confidence_triton(_meta(n, m.vocab, dtype=dtype), _meta(n, dtype=torch.bool), **kwargs)

    return launch


def _select_commit(m: Model, ids_dtype: torch.dtype) -> Callable[[], object]:
    """`select_commit_triton` on 8 blocks; the ids are SGLang's `input_ids` (int64), written in place."""

    def launch() -> object:
        b, s = 8, m.block_size
        return sc.select_commit_triton(
            _meta(b * s, dtype=ids_dtype), _meta(b * s, dtype=torch.int64), _meta(b * s), _meta(b * s, dtype=torch.bool),
            _meta(b), _meta(b, dtype=torch.int32), s,
        )

    return launch


def _logit_adjust(m: Model, dtype: torch.dtype, penalties: bool, bias: bool) -> Callable[[], object]:
    """`logit_adjust_triton` as algorithms/sampling.py calls it (counts int32, self tokens int64, bias fp32)."""

    def launch() -> object:
        b, s, v = 8, m.block_size, m.vocab
        pens = la.Penalties(_meta(b, v, dtype=torch.int32), _meta(b), _meta(b), _meta(b)) if penalties else None
        own = _meta(b * s, dtype=torch.int64) if penalties else None
        return la.logit_adjust_triton(
            _meta(b * s, v, dtype=dtype), _meta(b * s, dtype=torch.bool), s, pens, own, _meta(b, v) if bias else None
        )

    return launch


def _block_route(m: Model, dtype: torch.dtype) -> Callable[[], object]:
    """`block_route_triton` on a prompt forward's per-request blocks (models/llada2.py `routing_blocks`)."""
    assert m.expert_capacity is not None

    def launch() -> object:
        prefix, extend = PROMPT
        logits = _meta(sum(extend), m.experts, dtype=dtype).as_subclass(_CudaMeta)
        starts, token_block = br.request_blocks(prefix, extend, m.block_size, META)
        return br.block_route_triton(logits, _meta(m.experts), starts, token_block, m.block_size, m.expert_capacity, m.top_k)

    return launch


def cases() -> list[Case]:
    """Every launch the plugin makes, per model and dtype (identical ones are compiled once)."""
    out: list[Case] = []
    for m in MODELS:
        for name, dt in DTYPES.items():
            table = m.context_len + 4  # SGLang's req_to_token rows: context + 4 (not a multiple of 16)
            copies = 1024 + m.block_size  # draft copies' compact table: longest prefix + S (here a multiple of 16)
            out += [
                Case("block_causal_attention", f"prompt, S={m.block_size}", m, name,
                     _attention(m, dt, PROMPT, m.block_size, table), quick=name in ("fp32", "bf16") and m is MINI),
                Case("block_causal_attention", "denoise / fold, all keys", m, name, _attention(m, dt, DENOISE, ALL_KEYS, table)),
                Case("block_causal_attention", "draft copies, all keys", m, name, _attention(m, dt, DENOISE, ALL_KEYS, copies)),
                Case("confidence", "greedy", m, name, _confidence(m, dt, "greedy")),
                Case("confidence", "sampled", m, name, _confidence(m, dt, "sampled")),
                Case("confidence", "sampled + top-k/top-p/min-p", m, name, _confidence(m, dt, "filtered"),
                     quick=name in ("fp32", "bf16")),
                Case("logit_adjust", "penalties", m, name, _logit_adjust(m, dt, True, False)),
                Case("logit_adjust", "logit_bias", m, name, _logit_adjust(m, dt, False, True)),
                Case("logit_adjust", "penalties + logit_bias", m, name, _logit_adjust(m, dt, True, True), quick=name == "bf16"),
            ]
            if m.expert_capacity is not None:
                out.append(Case("block_routing", f"capacity {m.expert_capacity}, top-{m.top_k}, S={m.block_size}", m, name,
                                _block_route(m, dt), quick=name == "fp32"))
        # The launcher takes the ids' dtype as given: SGLang's int64, and int32.
        for ids in (torch.int64, torch.int32):
            out.append(Case("select_commit", f"S={m.block_size}", m, f"{str(ids)[6:]} ids", _select_commit(m, ids),
                            quick=ids == torch.int64))
        # The attention launcher also takes int64 tables / int32 rows unchanged (the plugin passes int32 / int64).
        for table_dt, rows_dt in ((torch.int64, torch.int64), (torch.int32, torch.int32)):
            label = f"bf16, {str(table_dt)[6:]} table / {str(rows_dt)[6:]} rows"
            out.append(Case("block_causal_attention", f"prompt, S={m.block_size}", m, label,
                            _attention(m, torch.bfloat16, PROMPT, m.block_size, m.context_len + 4, table_dt, rows_dt)))
    return out


# ----------------------------------------------------------------------------------------------
# compiling
# ----------------------------------------------------------------------------------------------

_PTXAS = {
    "registers": re.compile(r"Used (\d+) registers"),
    "stack": re.compile(r"(\d+) bytes stack frame"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
}


def parse_ptxas(log: str) -> dict[str, Optional[int]]:
    """registers, stack, spill_stores, spill_loads from a `ptxas -v` log (one entry function)."""
    found = {k: rx.search(log) for k, rx in _PTXAS.items()}
    return {k: int(mt.group(1)) if mt else None for k, mt in found.items()}


def target_name(arch: int) -> str:
    return f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"  # what Triton hands ptxas as --gpu-name


def compile_launch(launch: Launch, arch: int, cache_dir: str) -> tuple[Any, str, float]:
    """Compiles one recorded launch as `JITFunction._do_compile` would -> (CompiledKernel, ptxas log, seconds)."""
    src = ASTSource(launch.fn, launch.signature, launch.constexprs, launch.attrs)
    log = io.StringIO()
    with knobs.cache.scope(), knobs.compilation.scope(), knobs.nvidia.scope(), contextlib.redirect_stdout(log):
        knobs.cache.dir = cache_dir  # a throw-away cache: nothing lands in ~/.triton
        knobs.compilation.always_compile = True  # a fresh compile every time: real seconds and a ptxas log
        knobs.nvidia.dump_ptxas_log = True  # Triton prints ptxas -v's log of the cubin it builds
        start = time.perf_counter()
        kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=vars(launch.options))
        seconds = time.perf_counter() - start
    return kernel, log.getvalue(), seconds


def _config_label(cases: Sequence[Case]) -> list[str]:
    """'variant [models]' per distinct variant; 'all models' when every model makes the launch."""
    labels: dict[str, list[str]] = {}
    for c in cases:
        models = labels.setdefault(c.variant, [])
        if c.model.name not in models:
            models.append(c.model.name)
    all_models = [m.name for m in MODELS]
    return [f"{v} [{'all models' if ms == all_models else ', '.join(ms)}]" for v, ms in labels.items()]


def capture(selected: Sequence[Case], arch: int) -> list[tuple[Launch, list[Case]]]:
    """Runs each case's launcher under `fake_gpu(arch)` -> distinct launches, each with the cases that make it."""
    unique: dict[str, tuple[Launch, list[Case]]] = {}
    for case in selected:
        with fake_gpu(arch) as launches:
            case.launch()
        if not launches:
            raise RuntimeError(f"{case.module} {case.variant} ({case.model.name}, {case.dtype}) launched no kernel")
        for launch in launches:
            unique.setdefault(launch.key(), (launch, []))[1].append(case)
    return list(unique.values())


def sweep(
    selected: Sequence[Case], targets: Sequence[int], progress: Optional[Callable[[int], Any]] = None
) -> list[Result]:
    """Captures and compiles `selected` for each target. progress(total) returns an object with
    update() / set_postfix_str() (a tqdm bar) or None."""
    work = [(arch, launch, made_by) for arch in targets for launch, made_by in capture(selected, arch)]
    bar = progress(len(work)) if progress else None
    results = []
    with tempfile.TemporaryDirectory(prefix="kernel_compile_") as cache_dir:
        for arch, launch, made_by in work:
            name = launch.fn.__name__
            if bar is not None:
                bar.set_postfix_str(f"{name} {target_name(arch)}")
            opts = launch.options
            result = Result(
                kernel=name, module=made_by[0].module, configs=_config_label(made_by), target=target_name(arch),
                dtype=" / ".join(dict.fromkeys(c.dtype for c in made_by)), num_warps=opts.num_warps, num_stages=opts.num_stages,
                registers=None, spill_stores=None, spill_loads=None, stack=None, shared=None, compile_s=0.0,
                constexprs={launch.fn.arg_names[k[0]]: v for k, v in launch.constexprs.items()},
                signature=dict(launch.signature),
            )
            try:
                kernel, log, seconds = compile_launch(launch, arch, cache_dir)
                ptxas = parse_ptxas(log)
                result.registers, result.stack = ptxas["registers"], ptxas["stack"]
                result.spill_stores, result.spill_loads = ptxas["spill_stores"], ptxas["spill_loads"]
                result.shared, result.compile_s = int(kernel.metadata.shared), round(seconds, 2)
                if result.registers is None:
                    result.error = "no ptxas -v log (registers unknown)"
            except Exception as e:  # recorded, not raised: the sweep reports every failure at once
                result.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:500]
            results.append(result)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return results


def problems(r: Result) -> list[str]:
    """Why a compiled kernel is not fit for its target (empty when it is)."""
    if r.error:
        return [f"does not compile: {r.error}"]
    out = [f"spills {r.spill_stores} B stores / {r.spill_loads} B loads"] if r.spills else []
    return out + over_limits(r)


def over_limits(r: Result) -> list[str]:
    """Why a compiled kernel cannot be launched on its target: more shared memory than a block may opt
    into, or more registers than the SM has for one block of num_warps warps."""
    out = []
    arch = int(r.target[3:5])
    if r.shared is not None and r.shared > MAX_SHARED[arch]:
        out.append(f"needs {r.shared} B shared memory > {MAX_SHARED[arch]}")
    if r.registers is not None and r.registers * r.num_warps * 32 > REGISTER_FILE:
        out.append(f"{r.registers} registers x {r.num_warps * 32} threads > {REGISTER_FILE}")
    return out


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------


def _fmt(x: Optional[int]) -> str:
    return "?" if x is None else str(x)


def md_lines(results: Sequence[Result], meta: dict[str, Any], header: list[str]) -> list[str]:
    lines = list(header)
    lines.append(
        meta["machine_sentence"] + f"triton {meta['triton']}, ptxas {meta['ptxas']}. "
        f"{meta['cases']} launcher calls per target gave {meta['launches']} distinct kernels over "
        f"{' and '.join(meta['targets'])}, compiled in {meta['total_s']} s in all (no GPU: compile only)."
    )
    lines += ["", "Configurations: " + meta["models"], ""]
    lines += ["## Summary: most registers per kernel and target", "", "| kernel | target | max registers | max spills B (st + ld) | max shared B | problems |",
              "|---|---|---:|---:|---:|---|"]
    # Grouped by kernel (in launcher order), then target; within a group, in launcher order (a stable sort).
    first_seen = {k: i for i, k in enumerate(dict.fromkeys(r.kernel for r in results))}
    ordered = sorted(results, key=lambda r: (first_seen[r.kernel], r.target))
    by_kernel: dict[tuple[str, str], list[Result]] = {}
    for r in ordered:
        by_kernel.setdefault((r.kernel, r.target), []).append(r)
    for (kernel, target), rs in by_kernel.items():
        regs = [r.registers for r in rs if r.registers is not None]
        shared = [r.shared for r in rs if r.shared is not None]
        bad: dict[str, list[Result]] = {}  # problem -> the launches that have it
        for r in rs:
            for why in problems(r):
                bad.setdefault(why, []).append(r)
        said = [f"{why}: {len(b)} launches ({', '.join(dict.fromkeys(r.dtype for r in b))})" for why, b in bad.items()]
        lines.append(
            f"| {kernel} | {target} | {max(regs) if regs else '?'} | {max(r.spills or 0 for r in rs)} | "
            f"{max(shared) if shared else '?'} | {'<br>'.join(said) or 'none'} |"
        )
    lines += ["", "## Every launch", "",
              "| kernel | config | target | dtype | num_warps | registers | spills (B st / ld) | shared B | compile s |",
              "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in ordered:
        spills = "failed" if r.error else f"{_fmt(r.spill_stores)} / {_fmt(r.spill_loads)}"
        lines.append(
            f"| {r.kernel} | {'<br>'.join(r.configs)} | {r.target} | {r.dtype} | {r.num_warps} | {_fmt(r.registers)} | "
            f"{spills} | {_fmt(r.shared)} | {r.compile_s} |"
        )
    failed = [r for r in results if r.error]
    lines += ["", "Notes:", ""]
    lines.append(
        "- Shared memory is Triton's dynamic allocation (`metadata.shared`); limits: "
        f"{MAX_SHARED[80]} B per block on sm_80, {MAX_SHARED[90]} B on sm_90. Registers and spills: ptxas -v on the "
        "cubin Triton builds (same flags as Triton's own ptxas call)."
    )
    lines.append(
        "- The constexprs, signature and options of each row come from the launcher itself (see the script docstring); "
        "the .json has them per row."
    )
    if failed:
        lines.append(f"- {len(failed)} launches failed to compile: see the table and the .json `error` field.")
    return lines


def _ptxas_version() -> str:
    try:
        from triton.backends.nvidia.compiler import get_ptxas_version

        found = re.search(r"V(\d+\.\d+\.\d+)", str(get_ptxas_version()))  # "... release 12.9, V12.9.86"
    except Exception:  # informative only
        return "?"
    return found.group(1) if found else "?"


def main(argv: Optional[Sequence[str]] = None) -> int:
    # Imported here, not at the top: tests/kernels/test_kernel_compile.py imports this file as a module,
    # without bench/ on sys.path, and the GPU check machine may lack tqdm.
    import _timing  # bench/_timing.py: this script's folder is sys.path[0]
    from tqdm import tqdm

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", type=Path, default=_timing.RESULTS / "kernel_compile",
                        help="results prefix: <out>.json and <out>.md (default bench/results/kernel_compile)")
    parser.add_argument("--targets", type=int, nargs="+", default=list(TARGETS), choices=TARGETS,
                        help="compute capabilities to compile for (default: 80 90)")
    parser.add_argument("--quick", action="store_true", help="only the CI subset (tests/kernels/test_kernel_compile.py)")
    args = parser.parse_args(argv)

    selected = [c for c in cases() if c.quick or not args.quick]
    start = time.perf_counter()
    results = sweep(selected, args.targets, progress=lambda n: tqdm(total=n, desc="compiling", unit="kernel"))
    total = round(time.perf_counter() - start, 1)

    meta: dict[str, Any] = {
        **_timing.machine_meta(),
        "triton": triton.__version__,
        "ptxas": _ptxas_version(),
        "targets": [target_name(a) for a in args.targets],
        "cases": len(selected),
        "launches": len(results),
        "total_s": total,
        "models": "; ".join(
            f"{m.name}: {m.heads} heads / {m.kv_heads} KV heads x {m.head_dim}, V {m.vocab}, {m.experts} experts top-{m.top_k}"
            + (f", block routing capacity {m.expert_capacity}" if m.expert_capacity else "") + f", block {m.block_size}"
            for m in MODELS
        ) + "; tensor parallel size 1; dtypes fp32 / bf16 / fp16 for logits, q/k/v and router logits.",
    }
    meta["machine_sentence"] = _timing.machine_sentence(meta)
    header = _timing.md_header("Triton kernels compiled for sm_80 / sm_90 at LLaDA2 sizes: registers, spills, shared memory", meta)
    rows = [{**dataclasses.asdict(r), "spills": r.spills, "problems": problems(r)} for r in results]
    for row in rows:
        row["constexprs"] = {k: repr(v) for k, v in row["constexprs"].items()}
    _timing.write_results(args.out, meta, rows, md_lines(results, meta, header))
    bad = [r for r in results if problems(r)]
    for r in bad:
        print(f"PROBLEM {r.kernel} {r.target} {r.dtype} {r.configs}: {problems(r)}", file=sys.stderr)
    print(f"{len(results)} kernels compiled in {total} s; {len(bad)} with problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
