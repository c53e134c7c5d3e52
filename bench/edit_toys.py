"""The trained 2.1 and 2.2 toys against the 2.0 toy they were fine-tuned from, through the server.

    .venv/bin/python bench/edit_toys.py                   # every row (writes bench/results/edit_toys.*)
    .venv/bin/python bench/edit_toys.py --only 2.2 --toy 2.2=DIR --limit 60 --out ...  # a training run

One stock server per row (`python -m sglang.launch_server --model DIR` plus the row's flags),
scored by `sglang-llada eval` on a toy split (concurrency 16, --max-running-requests 16; greedy, or
sampled at temperature 2 with one seed per request where the row says T=2):

* 2.0 toy (`llada2-toy`) at its default (`llada2_threshold` 0.95): the reference row of the 2.1 bar.
* 2.1 toy (`llada2.1-toy`, trained with LLaDA2.1's token-to-token stream): its default
  (`llada2_edit` Q, from its generation_config), S mode, and S's mask threshold without editing
  (`llada2_threshold` 0.5); then a low mask threshold (0.1) with editing (edit_threshold 0.5) and
  without: where drafts are wrong, does editing repair them? Greedy drafts of this toy are nearly
  never wrong, so the same two comparisons are also run on sampled drafts (T=2).
* 2.2 toy (`llada2.2-toy`, or `--toy 2.2=DIR` for a checkpoint of `python -m sglang_llada.toy.train
  --generation 2.2 ...`; block routing, trained with Levenshtein edit labels): its default
  (`llada2_levenshtein` Q), S mode, and the same model without DELETE / SPLIT (`llada2_edit` Q) and
  without any editing (`llada2_threshold` 0.7, Q's mask threshold), on the JSON split (results of
  1-4 digits: where "}" goes varies) and the held-out split; then a low mask threshold (0.1) with
  Levenshtein edits and without, on both: the 2.2 bar; and the sampled comparisons of the 2.1 toy.
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

# (toy, split, label, algorithm or None (the checkpoint's default), YAML knobs, temperature: 0 greedy)
ROWS: tuple[tuple[str, str, str, str | None, str, float], ...] = (
    ("2.0", "heldout", "default (llada2_threshold 0.95)", None, "", 0.0),
    ("2.1", "heldout", "default (llada2_edit Q)", None, "", 0.0),
    ("2.1", "heldout", "llada2_edit S", "llada2_edit", "mode: S\n", 0.0),
    ("2.1", "heldout", "llada2_threshold 0.5 (S without editing)", "llada2_threshold", "threshold: 0.5\n", 0.0),
    ("2.1", "heldout", "llada2_edit threshold 0.1, edit 0.5", "llada2_edit", "threshold: 0.1\nedit_threshold: 0.5\nmax_edit_steps: 16\n", 0.0),
    ("2.1", "heldout", "llada2_threshold 0.1 (without editing)", "llada2_threshold", "threshold: 0.1\n", 0.0),
    # sampled drafts (temperature 2, seeded): wrong tokens that greedy decoding of these toys never
    # writes; editing on vs off at the same mask threshold (Q's 0.7, and 0.1)
    ("2.1", "heldout", "T=2: llada2_edit Q", "llada2_edit", "mode: Q\n", 2.0),
    ("2.1", "heldout", "T=2: llada2_threshold 0.7 (Q without editing)", "llada2_threshold", "threshold: 0.7\n", 2.0),
    ("2.1", "heldout", "T=2: llada2_edit threshold 0.1, edit 0.5", "llada2_edit", "threshold: 0.1\nedit_threshold: 0.5\nmax_edit_steps: 16\n", 2.0),
    ("2.1", "heldout", "T=2: llada2_threshold 0.1 (without editing)", "llada2_threshold", "threshold: 0.1\n", 2.0),
    ("2.2", "json", "default (llada2_levenshtein Q)", None, "", 0.0),
    ("2.2", "json", "llada2_levenshtein S", "llada2_levenshtein", "mode: S\n", 0.0),
    ("2.2", "json", "llada2_edit Q (no DELETE / SPLIT)", "llada2_edit", "mode: Q\n", 0.0),
    ("2.2", "json", "llada2_threshold 0.7 (no editing)", "llada2_threshold", "threshold: 0.7\n", 0.0),
    ("2.2", "heldout", "default (llada2_levenshtein Q)", None, "", 0.0),
    ("2.2", "heldout", "llada2_threshold 0.7 (no editing)", "llada2_threshold", "threshold: 0.7\n", 0.0),
    # a low mask threshold makes drafts wrong (shifted copies, a misplaced "}"): the 2.2 bar's
    # comparison, Levenshtein edits on vs off at the same mask threshold
    ("2.2", "json", "llada2_levenshtein threshold 0.1, edit 0.5", "llada2_levenshtein", "threshold: 0.1\nedit_threshold: 0.5\n", 0.0),
    ("2.2", "json", "llada2_threshold 0.1 (without editing)", "llada2_threshold", "threshold: 0.1\n", 0.0),
    ("2.2", "heldout", "llada2_levenshtein threshold 0.1, edit 0.5", "llada2_levenshtein", "threshold: 0.1\nedit_threshold: 0.5\n", 0.0),
    ("2.2", "heldout", "llada2_threshold 0.1 (without editing)", "llada2_threshold", "threshold: 0.1\n", 0.0),
    ("2.2", "heldout", "T=2: llada2_levenshtein Q", "llada2_levenshtein", "mode: Q\n", 2.0),
    ("2.2", "heldout", "T=2: llada2_threshold 0.7 (Q without editing)", "llada2_threshold", "threshold: 0.7\n", 2.0),
    ("2.2", "heldout", "T=2: llada2_levenshtein threshold 0.1, edit 0.5", "llada2_levenshtein", "threshold: 0.1\nedit_threshold: 0.5\n", 2.0),
    ("2.2", "heldout", "T=2: llada2_threshold 0.1 (without editing)", "llada2_threshold", "threshold: 0.1\n", 2.0),
)


def run_row(model: Path, row: tuple, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """generations.py's row runner (one stock server, `sglang-llada eval`) on the row's split."""
    from generations import run_row as run_generation_row

    toy, split_name, label, algorithm, knobs, temperature = row
    r = run_generation_row(model, (toy, label, algorithm, knobs, args.limit), args, workdir, split_name, temperature)
    return {"toy": toy, "split": split_name, **r}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 5))
    names = [f"{r['toy']} {r['split']}\n{r['label']}" for r in rows]
    x = list(range(len(rows)))
    ax.bar([i - 0.2 for i in x], [r["accuracy"] for r in rows], width=0.4, label="exact match", color="tab:orange")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("exact match")
    ax2 = ax.twinx()
    ax2.bar([i + 0.2 for i in x], [r["tpf"] for r in rows], width=0.4, label="tokens per forward")
    ax2.set_ylabel("tokens per forward")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=6)
    ax.legend(loc="upper left", fontsize=7)
    ax2.legend(loc="upper right", fontsize=7)
    ax.set_title("Trained 2.1 / 2.2 toys: editing on and off (server; greedy, or sampled at T=2)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    from sglang_llada.toy import TOY_DIRS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-running-requests", type=int, default=16)
    p.add_argument("--limit", type=int, default=None, help="first N examples of each split")
    p.add_argument("--toy", action="append", default=[], metavar="GEN=DIR",
                   help="use DIR for toy GEN (default: the shipped one)")
    p.add_argument("--only", default="2.0,2.1,2.2", help="comma-separated toys whose rows to run")
    p.add_argument("--splits", default="heldout,json", help="comma-separated splits whose rows to run")
    p.add_argument("--out", type=Path, default=RESULTS / "edit_toys")
    args = p.parse_args(argv)
    require()  # the plot at the end needs matplotlib: fail now, not after the run
    dirs = dict(TOY_DIRS, **{k: Path(v) for k, v in (t.split("=", 1) for t in args.toy)})
    missing = sorted({r[0] for r in ROWS if r[0] in args.only.split(",")} - set(dirs))
    if missing:
        p.error(f"no checkpoint for toy {', '.join(missing)}: pass --toy GEN=DIR or leave it out of --only")

    t0 = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for row in [r for r in ROWS if r[0] in args.only.split(",") and r[1] in args.splits.split(",")]:
            r = run_row(dirs[row[0]], row, args, Path(d))
            print(f"{r['toy']} {r['split']} {r['label']}: accuracy {r['accuracy']:.3f} TPF {r['tpf']:.2f} "
                  f"tok/s {r['output_tokens_per_s']:.1f}", flush=True)
            rows.append(r)
    command = "python bench/edit_toys.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Trained 2.1 and 2.2 toys: editing on and off",
        "",
        f"Command: `{command.strip()}` ({time.time() - t0:.0f} s, {os.cpu_count()} CPU cores). Each row: a "
        f"fresh stock server on the toy, --max-running-requests {args.max_running_requests}, `sglang-llada eval` "
        f"at concurrency {args.concurrency}, greedy unless the row says T=2 (temperature 2, request i seeded "
        f"with sampling_seed i), exact match.",
        "",
        "| toy | split | decoding | exact match | TPF | output tok/s |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        ctl = "" if r["control_tokens_in_output"] is None else f"; DELETE/SPLIT in 16 outputs: {r['control_tokens_in_output']}"
        per = ", ".join(f"{t} {a:.2f}" for t, a in r["accuracy_per_task"].items())
        lines.append(f"| {r['toy']} | {r['split']} | {r['label']}{ctl} | {r['accuracy']:.3f} ({per}) | {r['tpf']:.2f} | "
                     f"{r['output_tokens_per_s']:.1f} |")
    lines += ["", "What the plugin logged for the no-flag rows:", ""]
    lines += [f"- {r['toy']}: `{r['plugin_line']}`" for r in rows if r["label"].startswith("default")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    plot(rows, args.out.with_suffix(".png"))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
