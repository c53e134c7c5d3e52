"""Cost of LLaDA2.2 block routing (`kernels/block_routing.py`) per MoE layer, at LLaDA2.2-flash-like shapes.

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python bench/block_routing_bench.py
    # writes bench/results/block_routing_bench.{json,md}

Why: with `expert_capacity` set, every MoE layer of every forward routes its T tokens per block
(E = 256 experts, capacity 48 or 64, top_k = 8, block 32 for LLaDA2.2-flash). This script times,
per call and at T in {32, 512, 4096}:

* `torch` -- `block_route_torch`, the CPU path (and what the dispatcher runs on non-CUDA tensors);
* `triton` -- `block_route_triton` (compiled; only when CUDA is available);
* `in-tree` -- SGLang 0.5.23's `block_topk_triton` on the same logits (CUDA only: it refuses CPU
  tensors), in its own flat layout;
* `request_blocks` -- building the per-request layout from host lists (a batch of requests whose
  prefixes are not multiples of the block size), which our op needs once per forward, not per layer.

The blocks are SGLang's flat layout (`flat_blocks`) for the op rows: the cost does not depend on
where blocks start. Host syncs per call are counted with `kernels.testing.host_syncs` (see
bench/step_bench.py); on CPU the count says what the same code does on a GPU. Before timing, the
torch twin is checked against the loop reference (and, on CUDA, the kernel against the twin and
SGLang's kernels); a failed check is written into the results and the script exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

import _timing  # bench/_timing.py: this script's folder is sys.path[0]
import torch

from sglang_llada.kernels import block_routing as br
from sglang_llada.kernels.testing import host_syncs

EXPERTS = 256
TOP_K = 8
BLOCK = 32

# ----------------------------------------------------------------------------------------------
# workloads
# ----------------------------------------------------------------------------------------------


def make_router(t: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Router logits [T, E] as a trained gate gives them (a few strong experts per token), bias [E]."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(t, EXPERTS, generator=g) * 1.5
    logits += torch.randn(EXPERTS, generator=g) * 0.5  # some experts are popular everywhere
    bias = torch.randn(EXPERTS, generator=g) * 0.05
    return logits.to(torch.bfloat16).to(device), bias.to(device)


def request_lens(t: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split T tokens into requests of 1..4 blocks, each with a random prefix (not block aligned)."""
    g = torch.Generator().manual_seed(seed)
    prefix, extend, left = [], [], t
    while left > 0:
        n = min(left, int(torch.randint(1, 4 * BLOCK + 1, (1,), generator=g)))
        prefix.append(int(torch.randint(0, 2048, (1,), generator=g)))
        extend.append(n)
        left -= n
    return prefix, extend


# ----------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------


def in_tree_block_topk() -> Any:
    from sglang.srt.models.llada2 import block_topk_triton

    return block_topk_triton


def bench_device(device: torch.device, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for t in args.tokens:
        logits, bias = make_router(t, device)
        starts, blocks = br.flat_blocks(t, BLOCK, device)
        prefix, extend = request_lens(t)
        for cap in args.capacity:
            op = (logits, bias, starts, blocks, BLOCK, cap, TOP_K)
            cases: list[tuple[str, Callable[[], Any]]] = [("ours (torch twin)", lambda: br.block_route_torch(*op))]
            if device.type == "cuda":
                sglang_topk = in_tree_block_topk()
                cases += [
                    ("ours (triton)", lambda: br.block_route_triton(*op)),
                    ("in-tree block_topk_triton (sglang 0.5.23)", lambda: sglang_topk(logits, bias, BLOCK, cap, TOP_K)),
                ]
            layout = lambda: br.request_blocks(prefix, extend, BLOCK, device)  # noqa: E731
            cases.append(("request_blocks (layout, once per forward)", layout))
            for name, run in cases:
                syncs = host_syncs(run)
                ms, samples = _timing.median_ms(run, device, args.reps, args.warmup, digits=3)
                row = {
                    "device": device.type, "T": t, "E": EXPERTS, "capacity": cap, "top_k": TOP_K, "block": BLOCK,
                    "requests": len(extend) if name.startswith("request_blocks") else None,
                    "case": name, "median_ms": round(ms, 3), "samples_ms": samples,
                    "host_syncs_per_call": len(syncs), "host_sync_ops": sorted(set(syncs)),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def check_results(device: torch.device) -> tuple[dict[str, bool], dict[str, bool]]:
    """The twin against the loop reference (both layouts); on CUDA also the kernel and SGLang's kernels.

    Returns the checks that gate the timing and, on CUDA, whether the kernel's weights are bit-equal
    to SGLang's (expected: same libdevice exp, division and summation order; not required).
    """
    t = 3 * BLOCK + 5
    logits, bias = make_router(t, device, seed=1)
    checks: dict[str, bool] = {}
    info: dict[str, bool] = {}
    layouts = {
        "flat": br.flat_blocks(t, BLOCK, device),
        "requests": br.request_blocks([7, 0, 40], [50, 21, t - 71], BLOCK, device),
    }
    for name, (starts, blocks) in layouts.items():
        op = (logits, bias, starts, blocks, BLOCK, 48, TOP_K)
        w_ref, i_ref = br.block_route_reference(*op)
        paths = {"torch": br.block_route_torch}
        if device.type == "cuda":
            paths["triton"] = br.block_route_triton
        for path, fn in paths.items():
            w, i = fn(*op)
            same = torch.equal(i, i_ref) and torch.allclose(w, w_ref, rtol=1e-6, atol=0)
            checks[f"{path}_equals_reference_{name}"] = bool(same)
    if device.type == "cuda":
        w_tree, i_tree = in_tree_block_topk()(logits, bias, BLOCK, 48, TOP_K)
        w, i = br.block_route_triton(logits, bias, *layouts["flat"], BLOCK, 48, TOP_K)
        checks["triton_equals_in_tree_flat"] = bool(torch.equal(i, i_tree) and torch.allclose(w, w_tree, rtol=1e-6, atol=0))
        info["triton_weights_bit_equal_in_tree"] = bool(torch.equal(w, w_tree))
    return checks, info


def md_lines(rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    title = "Block routing (LLaDA2.2 MoE) per layer call: torch twin, Triton kernel, SGLang's in-tree kernel"
    lines = [
        *_timing.md_header(title, meta),
        _timing.machine_sentence(meta)
        + f"E = {EXPERTS}, top_k = {TOP_K}, block {BLOCK}, bf16 router logits, SGLang's flat "
        f"block layout for the op rows. Median of {meta['reps']} runs after {meta['warmup']} warm-up run(s).",
        "",
        "| device | T | capacity | case | median ms / call | host syncs / call |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        ops = f" ({', '.join(r['host_sync_ops'])})" if r["host_sync_ops"] else ""
        case = r["case"] + (f", {r['requests']} requests" if r["requests"] else "")
        lines.append(
            f"| {r['device']} | {r['T']} | {r['capacity']} | {case} | {r['median_ms']:.3f} "
            f"| {r['host_syncs_per_call']}{ops} |"
        )
    checks = ", ".join(f"{k}: {v}" for k, v in meta["checks"].items())
    info = ", ".join(f"{k}: {v}" for k, v in meta["info"].items())
    lines += [
        "",
        f"Checks before timing: {checks}." + (f" Also: {info}." if info else ""),
        "",
        "Notes:",
        "",
        "- The torch twin is the CPU path; on CUDA the dispatcher `block_route` runs the Triton kernels.",
        "- CPU rows run single-threaded under `nice -n 19` on a shared 2-core machine: absolute times are",
        "  noisy and say nothing about GPU speed.",
        "- Triton and in-tree rows appear only when the script runs on a CUDA machine.",
        "- `request_blocks` is host work (python lists -> one host-to-device copy); its row is repeated per",
        "  capacity because the loop times it there, it does not depend on capacity.",
    ]
    return lines


def main() -> int:
    parser = _timing.parser(__doc__, "block_routing_bench", reps=5)
    parser.add_argument("--tokens", type=int, nargs="+", default=[32, 512, 4096])
    parser.add_argument("--capacity", type=int, nargs="+", default=[48, 64])
    args = parser.parse_args()

    devices = _timing.devices()
    results = {d.type: check_results(d) for d in devices}
    checks = {f"{d}:{k}": v for d, (c, _) in results.items() for k, v in c.items()}
    info = {f"{d}:{k}": v for d, (_, i) in results.items() for k, v in i.items()}
    rows: list[dict[str, Any]] = []
    if all(checks.values()):
        for device in devices:
            rows += bench_device(device, args)
    meta = {
        **_timing.machine_meta(),
        "reps": args.reps,
        "warmup": args.warmup,
        "checks": checks,
        "info": info,
    }
    _timing.write_results(args.out, meta, rows, md_lines(rows, meta))
    if not all(checks.values()):
        print(f"checks failed, nothing timed: {checks}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
