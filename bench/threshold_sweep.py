"""Threshold sweep of the trained toy: accuracy against tokens per forward (TPF), through the server.

    .venv/bin/python bench/threshold_sweep.py            # writes bench/results/threshold_sweep.*

For every threshold, one stock `python -m sglang.launch_server --model <toy>` is started with the
threshold in `--dllm-algorithm-config` (the default algorithm, `llada2_threshold`: commit every
masked position whose confidence reaches it, else the single most confident one), and
`sglang-llada eval` scores the held-out split. The row "1/forward" is the one-token-per-forward
baseline (`llada2_static` with `tokens_per_step: 1`). The autoregressive twin (same architecture,
data and budget) is served and scored the same way, as the last row, for diffusion vs
autoregressive at equal quality.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _deps import require

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
ONE_PER_FORWARD = "1/forward"
RESULTS = Path(__file__).resolve().parent / "results"


def run_point(
    model: Path, label: Any, algorithm: str, knobs: str, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """Serve `model` with `--dllm-algorithm algorithm` and the YAML `knobs`; score the split."""
    from sglang_llada.eval import evaluate
    from sglang_llada.server_process import launch

    tag = "".join(c if c.isalnum() or c in ".-" else "_" for c in f"{algorithm}-{label}")
    cfg = workdir / f"{tag}.yaml"
    cfg.write_text(knobs)
    server_args = [
        "--dllm-algorithm", algorithm, "--dllm-algorithm-config", str(cfg),
        "--max-running-requests", str(args.max_running_requests),
        *args.server_arg,
    ]
    server = launch(model, server_args, workdir, workdir / f"server-{tag}.log")
    try:
        summary, _ = evaluate(server.url, args.split, concurrency=args.concurrency)
    finally:
        server.stop()
    return {"threshold": label, "algorithm": algorithm, "knobs": knobs.strip(), "server_args": server_args, **summary}


def run_ar_twin(model: Path, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from sglang_llada.eval import evaluate
    from sglang_llada.server_process import launch

    server_args = ["--trust-remote-code", "--max-running-requests", str(args.max_running_requests), *args.server_arg]
    server = launch(model, server_args, workdir, workdir / "server-ar.log")
    try:
        summary, _ = evaluate(server.url, args.split, concurrency=args.concurrency)
    finally:
        server.stop()
    return {"threshold": "AR twin", "server_args": server_args, **summary}


def write_table(rows: list[dict[str, Any]], path: Path, header: str) -> None:
    lines = [
        header, "",
        "| threshold | accuracy | TPF | output tok/s | p50 latency (s) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        tpf = "-" if r["tpf"] is None else f"{r['tpf']:.2f}"
        lines.append(
            f"| {r['threshold']} | {r['accuracy']:.3f} | {tpf} | "
            f"{r['output_tokens_per_s']:.1f} | {r['latency_s']['p50']:.3f} |"
        )
    lines += ["", "Per-task accuracy:", "", "| threshold | " + " | ".join(rows[0]["accuracy_per_task"]) + " |",
              "|---:|" + "---:|" * len(rows[0]["accuracy_per_task"])]
    for r in rows:
        lines.append(f"| {r['threshold']} | " + " | ".join(f"{a:.2f}" for a in r["accuracy_per_task"].values()) + " |")
    path.write_text("\n".join(lines) + "\n")


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Left: accuracy against TPF (the trade-off). Right: both against the threshold, since the
    threshold points sit close together in TPF and their labels would overlap on the left."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(10.5, 4.2))
    ar = [r for r in rows if r["tpf"] is None]
    rows = [r for r in rows if r["tpf"] is not None]
    for a in (ax, ax_t):
        for r in ar:  # the autoregressive twin: one token per forward by construction
            a.axhline(100 * r["accuracy"], color="tab:gray", ls="--", lw=1, label=f"AR twin ({100 * r['accuracy']:.1f}%)")
        a.grid(alpha=0.3)
    ax.plot([r["tpf"] for r in rows], [100 * r["accuracy"] for r in rows], "o-", color="tab:blue", label="llada2-toy")
    one = [r for r in rows if r["threshold"] == ONE_PER_FORWARD]
    for r in one:
        ax.annotate(ONE_PER_FORWARD, (r["tpf"], 100 * r["accuracy"]), textcoords="offset points", xytext=(4, -12), fontsize=8)
    ax.set_xlabel("tokens per forward (TPF)")
    ax.set_ylabel("exact match on held-out split (%)")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title, fontsize=10)

    swept = sorted((r for r in rows if r["threshold"] != ONE_PER_FORWARD), key=lambda r: r["threshold"])
    thr = [r["threshold"] for r in swept]
    ax_t.plot(thr, [100 * r["accuracy"] for r in swept], "o-", color="tab:blue", label="exact match (%)")
    for r in one:
        ax_t.axhline(100 * r["accuracy"], color="tab:blue", ls=":", lw=1, label=f"{ONE_PER_FORWARD} ({100 * r['accuracy']:.1f}%)")
    ax_t.set_xlabel("confidence threshold")
    ax_t.set_ylabel("exact match on held-out split (%)")
    tpf_ax = ax_t.twinx()
    tpf_ax.plot(thr, [r["tpf"] for r in swept], "s--", color="tab:orange", label="TPF")
    tpf_ax.set_ylabel("tokens per forward (TPF)", color="tab:orange")
    lines = ax_t.get_legend_handles_labels()
    more = tpf_ax.get_legend_handles_labels()
    ax_t.legend(lines[0] + more[0], lines[1] + more[1], loc="lower left", fontsize=8)
    ax_t.set_title("accuracy and TPF by threshold", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    from sglang_llada.toy import AR_TWIN_DIR, TRAINED_TOY_DIR

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=TRAINED_TOY_DIR)
    p.add_argument("--ar-twin", type=Path, default=AR_TWIN_DIR, help="also score this AR checkpoint ('' to skip)")
    p.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS))
    p.add_argument("--split", default="heldout")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-running-requests", type=int, default=16)
    p.add_argument("--server-arg", action="append", default=[], help="extra flag for the server")
    p.add_argument("--out", type=Path, default=RESULTS / "threshold_sweep")
    p.add_argument("--replot", action="store_true", help="redraw OUT.png from OUT.json; run nothing")
    args = p.parse_args(argv)
    require()  # the plot at the end needs matplotlib: fail now, not after the run
    if args.replot:
        saved = json.loads(args.out.with_suffix(".json").read_text())
        plot(saved["rows"], args.out.with_suffix(".png"), f"{args.model.name}: accuracy vs TPF")
        return 0

    rows = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        points = [(t, "llada2_threshold", f"threshold: {t}\n") for t in args.thresholds]
        points.append((ONE_PER_FORWARD, "llada2_static", "tokens_per_step: 1\n"))
        for label, algorithm, knobs in points:
            row = run_point(args.model, label, algorithm, knobs, args, Path(d))
            print(
                f"{label}: accuracy {row['accuracy']:.3f}  TPF {row['tpf']:.2f}  "
                f"{row['output_tokens_per_s']:.1f} tok/s",
                flush=True,
            )
            rows.append(row)
        if str(args.ar_twin) and (args.ar_twin / "config.json").exists():
            row = run_ar_twin(args.ar_twin, args, Path(d))
            print(f"AR twin: accuracy {row['accuracy']:.3f}  {row['output_tokens_per_s']:.1f} tok/s", flush=True)
            rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = "python bench/threshold_sweep.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = (
        f"# Threshold sweep: {args.model.name}, split {args.split}\n\n"
        f"Command: `{command.strip()}` ({time.time() - t0:.0f} s, {os.cpu_count()} CPU cores). Each point: a fresh "
        f"server, llada2_threshold with that threshold, --max-running-requests "
        f"{args.max_running_requests}, eval concurrency {args.concurrency}. {ONE_PER_FORWARD}: "
        "llada2_static, tokens_per_step 1 (one token per forward)."
    )
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    write_table(rows, args.out.with_suffix(".md"), header)
    plot(rows, args.out.with_suffix(".png"), f"{args.model.name}: accuracy vs TPF")
    print(args.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
