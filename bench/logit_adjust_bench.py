"""Cost of the request logit adjustments (logit_bias, repetition / frequency / presence penalties) in one step.

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python bench/logit_adjust_bench.py   # writes bench/results/logit_adjust_bench.{json,md}

Why: a batch in which some request sets `logit_bias` or a penalty runs, before the `confidence`
kernel, sampling.py's `LogitAdjuster`: per step a [B, V] int32 copy of the request's token counts
plus a scatter of the block's written tokens, then the `logit_adjust` kernel (kernels/logit_adjust.py)
over the scored rows; per block (or per FDFO round whose batch changed) the counts are rebuilt from
the requests' output ids. This script times, at B in {1, 8} (and 32 with --batch) and V = 157,184,
all requests setting a bias and all three penalties, 1,024 output tokens each:

* `confidence only` -- the step's existing kernel, greedy (the baseline every step pays);
* `logit_adjust only` -- the kernel on all N = B x 32 rows, counts and bias given;
* `adjuster step` -- what a step adds: `LogitAdjuster.__call__` with the batch's counts cached
  (the [B, V] copy + scatter, the kernel);
* `adjuster block build` -- the same call when the counts must be rebuilt (once per block);
* `adjuster fast path` -- a batch that sets none of them (what every other batch pays).

The dispatchers run the torch twins on CPU and the Triton kernels on CUDA (timed only when CUDA
is available). Host syncs per case are counted as in bench/step_bench.py
(`sglang_llada.kernels.testing.host_syncs`).
"""

from __future__ import annotations

import argparse
import json
import sys
from types import SimpleNamespace
from typing import Any, Callable

import _timing  # bench/_timing.py: this script's folder is sys.path[0]
import torch

from sglang_llada.algorithms.sampling import LogitAdjuster
from sglang_llada.kernels.confidence import confidence
from sglang_llada.kernels.logit_adjust import Penalties, logit_adjust
from sglang_llada.kernels.testing import host_syncs

BLOCK = 32
MASK_ID = 156895
PROMPT_LEN = 100
OUTPUT_LEN = 1024


def make_batch(b: int, vocab: int, device: torch.device, seed: int = 0) -> dict[str, Any]:
    """B requests with 1,024 output tokens each, a block half written, bias and penalties set."""
    g = torch.Generator().manual_seed(seed)
    n = b * BLOCK
    logits = torch.randn(n, vocab, generator=g) * 2.0
    written = torch.rand(n, generator=g) < 0.5
    input_ids = torch.where(written, torch.randint(0, 5000, (n,), generator=g), MASK_ID)
    start = PROMPT_LEN + OUTPUT_LEN
    positions = torch.arange(start, start + BLOCK).repeat(b)
    reqs = [
        SimpleNamespace(
            rid=f"r{i}", origin_input_ids=list(range(PROMPT_LEN)),
            output_ids=torch.randint(0, 5000, (OUTPUT_LEN,), generator=g).tolist(),
            sampling_params=SimpleNamespace(frequency_penalty=0.5, presence_penalty=0.3, repetition_penalty=1.2),
        )
        for i in range(b)
    ]
    bias = torch.zeros(b, vocab)
    bias[:, :10] = 5.0
    orchestrator = SimpleNamespace(is_required=True, reqs=lambda: reqs)
    info = SimpleNamespace(penalizer_orchestrator=orchestrator, logit_bias=bias.to(device))
    plain = SimpleNamespace(penalizer_orchestrator=SimpleNamespace(is_required=False), logit_bias=None)
    fb = SimpleNamespace(batch_size=b, input_ids=input_ids.to(device), positions=positions.to(device), sampling_info=info)
    counts = torch.randint(0, 3, (b, vocab), dtype=torch.int32, generator=g)
    return {
        "logits": logits.to(device),
        "fb": fb,
        "plain_fb": SimpleNamespace(**{**vars(fb), "sampling_info": plain}),
        "live": (input_ids == MASK_ID).to(device),
        "penalties": Penalties(
            counts.to(device), torch.full((b,), 0.5, device=device), torch.full((b,), 0.3, device=device),
            torch.full((b,), 1.2, device=device),
        ),
        "own": torch.where(written, input_ids, -1).to(device),
        "bias": bias.to(device),
    }


def bench_batch(device: torch.device, b: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every case at B requests; the batch (B x 32 x V logits, [B, V] counts and bias) is freed on return."""
    rows = []
    path = "triton" if device.type == "cuda" else "torch"
    batch = make_batch(b, args.vocab, device)
    logits = batch["logits"]  # adjusted in place by the cases below: timing is unaffected
    adjuster = LogitAdjuster()
    adjuster(batch["fb"], logits, batch["live"], MASK_ID, BLOCK)  # fills the counts cache

    def rebuild() -> None:
        adjuster._penalties = None
        adjuster(batch["fb"], logits, batch["live"], MASK_ID, BLOCK)

    cases: list[tuple[str, Callable[[], Any]]] = [
        (f"confidence only, greedy ({path}; baseline)", lambda: confidence(logits, batch["live"])),
        (f"logit_adjust only, penalties + bias ({path})",
         lambda: logit_adjust(logits, batch["live"], BLOCK, batch["penalties"], batch["own"], batch["bias"])),
        (f"adjuster step: counts copy + scatter + logit_adjust ({path})",
         lambda: adjuster(batch["fb"], logits, batch["live"], MASK_ID, BLOCK)),
        (f"adjuster block build: counts from {OUTPUT_LEN} output ids / request, then the step ({path})", rebuild),
        ("adjuster fast path: no request sets any", lambda: adjuster(batch["plain_fb"], logits, batch["live"], MASK_ID, BLOCK)),
    ]
    for name, run in cases:
        syncs = host_syncs(run)
        ms, samples = _timing.median_ms(run, device, args.reps, args.warmup, digits=2)
        row = {
            "device": device.type, "B": b, "N": b * BLOCK, "V": args.vocab, "case": name,
            "median_ms": round(ms, 3), "samples_ms": samples, "host_syncs_per_step": len(syncs),
            "host_sync_ops": sorted(set(syncs)),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def bench_device(device: torch.device, args: argparse.Namespace) -> list[dict[str, Any]]:
    return [row for b in args.batch for row in bench_batch(device, b, args)]


def md_lines(rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    lines = [
        *_timing.md_header("Request logit adjustments (logit_bias, penalties) in one step", meta),
        _timing.machine_sentence(meta)
        + f"Block 32, V = {meta['vocab']}, fp32 logits, about half of the positions "
        f"masked (the scored rows), every request with a bias and all three penalties, {OUTPUT_LEN} output "
        f"tokens each. Median of {meta['reps']} runs after {meta['warmup']} warm-up run(s).",
        "",
        "| device | B | N rows | case | median ms | host syncs |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        ops = f" ({', '.join(r['host_sync_ops'])})" if r["host_sync_ops"] else ""
        lines.append(
            f"| {r['device']} | {r['B']} | {r['N']} | {r['case']} | {r['median_ms']:.2f} | {r['host_syncs_per_step']}{ops} |"
        )
    lines += [
        "",
        "Notes:",
        "",
        "- The adjuster runs only for batches in which some request sets `logit_bias` or a penalty; the",
        "  fast-path row is what every other batch pays (host attribute reads, no device work).",
        "- `block build` is paid once per block in synchronous mode, and per FDFO round only when the",
        "  batch's requests or their output lengths changed; the other steps pay `adjuster step`.",
        "- CPU rows run the torch twins single-threaded under `nice -n 19` on a shared 2-core machine:",
        "  absolute times are noisy and say nothing about GPU speed. Triton rows appear only when the",
        "  script runs on a CUDA machine.",
    ]
    return lines


def main() -> int:
    parser = _timing.parser(__doc__, "logit_adjust_bench", reps=3)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--vocab", type=int, default=157184)
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    for device in _timing.devices():
        rows += bench_device(device, args)
    meta = {
        **_timing.machine_meta(),
        "vocab": args.vocab,
        "reps": args.reps,
        "warmup": args.warmup,
    }
    _timing.write_results(args.out, meta, rows, md_lines(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
