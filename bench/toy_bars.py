"""The toys on the multi-answer and help splits, through the server: the toys issue's bars in one run.

    .venv/bin/python bench/toy_bars.py                          # every row (bench/results/toy_bars.*)
    .venv/bin/python bench/toy_bars.py --toy 2.0=DIR --only 2.0 --out /tmp/bars   # a training run

One stock server per decoding (`python -m sglang.launch_server --model DIR` plus its flags), scored
by `sglang-llada eval` (concurrency 16, --max-running-requests 16), greedy or sampled at T=1 with
request i seeded i:

* 2.0 toy at its default (`llada2_threshold` 0.95): the splits it answered before (`heldout`,
  `json`), the out-of-format `help` split (answered with one fixed text) and the multi-answer split
  (`Fruit:`, `Pair:`, `Fruits: N`; scored by validity); then the multi-answer split at a low mask
  threshold (0.5) and at 4 tokens per step (`llada2_static`): where several answers are valid,
  tokens committed in one forward can come from different answers.
* 2.1 toy (LLaDA2.1's token-to-token stream, drafts mixed from two valid answers): its default
  (`llada2_edit` Q) on the same splits; on the multi-answer split S mode (mask threshold 0.5 plus
  edits, the final check folded into the next block) against `llada2_threshold` at S's and Q's mask
  thresholds (the same weights, no edits).
* 2.2 toy (block routing, Levenshtein edit labels): its default (`llada2_levenshtein` Q) against
  `llada2_threshold` at Q's mask threshold (no edits).
* AR twin (SGLang's in-tree Bailing MoE V2, `--trust-remote-code`), trained on the same data with
  the same budget: the same splits at its only decoding (one token per forward).
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
SAMPLED_T = 1.0

# the rows the bars compare (`bars`)
DEFAULT_20 = "default (llada2_threshold 0.95)"
S_MODE = "llada2_edit S (threshold 0.5, edits, folded check)"
S_OFF = "llada2_threshold 0.5 (S's mask threshold, no edits)"
Q_OFF = "llada2_threshold 0.7 (Q's mask threshold, no edits)"
LEV_Q = "default (llada2_levenshtein Q, folded check)"
LEV_OFF = "llada2_threshold 0.7 (Q's mask threshold, no edits)"

# (toy, label, algorithm or None (the checkpoint's default), YAML knobs, [(split, temperature)])
SERVERS: tuple[tuple[str, str, str | None, str, tuple[tuple[str, float], ...]], ...] = (
    ("2.0", DEFAULT_20, None, "",
     (("heldout", 0.0), ("json", 0.0), ("help", 0.0), ("multi", 0.0), ("multi", SAMPLED_T))),
    ("2.0", "llada2_threshold 0.5", "llada2_threshold", "threshold: 0.5\n", (("multi", 0.0), ("multi", SAMPLED_T))),
    ("2.0", "llada2_static 4 tokens per step", "llada2_static", "tokens_per_step: 4\n",
     (("multi", 0.0), ("multi", SAMPLED_T))),
    ("2.1", "default (llada2_edit Q)", None, "",
     (("heldout", 0.0), ("json", 0.0), ("help", 0.0), ("multi", 0.0), ("multi", SAMPLED_T))),
    ("2.1", S_MODE, "llada2_edit", "mode: S\n", (("multi", 0.0), ("multi", SAMPLED_T))),
    ("2.1", S_OFF, "llada2_threshold", "threshold: 0.5\n", (("multi", 0.0), ("multi", SAMPLED_T))),
    ("2.1", Q_OFF, "llada2_threshold", "threshold: 0.7\n", (("multi", 0.0), ("multi", SAMPLED_T))),
    ("2.2", LEV_Q, None, "",
     (("heldout", 0.0), ("json", 0.0), ("help", 0.0), ("multi", 0.0), ("multi", SAMPLED_T))),
    ("2.2", LEV_OFF, "llada2_threshold", "threshold: 0.7\n", (("multi", 0.0), ("multi", SAMPLED_T))),
    ("ar", "autoregressive (one token per forward)", None, "",
     (("heldout", 0.0), ("json", 0.0), ("help", 0.0), ("multi", 0.0), ("multi", SAMPLED_T))),
)


def run_server(toy: str, model: Path, server: tuple, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    from sglang_llada.eval import evaluate
    from sglang_llada.server_process import launch

    _, label, algorithm, knobs, evals = server
    flags = ["--max-running-requests", str(args.max_running_requests)]
    if toy == "ar":
        flags.append("--trust-remote-code")
    if algorithm is not None:
        flags += ["--dllm-algorithm", algorithm]
        if knobs:
            cfg = workdir / f"{len(os.listdir(workdir))}.yaml"
            cfg.write_text(knobs)
            flags += ["--dllm-algorithm-config", str(cfg)]
    log = workdir / f"server-{len(os.listdir(workdir))}.log"
    srv = launch(model, flags, workdir, log)
    rows = []
    try:
        for split_name, temperature in evals:
            summary, outcomes = evaluate(srv.url, split_name, concurrency=args.concurrency, temperature=temperature,
                                         progress=False)
            wrong = sorted({(o.example.prompt[-30:], o.completion[:110]) for o in outcomes if not o.correct})[:6]
            rows.append({"toy": toy, "label": label, "split": split_name, "flags": flags, "knobs": knobs.strip(),
                         "wrong_examples": wrong, **summary})
    finally:
        srv.stop()
    return rows


def bars(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's 2.1 / 2.2 bars, from the rows this run measured (each line says which rows)."""

    def row(toy: str, label: str, t: float) -> dict[str, Any] | None:
        return next((r for r in rows if r["toy"] == toy and r["label"] == label and r["split"] == "multi"
                     and r["temperature"] == t), None)

    out = []
    for t in (0.0, SAMPLED_T):
        how = "greedy" if t == 0.0 else f"T={t:g}"
        base, s_on, s_off = row("2.0", DEFAULT_20, t), row("2.1", S_MODE, t), row("2.1", S_OFF, t)
        if base and s_on:
            gap, ratio = s_on["accuracy"] - base["accuracy"], (s_on["tpf"] or 0) / (base["tpf"] or 1)
            out.append(f"- 2.1 S mode vs 2.0 default, multi {how}: validity {s_on['accuracy']:.3f} vs "
                       f"{base['accuracy']:.3f} ({100 * gap:+.1f} points; bar: within 2), TPF {s_on['tpf']:.2f} vs "
                       f"{base['tpf']:.2f} ({ratio:.2f}x; bar: >= 1.3x): "
                       + ("met" if gap >= -0.02 and ratio >= 1.3 else "NOT met"))
        if s_on and s_off:
            d = s_on["accuracy"] - s_off["accuracy"]
            out.append(f"- 2.1 editing on vs off at mask threshold 0.5, multi {how}: {s_on['accuracy']:.3f} vs "
                       f"{s_off['accuracy']:.3f} ({100 * d:+.1f} points; bar: >= +5): " + ("met" if d >= 0.05 else "NOT met"))
        lev, off = row("2.2", LEV_Q, t), row("2.2", LEV_OFF, t)
        if lev and off:
            d = lev["accuracy"] - off["accuracy"]
            out.append(f"- 2.2 Levenshtein vs no edits at mask threshold 0.7, multi {how}: {lev['accuracy']:.3f} vs "
                       f"{off['accuracy']:.3f} ({100 * d:+.1f} points; bar: >= +5): " + ("met" if d >= 0.05 else "NOT met"))
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 5))
    names = [f"{r['toy']} {r['split']}{' T=' + str(r['temperature']) if r['temperature'] else ''}\n{r['label']}"
             for r in rows]
    x = list(range(len(rows)))
    ax.bar(x, [r["accuracy"] for r in rows], color=["tab:blue" if r["toy"] == "ar" else "tab:orange" for r in rows])
    ax.axhline(0.98, color="grey", lw=0.8, ls="--")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("exact match / validity")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=6)
    ax.set_title("Toys on the multi-answer and help splits (server; orange: diffusion, blue: AR twin; "
                 "dashed: 0.98)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    from sglang_llada.toy import AR_TWIN_DIR, TOY_DIRS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-running-requests", type=int, default=16)
    p.add_argument("--toy", action="append", default=[], metavar="TOY=DIR",
                   help="use DIR for toy TOY (2.0, 2.1, 2.2 or ar; default: the shipped one)")
    p.add_argument("--only", default="2.0,2.1,2.2,ar", help="comma-separated toys whose rows to run")
    p.add_argument("--rows", default="", help="only the decodings whose label contains this text (default: all)")
    p.add_argument("--out", type=Path, default=RESULTS / "toy_bars")
    args = p.parse_args(argv)
    require()  # the plot at the end needs matplotlib: fail now, not after the run
    dirs = {**TOY_DIRS, "ar": AR_TWIN_DIR, **{k: Path(v) for k, v in (t.split("=", 1) for t in args.toy)}}

    t0 = time.time()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        for server in [s for s in SERVERS if s[0] in args.only.split(",") and args.rows in s[1]]:
            for r in run_server(server[0], dirs[server[0]], server, args, Path(d)):
                tpf = "n/a" if r["tpf"] is None else f"{r['tpf']:.2f}"
                print(f"{r['toy']} {r['label']} {r['split']} T={r['temperature']}: accuracy {r['accuracy']:.3f} "
                      f"{r['accuracy_per_task']} TPF {tpf} wrong {r['wrong_examples'][:3]}", flush=True)
                rows.append(r)
    command = "python bench/toy_bars.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Toys on the multi-answer and help splits",
        "",
        f"Command: `{command.strip()}` ({time.time() - t0:.0f} s, {os.cpu_count()} CPU cores). Models: "
        + ", ".join(f"{k} `{dirs[k]}`" for k in args.only.split(",")) + ". Each decoding: a fresh stock server, "
        f"--max-running-requests {args.max_running_requests}, `sglang-llada eval` at concurrency {args.concurrency}; "
        "greedy, or T=1 (request i seeded i). `multi` is scored by validity (every pick in the prompt's set, "
        "a list of the asked length), every other split by exact match; greedy repeats of one prompt give one answer.",
        "",
        "| toy | decoding | split | sampling | score | per task | TPF |",
        "|---|---|---|---|---:|---|---:|",
    ]
    for r in rows:
        per = ", ".join(f"{t} {a:.2f}" for t, a in r["accuracy_per_task"].items())
        tpf = "n/a" if r["tpf"] is None else f"{r['tpf']:.2f}"
        sampling = f"T={r['temperature']:g}" if r["temperature"] else "greedy"
        lines.append(f"| {r['toy']} | {r['label']} | {r['split']} (n={r['n']}) | {sampling} | {r['accuracy']:.3f} | "
                     f"{per} | {tpf} |")
    checked = bars(rows)
    if checked:
        lines += ["", "Bars (the toys issue), from the rows above:", "", *checked]
    lines += ["", "Wrong answers (prompt's end, completion's start; up to 6 distinct a row):", ""]
    for r in rows:
        if r["wrong_examples"]:
            sampling = f"T={r['temperature']:g}" if r["temperature"] else "greedy"
            lines.append(f"- {r['toy']} {r['label']} {r['split']} {sampling}: "
                         + "; ".join(f"`{p!r}` -> `{c!r}`" for p, c in r["wrong_examples"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    plot(rows, args.out.with_suffix(".png"))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
