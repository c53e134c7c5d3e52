"""Cost of one diffusion unmasking step: our `confidence` + `select_commit` kernels vs SGLang's in-tree step.

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python bench/step_bench.py   # writes bench/results/step_bench.{json,md}

Why: the step runs after every forward, over N = B x 32 rows of V = 157,184 logits. SGLang 0.5.23's
`LowConfidence.step` materialises softmax over all of them and ends with `done.tolist()`, a host
synchronisation per step. This script times, per step and at B in {1, 8, 32}:

* `ours` -- `confidence` (token + probability per masked position) then `select_commit`
  (threshold / top-k commit, in place), through their dispatchers: the torch twin on CPU, the
  Triton kernels on CUDA (timed only when CUDA is available);
* `ours` split into its two halves, and a `sampled` variant (temperature 1, Gumbel-max);
* `in-tree` -- the real `sglang.srt.dllm.algorithm.low_confidence.LowConfidence.step`, called with
  a stand-in forward batch that carries only what it reads (batch_size, input_ids,
  dllm_prompt_mask); its math is SGLang's own, nothing is replicated.

Host syncs per step are counted by running one step under `sglang_llada.kernels.testing.host_syncs`:
a TorchFunctionMode (tensor methods that copy data to the host: tolist, item, cpu, numpy, __bool__,
...) and a TorchDispatchMode (aten ops that need device data on the host: _local_scalar_dense,
nonzero, masked_select, boolean indexing). On CPU nothing is actually transferred; the count says
what the same code does on a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from types import SimpleNamespace
from typing import Any, Callable

import _timing  # bench/_timing.py: this script's folder is sys.path[0]
import torch

from sglang_llada.kernels.confidence import confidence
from sglang_llada.kernels.select_commit import select_commit
from sglang_llada.kernels.testing import host_syncs

BLOCK = 32
MASK_ID = 156895
THRESHOLD = 0.95  # LowConfidence's default, the LLaDA2 paper's value

# ----------------------------------------------------------------------------------------------
# workloads
# ----------------------------------------------------------------------------------------------


def make_batch(b: int, vocab: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """B blocks of 32 positions, about 60% masked, logits with a confident token on a third of rows."""
    g = torch.Generator().manual_seed(seed)
    n = b * BLOCK
    logits = torch.randn(n, vocab, generator=g) * 2.0
    confident = torch.arange(0, n, 3)
    logits[confident, torch.randint(0, vocab, (confident.numel(),), generator=g)] += 25.0
    masked = torch.rand(n, generator=g) < 0.6
    input_ids = torch.where(masked, MASK_ID, torch.randint(0, vocab, (n,), generator=g))
    return {
        "logits": logits.to(device),
        "input_ids": input_ids.to(device),
        "threshold": torch.full((b,), THRESHOLD, device=device),
        "k": torch.ones(b, dtype=torch.int32, device=device),
        "temperature": torch.ones(n, device=device),
        "seeds": torch.full((n,), 1234, dtype=torch.int64, device=device),
        "offsets": torch.arange(n, device=device),
    }


def ours_step(batch: dict[str, torch.Tensor], ids: torch.Tensor, sampled: bool) -> torch.Tensor:
    is_masked = ids == MASK_ID
    if sampled:
        tok, prob = confidence(
            batch["logits"], is_masked, batch["temperature"], None, None, batch["seeds"], batch["offsets"]
        )
    else:
        tok, prob = confidence(batch["logits"], is_masked)
    _, _, done = select_commit(ids, tok, prob, is_masked, batch["threshold"], batch["k"], BLOCK)
    return done  # stays on the device: the caller decides when to read it


def ours_confidence_only(batch: dict[str, torch.Tensor], ids: torch.Tensor) -> Any:
    return confidence(batch["logits"], ids == MASK_ID)


def ours_select_only(batch: dict[str, torch.Tensor], ids: torch.Tensor, tok: torch.Tensor, prob: torch.Tensor) -> Any:
    is_masked = ids == MASK_ID
    return select_commit(ids, tok, prob, is_masked, batch["threshold"], batch["k"], BLOCK)


def in_tree_algorithm() -> Any:
    from sglang.srt.dllm.algorithm.low_confidence import LowConfidence
    from sglang.srt.dllm.config import DllmConfig

    config = DllmConfig("LowConfidence", {"threshold": THRESHOLD}, BLOCK, MASK_ID, max_running_requests=64)
    return LowConfidence(config)


def in_tree_step(algo: Any, batch: dict[str, torch.Tensor], ids: torch.Tensor) -> list[bool]:
    b = batch["threshold"].shape[0]
    forward_batch = SimpleNamespace(batch_size=b, input_ids=ids, dllm_prompt_mask=None)
    return algo.step(forward_batch, batch["logits"], [None] * b)


# ----------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------


def bench_batch(device: torch.device, b: int, args: argparse.Namespace, algo: Any) -> list[dict[str, Any]]:
    """Every case at B blocks; the batch (B x 32 x V logits) is freed on return."""
    rows = []
    batch = make_batch(b, args.vocab, device)
    ids0 = batch["input_ids"]
    tok, prob = ours_confidence_only(batch, ids0)
    path = "triton" if device.type == "cuda" else "torch"
    cases: list[tuple[str, Callable[[torch.Tensor], Any]]] = [
        (f"ours ({path}): confidence + select_commit, greedy", lambda ids: ours_step(batch, ids, False)),
        (f"ours ({path}): confidence only, greedy", lambda ids: ours_confidence_only(batch, ids)),
        (f"ours ({path}): select_commit only", lambda ids: ours_select_only(batch, ids, tok, prob)),
        (f"ours ({path}): confidence + select_commit, sampled T=1", lambda ids: ours_step(batch, ids, True)),
        ("in-tree LowConfidence.step (sglang 0.5.23), greedy", lambda ids: in_tree_step(algo, batch, ids)),
    ]
    for name, run in cases:
        syncs = host_syncs(lambda run=run: run(ids0.clone()))
        # each timed call gets a fresh copy of input_ids, made outside the timing
        ms, samples = _timing.median_ms(run, device, args.reps, args.warmup, digits=2, fresh=ids0.clone)
        row = {
            "device": device.type, "B": b, "N": b * BLOCK, "V": args.vocab, "case": name,
            "median_ms": round(ms, 2), "samples_ms": samples, "host_syncs_per_step": len(syncs),
            "host_sync_ops": sorted(set(syncs)),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def bench_device(device: torch.device, args: argparse.Namespace, algo: Any) -> list[dict[str, Any]]:
    return [row for b in args.batch for row in bench_batch(device, b, args, algo)]


def check_same_commits(args: argparse.Namespace, algo: Any) -> dict[str, Any]:
    """Sanity: on greedy logits our step and the in-tree step write the same input_ids.

    They differ by design only where a confidence equals the threshold exactly (>= vs >), which
    random fp32 logits do not produce.
    """
    batch = make_batch(2, args.vocab, torch.device("cpu"), seed=1)
    ours_ids, tree_ids = batch["input_ids"].clone(), batch["input_ids"].clone()
    ours_step(batch, ours_ids, False)
    in_tree_step(algo, batch, tree_ids)
    return {"B": 2, "same_input_ids": bool(torch.equal(ours_ids, tree_ids))}


def md_lines(rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    lines = [
        *_timing.md_header("One unmasking step: ours vs SGLang 0.5.23 in-tree LowConfidence.step", meta),
        _timing.machine_sentence(meta)
        + f"Block 32, V = {meta['vocab']}, fp32 logits, about 60% of positions "
        f"masked, threshold {THRESHOLD}, k = 1. Median of {meta['reps']} runs after {meta['warmup']} "
        "warm-up run(s).",
        "",
        "| device | B | N rows | case | median ms / step | host syncs / step |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        ops = f" ({', '.join(r['host_sync_ops'])})" if r["host_sync_ops"] else ""
        lines.append(
            f"| {r['device']} | {r['B']} | {r['N']} | {r['case']} | {r['median_ms']:.1f} | {r['host_syncs_per_step']}{ops} |"
        )
    lines += [
        "",
        f"Same committed input_ids as the in-tree step on a greedy batch: {meta['same_commits']['same_input_ids']}.",
        "",
        "Notes:",
        "",
        "- Host syncs are counted with torch function/dispatch modes around one step (see the script's",
        "  docstring); `ours` keeps `done` on the device, so the scheduler still reads it once per step",
        "  (or overlaps that copy), whereas the in-tree step forces the read inside the step (`done.tolist()`).",
        "- CPU rows run the torch twin single-threaded under `nice -n 19` on a shared 2-core machine that",
        "  was also running a training job: absolute times are noisy and say nothing about GPU speed.",
        "- Triton rows appear only when the script runs on a CUDA machine.",
    ]
    return lines


def main() -> int:
    parser = _timing.parser(__doc__, "step_bench", reps=3)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--vocab", type=int, default=157184)
    args = parser.parse_args()

    algo = in_tree_algorithm()
    rows: list[dict[str, Any]] = []
    for device in _timing.devices():
        rows += bench_device(device, args, algo)
    meta = {
        **_timing.machine_meta(),
        "vocab": args.vocab,
        "reps": args.reps,
        "warmup": args.warmup,
        "same_commits": check_same_commits(args, algo),
    }
    _timing.write_results(args.out, meta, rows, md_lines(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
