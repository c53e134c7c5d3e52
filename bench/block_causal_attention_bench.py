"""Cost of block-causal attention over the paged KV pool (`kernels/block_causal_attention.py`) per layer call.

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python bench/block_causal_attention_bench.py
    # writes bench/results/block_causal_attention_bench.{json,md}

Why: models/llada2.py calls `block_causal_attention` in every layer of (a) a whole-prompt forward
(`EXTEND`: block-causal mask at block 32, Triton on GPUs, torch twin on CPU) and (b) on our CPU
platform, every denoising forward (`DLLM_EXTEND`: one 32-token block per request over its cached
prefix, every key visible -- `ALL_KEYS` -- as also for folded blocks and draft copies). At
LLaDA2.0-mini's attention shape (16 query heads, 4 KV heads, head dim 128: the reference
config.json), fp32 by default, over a pool whose slots are shuffled as after many requests, this
script times per call:

* `denoise` -- B requests [--batch, default 1 4], each one block of 32 new tokens over a cached
  prefix of P tokens [--prefix-lens, default 256 1024 4096];
* `prefill` -- B requests, each a whole prompt of L tokens from position 0 [--prompt-lens, default
  1024; multiples of 32, as the scheduler prefills full blocks], in one call.

Variants, side by side in one run, with each one's ratio to the torch twin on the same device:

* `ours (torch twin)` -- `block_causal_attention_torch`, what the CPU platform runs;
* `ours (triton)` -- `block_causal_attention_triton`, compiled (only when CUDA is available: on CPU
  the kernel runs only in the Triton interpreter, which is no timing);
* `reference` -- `block_causal_attention_reference`, the definition token by token in float64
  (CPU only; it reads indices on the host by design, so its host syncs are not counted);
* `in-tree torch_native` -- SGLang 0.5.23's `TorchNativeAttnBackend._run_sdpa_forward_extend` as
  its `forward_extend` calls it for LLaDA2's `ENCODER_ONLY` layers (`causal=False`), on the same
  pool, with no SGLang state needed (without a sliding window the method reads nothing from
  `self`). For `denoise` that is the whole in-tree call: it attends from every cached position of
  the request ([P + 32, P + 32] per request, keeping the last 32 rows). For `prefill` SGLang feeds a
  diffusion prompt one block per forward (its backends know only causal and bidirectional masks),
  so the row is L / 32 such calls, block j over prefix 32 j: the same output. This is SGLang's CPU
  attention; on a GPU SGLang runs FlashInfer / Triton through `RadixAttention`, which needs a
  ModelRunner and is not isolated here, so the CUDA in-tree row is the torch_native backend on the GPU
  (`--attention-backend torch_native`), not what SGLang serves with there.

Before timing, every variant's output on every device is checked against the reference (computed
once on CPU from the same data): fp32 within rtol = atol = 1e-5 (the twin's parity-test tolerance;
1e-4 for the Triton kernel, as tests/kernels/test_block_causal_attention.py), bf16 within 2e-2. That
checking call also counts host syncs (`kernels.testing.host_syncs`, as in bench/step_bench.py) and
is the first warm-up, so --warmup defaults to 0 more. A failed check is written into the results,
nothing more is timed and the script exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

import _timing  # bench/_timing.py: this script's folder is sys.path[0]
import torch

from sglang_llada.kernels import block_causal_attention as bca
from sglang_llada.kernels.testing import host_syncs

BLOCK = 32
ALL_KEYS = 1 << 30  # models/llada2.py's ALL_KEYS: every key of the request visible (denoising forwards on CPU)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
TWIN = "ours (torch twin)"
MINI = (16, 4, 128)  # LLaDA2.0-mini's config.json: num_attention_heads, num_key_value_heads, head_dim

# ----------------------------------------------------------------------------------------------
# workloads
# ----------------------------------------------------------------------------------------------


def make_case(
    prefix_lens: list[int], extend_lens: list[int], args: argparse.Namespace, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """On CPU: q [T, H, D], a KV pool [slots, Hkv, D] whose slots are shuffled, req_to_token with the
    requests on rows that are not 0..B-1 (row 0 unused, as in SGLang), and those rows."""
    g = torch.Generator().manual_seed(seed)
    dtype = DTYPES[args.dtype]
    b = len(prefix_lens)
    seqs = [p + e for p, e in zip(prefix_lens, extend_lens)]
    n_slots = sum(seqs) + 64
    slots = torch.randperm(n_slots, generator=g)
    req_to_token = torch.zeros(b + 2, max(seqs) + 8, dtype=torch.int32)
    rows = torch.tensor([b + 1 - i for i in range(b)], dtype=torch.int64)
    used = 0
    for i, seq in enumerate(seqs):
        req_to_token[rows[i], :seq] = slots[used : used + seq].to(torch.int32)
        used += seq
    k_cache = torch.randn(n_slots, args.kv_heads, args.head_dim, generator=g).to(dtype)
    v_cache = torch.randn(n_slots, args.kv_heads, args.head_dim, generator=g).to(dtype)
    q = torch.randn(sum(extend_lens), args.heads, args.head_dim, generator=g).to(dtype)
    return q, k_cache, v_cache, req_to_token, rows


def in_tree_backend() -> Any:
    """SGLang's torch_native backend object, unconstructed: `_run_sdpa_forward_extend` without a
    sliding window reads nothing from `self` (its constructor needs a ModelRunner)."""
    from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend

    return object.__new__(TorchNativeAttnBackend)


def in_tree_forwards(
    backend: Any, tensors: tuple[torch.Tensor, ...], prefix_lens: list[int], extend_lens: list[int], scale: float,
    per_block: bool,
) -> Callable[[], torch.Tensor]:
    """What SGLang 0.5.23 runs for the same attention: one `forward_extend` call (ENCODER_ONLY:
    causal=False) per forward -- one forward for `denoise`, one per block for `prefill`. The forward
    batches' length tensors and the blocks' queries are made here, outside the timing."""
    q, k_cache, v_cache, req_to_token, rows = tensors
    b, h, d = len(prefix_lens), q.shape[1], q.shape[2]
    dev = q.device
    lens = lambda xs: torch.tensor(xs, dtype=torch.int64, device=dev)  # noqa: E731
    if per_block:  # prefill (every request a whole prompt of the same length from position 0)
        n = extend_lens[0] // BLOCK  # one forward per block, every request's block j in it
        per_req = q.view(b, n, BLOCK, h, d)
        forwards = [
            (per_req[:, j].reshape(b * BLOCK, h, d), [BLOCK * j] * b, [BLOCK] * b) for j in range(n)
        ]
    else:
        n = 1
        forwards = [(q, prefix_lens, extend_lens)]
    batches = [(qj, lens([p + e for p, e in zip(pj, ej)]), lens(pj), lens(ej)) for qj, pj, ej in forwards]
    gqa = h != k_cache.shape[1]

    def run() -> torch.Tensor:
        outs = []
        for qj, seq_lens, prefix_t, extend_t in batches:
            o = torch.empty_like(qj)
            backend._run_sdpa_forward_extend(
                qj, o, k_cache, v_cache, req_to_token, rows, seq_lens, prefix_t, extend_t,
                scaling=scale, enable_gqa=gqa, causal=False,
            )
            outs.append(o.view(b, -1, h, d))
        return outs[0].reshape(-1, h, d) if n == 1 else torch.cat(outs, dim=1).reshape(-1, h, d)

    return run


# ----------------------------------------------------------------------------------------------
# checking and timing
# ----------------------------------------------------------------------------------------------


def tolerance(variant: str, dtype: str) -> float:
    if dtype == "bfloat16":
        return 2e-2
    return 1e-4 if "triton" in variant else 1e-5


def bench_case(
    case: str, b: int, prefix_lens: list[int], extend_lens: list[int], block_size: int,
    args: argparse.Namespace, backend: Any, checks: dict[str, bool],
) -> list[dict[str, Any]]:
    """Every variant on every device for one workload: check against the reference, then time."""
    scale = args.head_dim**-0.5
    cpu_tensors = make_case(prefix_lens, extend_lens, args)
    lens = (prefix_lens, extend_lens, block_size, scale)
    want = bca.block_causal_attention_reference(*cpu_tensors, *lens)  # [T, H, D] float64
    rows = []
    for device in _timing.devices():
        tensors = tuple(t.to(device) for t in cpu_tensors)
        variants: list[tuple[str, Callable[[], torch.Tensor]]] = [
            (TWIN, lambda: bca.block_causal_attention_torch(*tensors, *lens)),
        ]
        if device.type == "cuda":
            variants.append(("ours (triton)", lambda: bca.block_causal_attention_triton(*tensors, *lens)))
        else:
            variants.append(("reference (float64, token by token)", lambda: bca.block_causal_attention_reference(*tensors, *lens)))
        prefill = case == "prefill"
        in_tree = in_tree_forwards(backend, tensors, prefix_lens, extend_lens, scale, per_block=prefill)
        calls = extend_lens[0] // BLOCK if prefill else 1
        variants.append((f"in-tree torch_native (sglang 0.5.23), {calls} call(s)", in_tree))
        twin_ms = None
        for name, run in variants:
            box: list[torch.Tensor] = []
            is_ref = name.startswith("reference")
            if is_ref:
                box.append(run())
                syncs = None
            else:
                syncs = host_syncs(lambda run=run: box.append(run()))
            got = box[0].double().cpu()
            err = float((got - want).abs().max())
            tol = tolerance(name, args.dtype)
            ok = bool(torch.allclose(got, want, rtol=tol, atol=tol))
            key = f"{device.type}:{case}:B{b}:{prefix_lens[0]}+{extend_lens[0]}:{name}"
            checks[key] = ok
            if not ok:
                print(f"check failed: {key}: max abs err {err:.3g} > tolerance {tol:g}", file=sys.stderr)
                return rows
            ms, samples = _timing.median_ms(run, device, args.reps, args.warmup, digits=3)
            if name == TWIN:
                twin_ms = ms
            row = {
                "device": device.type, "case": case, "B": b, "prefix": prefix_lens[0], "extend": extend_lens[0],
                "T": sum(extend_lens), "block_size": block_size, "H": args.heads, "Hkv": args.kv_heads,
                "D": args.head_dim, "dtype": args.dtype, "variant": name, "median_ms": round(ms, 3),
                "samples_ms": samples, "vs_twin": round(ms / twin_ms, 3) if twin_ms else None,
                "host_syncs_per_call": None if syncs is None else len(syncs),
                "host_sync_ops": None if syncs is None else sorted(set(syncs)),
                "max_abs_err_vs_reference": err,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def bench(args: argparse.Namespace, checks: dict[str, bool]) -> list[dict[str, Any]]:
    backend = in_tree_backend()
    rows: list[dict[str, Any]] = []
    workloads = [("denoise", b, [p] * b, [BLOCK] * b, ALL_KEYS) for p in args.prefix_lens for b in args.batch]
    workloads += [("prefill", b, [0] * b, [n] * b, BLOCK) for n in args.prompt_lens for b in args.batch]
    for case, b, prefix_lens, extend_lens, block_size in workloads:
        rows += bench_case(case, b, prefix_lens, extend_lens, block_size, args, backend, checks)
        if not all(checks.values()):
            break
    return rows


def md_lines(rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    title = "Block-causal attention per layer call: torch twin, Triton kernel, reference, SGLang's torch_native backend"
    s = meta["shape"]
    mini = " (LLaDA2.0-mini)" if (s["heads"], s["kv_heads"], s["head_dim"]) == MINI else ""
    lines = [
        *_timing.md_header(title, meta),
        _timing.machine_sentence(meta)
        + f"{s['heads']} query heads, {s['kv_heads']} KV heads, head dim {s['head_dim']}{mini}, "
        f"{s['dtype']}, block {BLOCK}, shuffled KV slots. `denoise`: one 32-token block per request over a "
        "cached prefix, every key visible; `prefill`: a whole prompt per request from position 0, "
        f"block-causal mask. Median of {meta['reps']} runs after the checking call and {meta['warmup']} "
        "more warm-up run(s).",
        "",
        "| device | case | B | prefix | new tokens / request | variant | median ms / call | vs twin "
        "| host syncs / call | max abs err vs reference |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["host_syncs_per_call"] is None:
            syncs = "not counted"
        else:
            ops = f" ({', '.join(r['host_sync_ops'])})" if r["host_sync_ops"] else ""
            syncs = f"{r['host_syncs_per_call']}{ops}"
        ratio = f"{r['vs_twin']:.2f}x" if r["vs_twin"] is not None else "-"
        lines.append(
            f"| {r['device']} | {r['case']} | {r['B']} | {r['prefix']} | {r['extend']} | {r['variant']} "
            f"| {r['median_ms']:.3f} | {ratio} | {syncs} | {r['max_abs_err_vs_reference']:.2g} |"
        )
    failed = [k for k, v in meta["checks"].items() if not v]
    lines += [
        "",
        f"Checks against the reference before timing: {len(meta['checks']) - len(failed)} of "
        f"{len(meta['checks'])} passed" + (f"; failed: {', '.join(failed)}." if failed else "."),
        "",
        "Notes:",
        "",
        "- `vs twin` is the row's median over the torch twin's on the same device and workload.",
        "- The in-tree rows are SGLang 0.5.23's torch_native backend (its CPU attention) called as its",
        "  `forward_extend` calls it for LLaDA2's ENCODER_ONLY layers: for `denoise` it attends from every",
        "  cached position of the request and keeps the last 32 rows; for `prefill` it is one call per",
        "  32-token block, as SGLang feeds a diffusion prompt. On CUDA SGLang serves with FlashInfer /",
        "  Triton instead, which this script does not isolate.",
        "- The reference is the float64 definition (tests only), timed on CPU only.",
        "- CPU rows run single-threaded under `nice -n 19` on a shared 2-core machine: absolute times are",
        "  noisy and say nothing about GPU speed.",
        "- Triton rows appear only when the script runs on a CUDA machine.",
    ]
    return lines


def main() -> int:
    parser = _timing.parser(__doc__, "block_causal_attention_bench", reps=3)
    parser.set_defaults(warmup=0)  # the checking call is the first warm-up
    parser.add_argument("--prefix-lens", type=int, nargs="*", default=[256, 1024, 4096],
                        help="cached prefix per request of the denoise case (none: no denoise rows)")
    parser.add_argument("--prompt-lens", type=int, nargs="*", default=[1024],
                        help="whole-prompt length per request of the prefill case, multiples of 32 (none: no prefill rows)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="requests per call")
    parser.add_argument("--heads", type=int, default=MINI[0])
    parser.add_argument("--kv-heads", type=int, default=MINI[1])
    parser.add_argument("--head-dim", type=int, default=MINI[2])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    args = parser.parse_args()
    if any(n <= 0 or n % BLOCK for n in args.prompt_lens):
        parser.error(f"--prompt-lens must be positive multiples of {BLOCK}")
    if any(p < 0 for p in args.prefix_lens) or any(b <= 0 for b in args.batch):
        parser.error("--prefix-lens must be >= 0 and --batch > 0")
    if args.heads % args.kv_heads:
        parser.error("--heads must be a multiple of --kv-heads")

    checks: dict[str, bool] = {}
    rows = bench(args, checks)
    meta = {
        **_timing.machine_meta(),
        "shape": {"heads": args.heads, "kv_heads": args.kv_heads, "head_dim": args.head_dim, "dtype": args.dtype},
        "reps": args.reps,
        "warmup": args.warmup,
        "checks": checks,
    }
    _timing.write_results(args.out, meta, rows, md_lines(rows, meta))
    if not all(checks.values()):
        print("checks failed: timing stopped at the first failure", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
