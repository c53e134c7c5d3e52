"""GPU check of every kernel in one call: Triton kernel vs torch twin (same answers, times) at LLaDA2 sizes.

    python bench/gpu_check.py --out $OUT/gpu_check        # the lent GPU machine (device tool); files come back from $OUT
    python bench/gpu_check.py                             # any CUDA machine: bench/results/gpu_check.{json,md}
    python bench/gpu_check.py --device cpu --small --no-tests --out /tmp/gpu_check   # smoke run without a GPU

Why one script: a GPU is lent to few sessions, for minutes, on a machine that has torch and triton but
neither SGLang nor a package registry, and receives only the source tree. So this script needs nothing
else: it imports the kernels from the tree (`kernels/` as `sglang_llada.kernels`, as the installed
package maps it), then
1. runs the kernel parity tests (tests/kernels, in-process with pytest when pytest is there; the few
   tests that compare with SGLang's own kernels skip without SGLang), and
2. for each op, runs the Triton kernel and the torch twin on the same inputs at LLaDA2 sizes
   (V = 157,184; 1 / 8 / 32 blocks of 32 positions; E = 256 experts, top-8, capacity 48 for block
   routing; block-causal attention in fp16 and bf16 at 16 / 4 heads x 128), checks that they agree
   (exactly where the contract says so, else the largest difference) and times both (median of
   --reps after --warmup, CUDA-synchronised);
3. where SGLang is importable, runs the model-level GPU-path comparison of
   sglang_llada/testing/gpu_path.py (ours vs SGLang's in-tree class vs the fp32 reference, tiny 2.0
   and 2.2 checkpoints); the lent machine has no SGLang, so there it says "not run".
Exit status 1 when a parity test fails, an op disagrees or the model comparison fails, so the one
call says pass or fail.

With --device cpu the Triton kernels run in the Triton interpreter (kernels/testing.py `interpreted`):
the agreement checks hold, the times mean nothing (tests/units/test_gpu_check.py runs it that way).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]


def import_kernels() -> None:
    """`sglang_llada.kernels` from the installed package, else from this source tree: the tree's
    `sglang_llada` package with the repository root added to its search path, so that its `kernels`
    subpackage is the top-level `kernels/` folder (what pyproject's package-dir does at install)."""
    try:
        importlib.import_module("sglang_llada.kernels.confidence")
        return
    except ImportError:
        pass
    sys.path.insert(0, str(ROOT))
    package = importlib.import_module("sglang_llada")
    package.__path__.append(str(ROOT))
    importlib.import_module("sglang_llada.kernels.confidence")


import_kernels()

import _timing  # noqa: E402  (bench/_timing.py: this script's folder is sys.path[0])
import step_bench  # noqa: E402  (its SGLang rows import SGLang lazily; its batch needs only torch)
import torch  # noqa: E402

from sglang_llada.kernels import block_causal_attention as bca  # noqa: E402
from sglang_llada.kernels import block_routing as br  # noqa: E402
from sglang_llada.kernels import confidence as conf  # noqa: E402
from sglang_llada.kernels import logit_adjust as la  # noqa: E402
from sglang_llada.kernels import select_commit as sc  # noqa: E402
from sglang_llada.kernels.testing import interpreted  # noqa: E402

BLOCK = 32
EXPERTS, TOP_K, CAPACITY = 256, 8, 48


@contextlib.contextmanager
def triton_on(device: torch.device, *modules: ModuleType) -> Iterator[None]:
    """Nothing on CUDA; the Triton interpreter for these kernel modules on CPU."""
    with contextlib.ExitStack() as stack:
        if device.type != "cuda":
            for module in modules:
                stack.enter_context(interpreted(module))
        yield


def timed(run: Callable[[], Any], device: torch.device, args: Any) -> float:
    ms, _ = _timing.median_ms(run, device, args.reps, args.warmup, digits=3)
    return round(ms, 3)


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------


def step_inputs(b: int, vocab: int, device: torch.device) -> dict[str, torch.Tensor]:
    """step_bench's batch (B blocks of 32, about 60% masked, a confident token on a third of the rows)
    plus the mask flags and a top-k of 50."""
    batch = step_bench.make_batch(b, vocab, device)
    n = b * BLOCK
    return {**batch, "is_masked": batch["input_ids"] == step_bench.MASK_ID,
            "top_k": torch.full((n,), 50, dtype=torch.int32, device=device)}


# ----------------------------------------------------------------------------------------------
# checks: each returns result rows; a row's "ok" says whether the kernel agrees with its twin
# ----------------------------------------------------------------------------------------------


def check_confidence(device: torch.device, b: int, vocab: int, args: Any) -> list[dict[str, Any]]:
    x = step_inputs(b, vocab, device)
    rows = []
    cases: list[tuple[str, dict[str, Any]]] = [
        ("greedy", {}),
        ("sampled T=1", {"temperature": x["temperature"], "seeds": x["seeds"], "offsets": x["offsets"]}),
        ("sampled T=1, top-k 50", {"temperature": x["temperature"], "seeds": x["seeds"], "offsets": x["offsets"],
                                   "top_k": x["top_k"]}),
    ]
    for name, kw in cases:
        twin = lambda kw=kw: conf.confidence_torch(x["logits"], x["is_masked"], **kw)  # noqa: E731
        kernel = lambda kw=kw: conf.confidence_triton(x["logits"], x["is_masked"], **kw)  # noqa: E731
        with triton_on(device, conf):
            (t_tok, t_prob), (k_tok, k_prob) = twin(), kernel()
            kernel_ms = timed(kernel, device, args)
        same = (t_tok == k_tok) | ~x["is_masked"]
        prob_err = ((t_prob - k_prob).abs() / t_prob.abs().clamp_min(1e-30)).where(x["is_masked"] & (t_tok == k_tok), 0.0)
        # greedy: identical tokens; sampled: Gumbel ties within an ulp of `log` may differ (module docstring)
        token_match = float(same.float().mean())
        ok = (token_match == 1.0 if name == "greedy" else token_match >= 0.999) and float(prob_err.max()) < 1e-4
        rows.append({
            "op": "confidence", "case": name, "B": b, "V": vocab, "twin_ms": timed(twin, device, args), "kernel_ms": kernel_ms,
            "token_match": round(token_match, 6), "max_rel_prob_err": float(prob_err.max()), "ok": bool(ok),
        })
    return rows


def check_select_commit(device: torch.device, b: int, vocab: int, args: Any) -> list[dict[str, Any]]:
    x = step_inputs(b, vocab, device)
    tok, prob = conf.confidence_torch(x["logits"], x["is_masked"])
    ids = x["input_ids"]
    op = (tok, prob, x["is_masked"], x["threshold"], x["k"], BLOCK)
    twin = lambda: sc.select_commit_torch(ids.clone(), *op)  # noqa: E731
    kernel = lambda: sc.select_commit_triton(ids.clone(), *op)  # noqa: E731
    with triton_on(device, sc):
        a, k = twin(), kernel()
        kernel_ms = timed(kernel, device, args)
    ok = all(torch.equal(u, v) for u, v in zip(a, k))
    return [{"op": "select_commit", "case": "threshold 0.95, top-1 fallback", "B": b, "V": vocab,
             "twin_ms": timed(twin, device, args), "kernel_ms": kernel_ms, "equal": ok, "ok": ok}]


def check_logit_adjust(device: torch.device, b: int, vocab: int, args: Any) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(1)
    n = b * BLOCK
    logits = (torch.randn(n, vocab, generator=g) * 2.0).to(device)
    live = (torch.rand(n, generator=g) < 0.5).to(device)
    counts = torch.randint(0, 3, (b, vocab), dtype=torch.int32, generator=g).to(device)
    pens = la.Penalties(counts, torch.full((b,), 0.5, device=device), torch.full((b,), 0.3, device=device),
                        torch.full((b,), 1.2, device=device))
    own = torch.where(live, torch.randint(0, vocab, (n,), generator=g).to(device), -1)
    bias = torch.zeros(b, vocab, device=device)
    bias[:, :10] = 5.0
    twin = lambda: la.logit_adjust_torch(logits.clone(), live, BLOCK, pens, own, bias)  # noqa: E731
    kernel = lambda: la.logit_adjust_triton(logits.clone(), live, BLOCK, pens, own, bias)  # noqa: E731
    with triton_on(device, la):
        a, k = twin(), kernel()
        kernel_ms = timed(kernel, device, args)
    err = float((a - k).abs().max())
    return [{"op": "logit_adjust", "case": "penalties + logit_bias", "B": b, "V": vocab,
             "twin_ms": timed(twin, device, args), "kernel_ms": kernel_ms, "max_abs_err": err, "ok": err <= 1e-5}]


def check_block_routing(device: torch.device, t: int, args: Any) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(t, EXPERTS, generator=g) * 1.5 + torch.randn(EXPERTS, generator=g) * 0.5).to(torch.bfloat16)
    bias = torch.randn(EXPERTS, generator=g) * 0.05
    logits, bias = logits.to(device), bias.to(device)
    starts, blocks = br.flat_blocks(t, BLOCK, device)
    op = (logits, bias, starts, blocks, BLOCK, CAPACITY, TOP_K)
    twin = lambda: br.block_route_torch(*op)  # noqa: E731
    kernel = lambda: br.block_route_triton(*op)  # noqa: E731
    with triton_on(device, br):
        (t_w, t_ids), (k_w, k_ids) = twin(), kernel()
        kernel_ms = timed(kernel, device, args)
    same_ids = bool(torch.equal(t_ids, k_ids))
    err = float((t_w - k_w).abs().max())
    return [{"op": "block_routing", "case": f"E {EXPERTS}, top-{TOP_K}, capacity {CAPACITY}", "T": t,
             "twin_ms": timed(twin, device, args), "kernel_ms": kernel_ms, "same_ids": same_ids, "max_abs_err": err,
             "ok": same_ids and err <= 1e-6}]


def check_block_causal_attention(device: torch.device, dtype: torch.dtype, small: bool, args: Any) -> list[dict[str, Any]]:
    """Whole-prompt attention under the block-causal mask at LLaDA2-mini's heads (16 query / 4 KV,
    head_dim 128): 4 requests with cached prefixes and prompts of several blocks, over a paged pool.
    The interpreter's bf16 tl.dot is wrong (errors of 1e8), so bf16 is checked on CUDA only."""
    if device.type != "cuda" and dtype == torch.bfloat16:
        return [{"op": "block_causal_attention", "case": "bf16", "T": 0, "twin_ms": 0.0, "kernel_ms": 0.0,
                 "skipped": "the Triton interpreter's bf16 tl.dot is wrong; CUDA only", "ok": True}]
    g = torch.Generator().manual_seed(0)
    heads, kv_heads, d = (4, 2, 32) if small else (16, 4, 128)
    prefix_lens, extend_lens = ([0, 32], [64, 40]) if small else ([0, 96, 1024, 32], [512, 1000, 2048, 37])
    slots = sum(p + e for p, e in zip(prefix_lens, extend_lens)) + 64
    k_cache = (torch.randn(slots, kv_heads, d, generator=g)).to(device, dtype)
    v_cache = (torch.randn(slots, kv_heads, d, generator=g)).to(device, dtype)
    width = max(p + e for p, e in zip(prefix_lens, extend_lens))
    req_to_token = torch.zeros(len(prefix_lens) + 1, width, dtype=torch.int32)
    perm = torch.randperm(slots - 1, generator=g)[: sum(p + e for p, e in zip(prefix_lens, extend_lens))] + 1
    at = 0
    for r, (p, e) in enumerate(zip(prefix_lens, extend_lens)):
        req_to_token[r + 1, : p + e] = perm[at : at + p + e].to(torch.int32)  # row 0 unused, as in SGLang
        at += p + e
    req_to_token = req_to_token.to(device)
    rows = torch.arange(1, len(prefix_lens) + 1, dtype=torch.int64, device=device)
    q = torch.randn(sum(extend_lens), heads, d, generator=g).to(device, dtype)
    op = (q, k_cache, v_cache, req_to_token, rows, prefix_lens, extend_lens, BLOCK, d**-0.5)
    twin = lambda: bca.block_causal_attention_torch(*op)  # noqa: E731
    kernel = lambda: bca.block_causal_attention_triton(*op)  # noqa: E731
    with triton_on(device, bca):
        a, k = twin(), kernel()
        kernel_ms = timed(kernel, device, args)
    err = float((a.float() - k.float()).abs().max() / a.float().abs().max())
    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3  # a few ulps of the output's scale
    name = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    return [{"op": "block_causal_attention", "case": f"{name}, {heads}/{kv_heads} heads x {d}", "T": sum(extend_lens),
             "twin_ms": timed(twin, device, args), "kernel_ms": kernel_ms, "max_rel_err": err, "ok": err <= tol}]


def check_model_gpu_path(device: torch.device) -> dict[str, Any]:
    """Where SGLang is importable: sglang_llada/testing/gpu_path.py's model-level comparison (ours vs
    SGLang's in-tree class vs the fp32 reference, tiny 2.0 and 2.2 checkpoints, fp16), in a
    subprocess; on CUDA both classes run their real GPU branches."""
    import importlib.util
    import subprocess
    import tempfile

    if importlib.util.find_spec("sglang") is None:
        return {"ran": False, "why": "SGLang is not installed on this machine"}
    from sglang_llada.toy.checkpoint import write_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(write_tiny_checkpoint(Path(tmp) / g, seed=0, generation=g)) for g in ("2.0", "2.2")]
        out = Path(tmp) / "gpu_path.json"
        proc = subprocess.run([sys.executable, "-m", "sglang_llada.testing.gpu_path", *paths, "--device", device.type,
                               "--json", str(out)], cwd=tmp, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            return {"ran": True, "ok": False, "stderr": proc.stderr[-3000:]}
        results = {Path(k).name: v for k, v in json.loads(out.read_text()).items()}
    bad = {g: {k: v for k, v in r["errors"].items() if v is not None and v > 4e-3 and k != "ours_cpu_vs_reference"}
           for g, r in results.items()}
    ok = not any(bad.values()) and all(r["finite"] and not r["inputs_mutated"] for r in results.values())
    return {"ran": True, "ok": ok, "results": results, "over_tolerance": bad}


# ----------------------------------------------------------------------------------------------
# parity tests
# ----------------------------------------------------------------------------------------------


def run_parity_tests() -> dict[str, Any]:
    """tests/kernels in-process (pytest, if installed): counts and the names of failures."""
    try:
        import pytest
    except ImportError:
        return {"ran": False, "why": "pytest is not installed on this machine"}

    class Tally:
        def __init__(self) -> None:
            self.counts = {"passed": 0, "failed": 0, "skipped": 0}
            self.failures: list[str] = []

        def pytest_collectreport(self, report: Any) -> None:
            if report.failed:  # a test module that does not import counts as a failure
                self.counts["failed"] += 1
                self.failures.append(f"{report.nodeid} (collection)")

        def pytest_runtest_logreport(self, report: Any) -> None:
            if report.when == "call" or report.outcome != "passed":
                self.counts[report.outcome] = self.counts.get(report.outcome, 0) + 1
                if report.outcome == "failed":
                    self.failures.append(report.nodeid)

    tally = Tally()
    code = pytest.main(
        ["-q", "-p", "no:cacheprovider", "--noconftest", "--import-mode=importlib", "-o", "addopts=",
         str(ROOT / "tests" / "kernels")],
        plugins=[tally],
    )
    return {"ran": True, "exit_code": int(code), **tally.counts, "failures": tally.failures}


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------


def md_lines(rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    tests = meta["parity_tests"]
    lines = _timing.md_header("GPU check: Triton kernels vs their torch twins", meta)
    lines.append(_timing.machine_sentence(meta) + f"Median of {meta['reps']} runs after {meta['warmup']} warm-up.")
    lines.append("")
    if tests.get("ran"):
        lines.append(f"Parity tests (tests/kernels): {tests['passed']} passed, {tests['failed']} failed, "
                     f"{tests['skipped']} skipped" + (f"; failed: {', '.join(tests['failures'])}" if tests["failures"] else "") + ".")
    else:
        lines.append(f"Parity tests (tests/kernels): not run ({tests.get('why')}).")
    model = meta["model_gpu_path"]
    if model.get("ran"):
        lines.append(f"Model-level GPU path (sglang_llada/testing/gpu_path.py): {'ok' if model['ok'] else 'FAILED'}"
                     + "".join(f"; {g}: " + ", ".join(f"{k} {v:.2e}" for k, v in r["errors"].items() if v is not None)
                               for g, r in model.get("results", {}).items()) + ".")
    else:
        lines.append(f"Model-level GPU path: not run ({model.get('why')}).")
    lines += ["", "| op | case | size | twin ms | kernel ms | twin / kernel | agreement | ok |", "|---|---|---|---:|---:|---:|---|---|"]
    for r in rows:
        size = f"B {r['B']} x 32, V {r['V']}" if "B" in r else f"T {r['T']}"
        agree = ", ".join(f"{k} {r[k]}" for k in ("token_match", "max_rel_prob_err", "equal", "same_ids", "max_abs_err", "max_rel_err", "skipped") if k in r)
        speed = r["twin_ms"] / r["kernel_ms"] if r["kernel_ms"] else float("nan")
        lines.append(f"| {r['op']} | {r['case']} | {size} | {r['twin_ms']} | {r['kernel_ms']} | {speed:.1f}x | {agree} | "
                     f"{'yes' if r['ok'] else 'NO'} |")
    if meta["device"] != "cuda":
        lines += ["", "No GPU: the kernels ran in the Triton interpreter; the agreement columns hold, the times do not."]
    return lines


def main() -> int:
    parser = _timing.parser(__doc__, "gpu_check", reps=5)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="tiny shapes (a smoke run; the interpreter is slow)")
    parser.add_argument("--no-tests", dest="tests", action="store_false", help="skip the tests/kernels run")
    parser.add_argument("--no-model", dest="model", action="store_false", help="skip the model-level GPU-path comparison")
    args = parser.parse_args()
    device = torch.device(args.device)
    vocab, batches, tokens = (2048, [1], [64]) if args.small else (157184, [1, 8, 32], [32, 512, 4096])
    rows: list[dict[str, Any]] = []
    for b in batches:
        rows += check_confidence(device, b, vocab, args)
        rows += check_select_commit(device, b, vocab, args)
        rows += check_logit_adjust(device, b, vocab, args)
    for t in tokens:
        rows += check_block_routing(device, t, args)
    for dtype in (torch.float16, torch.bfloat16):
        rows += check_block_causal_attention(device, dtype, args.small, args)
    for r in rows:
        print(json.dumps(r), flush=True)
    meta = {**_timing.machine_meta(), "command": "python " + " ".join(sys.argv), "device": device.type, "reps": args.reps, "warmup": args.warmup,
            "parity_tests": run_parity_tests() if args.tests else {"ran": False, "why": "--no-tests"},
            "model_gpu_path": check_model_gpu_path(device) if args.model else {"ran": False, "why": "--no-model"}}
    _timing.write_results(args.out, meta, rows, md_lines(rows, meta))
    failed = [r for r in rows if not r["ok"]]
    tests = meta["parity_tests"]
    tests_failed = tests.get("failed", 0) + (1 if tests.get("exit_code", 0) not in (0, 5) and not tests.get("failed") else 0)
    model_failed = meta["model_gpu_path"].get("ran") and not meta["model_gpu_path"]["ok"]
    print(f"gpu_check: {len(rows) - len(failed)}/{len(rows)} ops agree; parity tests failed: {tests_failed}; "
          f"model GPU path: {'not run' if not meta['model_gpu_path'].get('ran') else ('FAILED' if model_failed else 'ok')}")
    return 1 if failed or tests_failed or model_failed else 0


if __name__ == "__main__":
    sys.exit(main())
