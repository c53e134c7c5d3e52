"""Accuracy and tokens per forward of each decoding algorithm on the trained toy, through the server.

    .venv/bin/python bench/algorithm_table.py          # writes bench/results/algorithm_table.{md,json}

One stock server per row (`--dllm-algorithm NAME --dllm-algorithm-config <knobs>`), the held-out
split scored by `sglang-llada eval`: our four algorithms with their default knobs (plus the static
schedule at 2 and 4 tokens per step) and SGLang's in-tree LowConfidence at its LLaDA2 threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from threshold_sweep import RESULTS, run_point  # noqa: E402

POINTS: tuple[tuple[str, str, str], ...] = (
    ("llada2_threshold", "llada2_threshold", ""),
    ("llada2_static n=2", "llada2_static", "tokens_per_step: 2\n"),
    ("llada2_static n=4", "llada2_static", "tokens_per_step: 4\n"),
    ("llada2_factor", "llada2_factor", ""),
    ("llada2_edit", "llada2_edit", ""),
    ("LowConfidence (in-tree)", "LowConfidence", "threshold: 0.95\n"),
)


def main(argv: list[str] | None = None) -> int:
    from sglang_llada.toy import TRAINED_TOY_DIR

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=TRAINED_TOY_DIR)
    p.add_argument("--split", default="heldout")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-running-requests", type=int, default=16)
    p.add_argument("--server-arg", action="append", default=[], help="extra flag for the server")
    p.add_argument("--out", type=Path, default=RESULTS / "algorithm_table")
    args = p.parse_args(argv)

    rows = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        for label, algorithm, knobs in POINTS:
            row = run_point(args.model, label, algorithm, knobs, args, Path(d))
            print(f"{label}: accuracy {row['accuracy']:.3f}  TPF {row['tpf']:.2f}", flush=True)
            rows.append(row)
    command = "python bench/algorithm_table.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"# Decoding algorithms on {args.model.name}, split {args.split}",
        "",
        f"Command: `{command.strip()}` ({time.time() - t0:.0f} s, {os.cpu_count()} CPU cores). Each row: "
        f"a fresh server, --max-running-requests {args.max_running_requests}, eval concurrency "
        f"{args.concurrency}, greedy.",
        "",
        "| algorithm | knobs | accuracy | TPF | output tok/s |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        knobs = r["knobs"].replace("\n", ", ") or "defaults"
        lines.append(
            f"| {r['threshold']} | {knobs} | {r['accuracy']:.3f} | {r['tpf']:.2f} | {r['output_tokens_per_s']:.1f} |"
        )
    tasks = list(rows[0]["accuracy_per_task"])
    lines += ["", "Per-task accuracy:", "", "| algorithm | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for r in rows:
        lines.append(f"| {r['threshold']} | " + " | ".join(f"{r['accuracy_per_task'][t]:.2f}" for t in tasks) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
