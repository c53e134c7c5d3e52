"""Each LLaDA2.X generation's default decoding and its alternatives, side by side, through the server.

    .venv/bin/python bench/generations.py      # writes bench/results/generations.{md,json,png}

One stock server per row (`python -m sglang.launch_server --model DIR` plus the row's flags),
scored by `sglang-llada eval` on the toy tasks (greedy, concurrency 16, 16 running requests):

* 2.0: the shipped trained toy (`sglang_llada/toy/checkpoints/llada2-toy`) with no flags (its
  generation's default, `llada2_threshold` 0.95), and decoded as a 2.1 checkpoint would be
  (`llada2_edit` Q and S) next to plain thresholds at the same mask thresholds (0.7, 0.5). The
  toy was not trained for editing: these rows show what editing costs a 2.0 model, not what
  it gains on a 2.1 one (a trained 2.1 toy is the toy issue's).
* 2.2: a tiny random-weight 2.2 checkpoint (`sglang-llada tiny-checkpoint DIR --generation 2.2`:
  block routing, DELETE / SPLIT tokens). Accuracy means nothing on random weights; the rows give
  TPF, tokens/s and how many DELETE / SPLIT ids reached the output (`skip_special_tokens` off,
  16 requests) for our default `llada2_levenshtein` (Q, S), SGLang's in-tree
  `JointThresholdInDel` and `llada2_threshold`.
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

RESULTS = Path(__file__).resolve().parent / "results"

# (generation, label, server flags (algorithm, YAML knobs or None), eval limit or None)
ROWS: tuple[tuple[str, str, str | None, str, int | None], ...] = (
    ("2.0", "default (llada2_threshold 0.95)", None, "", None),
    ("2.0", "llada2_edit mode Q", "llada2_edit", "mode: Q\n", None),
    ("2.0", "llada2_threshold 0.7 (Q's mask threshold)", "llada2_threshold", "threshold: 0.7\n", None),
    ("2.0", "llada2_edit mode S", "llada2_edit", "mode: S\n", None),
    ("2.0", "llada2_threshold 0.5 (S's mask threshold)", "llada2_threshold", "threshold: 0.5\n", None),
    ("2.2", "default (llada2_levenshtein Q)", None, "", 80),
    ("2.2", "llada2_levenshtein mode S", "llada2_levenshtein", "mode: S\n", 80),
    ("2.2", "JointThresholdInDel (SGLang in-tree)", "JointThresholdInDel", "", 80),
    ("2.2", "llada2_threshold 0.95", "llada2_threshold", "", 80),
)


def _control_count(url: str, ids: set[int], n: int = 16) -> int:
    """DELETE / SPLIT ids in the output of n greedy requests (special tokens kept)."""
    from sglang_llada.eval import render_prompts
    from sglang_llada.server_process import generate
    from sglang_llada.toy.tasks import split

    found = 0
    for prompt in render_prompts(split("heldout")[:n]):
        out = generate(url, {"text": prompt, "sampling_params": {
            "max_new_tokens": 64, "temperature": 0.0, "skip_special_tokens": False, "ignore_eos": True}})
        found += sum(t in ids for t in out["output_ids"])
    return found


def run_row(
    model: Path, row: tuple, args: argparse.Namespace, workdir: Path, split_name: str = "heldout", temperature: float = 0.0,
) -> dict[str, Any]:
    """One stock server on `model` with the row's algorithm and knobs, scored on `split_name`
    (`args`: concurrency, max_running_requests; greedy, or sampled at `temperature` with seeds 0..);
    for a 2.2 row, DELETE / SPLIT in its outputs."""
    from sglang_llada.eval import evaluate
    from sglang_llada.server_process import launch

    generation, label, algorithm, knobs, limit = row
    flags = ["--max-running-requests", str(args.max_running_requests)]
    if algorithm is not None:
        flags += ["--dllm-algorithm", algorithm]
        if knobs:
            cfg = workdir / f"{len(os.listdir(workdir))}.yaml"
            cfg.write_text(knobs)
            flags += ["--dllm-algorithm-config", str(cfg)]
    log = workdir / f"server-{len(os.listdir(workdir))}.log"
    server = launch(model, flags, workdir, log)
    try:
        summary, _ = evaluate(server.url, split_name, concurrency=args.concurrency, limit=limit, temperature=temperature)
        controls = None
        if generation == "2.2":
            config = json.loads((model / "config.json").read_text())
            controls = _control_count(server.url, {config["delete_token_id"], config["split_token_id"]})
        chosen = next((ln for ln in server.log().splitlines() if "sglang-llada plugin active" in ln), "")
    finally:
        server.stop()
    return {"generation": generation, "label": label, "flags": flags, "knobs": knobs.strip(),
            "control_tokens_in_output": controls, "plugin_line": chosen.split("] ", 1)[-1], **summary}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [5, 4]})
    for ax, gen in zip(axes, ("2.0", "2.2")):
        sel = [r for r in rows if r["generation"] == gen]
        names = [r["label"].replace(" (", "\n(") for r in sel]
        x = range(len(sel))
        ax.bar([i - 0.2 for i in x], [r["tpf"] for r in sel], width=0.4, label="tokens per forward")
        ax.set_ylabel("tokens per forward")
        ax.set_xticks(list(x), names, rotation=30, ha="right", fontsize=7)
        if gen == "2.0":
            ax2 = ax.twinx()
            ax2.bar([i + 0.2 for i in x], [r["accuracy"] for r in sel], width=0.4, color="tab:orange", label="accuracy")
            ax2.set_ylim(0, 1.05)
            ax2.set_ylabel("held-out exact match")
            ax2.legend(loc="upper right", fontsize=7)
            ax.set_title("2.0: shipped trained toy")
        else:
            ax.set_title("2.2: tiny random-weight checkpoint (TPF only)")
        ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    from sglang_llada.toy import TRAINED_TOY_DIR
    from sglang_llada.toy.checkpoint import write_tiny_checkpoint

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-running-requests", type=int, default=16)
    p.add_argument("--out", type=Path, default=RESULTS / "generations")
    p.add_argument("--replot", action="store_true", help="redraw the plot from the JSON")
    args = p.parse_args(argv)
    require()  # the plot at the end needs matplotlib: fail now, not after the run
    if args.replot:
        plot(json.loads(args.out.with_suffix(".json").read_text())["rows"], args.out.with_suffix(".png"))
        return 0

    t0 = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tiny22 = write_tiny_checkpoint(Path(d) / "tiny-2.2", seed=0, generation="2.2")
        work = Path(d) / "work"
        work.mkdir()
        for row in ROWS:
            model = TRAINED_TOY_DIR if row[0] == "2.0" else tiny22
            r = run_row(model, row, args, work)
            print(f"{r['generation']} {r['label']}: accuracy {r['accuracy']:.3f} TPF {r['tpf']:.2f} "
                  f"tok/s {r['output_tokens_per_s']:.1f} controls {r['control_tokens_in_output']}", flush=True)
            rows.append(r)
    command = "python bench/generations.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# LLaDA2.X generations: default decoding and alternatives",
        "",
        f"Command: `{command.strip()}` ({time.time() - t0:.0f} s, {os.cpu_count()} CPU cores). Each row: a "
        f"fresh stock server, --max-running-requests {args.max_running_requests}, `sglang-llada eval` "
        f"held-out split at concurrency {args.concurrency}, greedy. 2.0 rows: the shipped trained toy "
        "(240 examples; not trained for editing). 2.2 rows: a tiny random-weight 2.2 checkpoint (first 80 "
        "examples; accuracy is meaningless there) and the DELETE / SPLIT ids found in 16 outputs of 64 tokens.",
        "",
        "| generation | decoding | accuracy | TPF | output tok/s | DELETE/SPLIT in output |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        acc = f"{r['accuracy']:.3f}" if r["generation"] == "2.0" else "n/a"
        ctl = "-" if r["control_tokens_in_output"] is None else str(r["control_tokens_in_output"])
        lines.append(f"| {r['generation']} | {r['label']} | {acc} | {r['tpf']:.2f} | "
                     f"{r['output_tokens_per_s']:.1f} | {ctl} |")
    lines += ["", "What the plugin logged for the no-flag rows:", ""]
    lines += [f"- {r['generation']}: `{r['plugin_line']}`" for r in rows if "default" in r["label"]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    plot(rows, args.out.with_suffix(".png"))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
