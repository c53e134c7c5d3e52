"""Fewer forwards for the same answer: forwards and token positions per output token, tok/s and
accuracy, side by side in one run on the shipped toy, for the decoding schedules that trade
forwards for quality.

    .venv/bin/python bench/forwards_bench.py        # writes bench/results/forwards.{json,md,png}

Servers (each the stock `python -m sglang.launch_server` on the shipped trained toy, in turn):

* default         no flags: `llada2_threshold` 0.95 (several tokens per forward), which folds each
                  block's KV store into the next block's first forward (`fold_store: auto`, on on
                  this CPU platform);
* no fold         the same with `fold_store: 'off'`: SGLang's way, one forward per block that only
                  stores the finished block's KV (the default before folding);
* exact           `--dllm-algorithm llada2_exact` (draft_depth 8): one-per-step output, drafted and
                  verified several states per forward;
* exact d16       the same with `draft_depth: 16`;
* static 1/step   `llada2_static` with `tokens_per_step: 1` (folded too): one token per forward,
                  the quality ceiling the exact rows must equal token for token;
* in-tree         SGLang's own `LowConfidence` (0.95) with `--max-running-requests 16`.

Per concurrency level (1 and 16), the first `--limit` held-out examples, greedy, from an empty
radix cache: output tokens/s over the wall time (median of `--repeats` runs: this 2-core machine
varies by +-30%), exact match, and the model's work: batch forwards and token positions, from
SGLang's per-forward log lines ("Prefill batch ... #new-token") plus llada2_exact's own line per
run for its verification forwards (they do not pass through SGLang's scheduler) and fold_store's
line per folded forward for the finished blocks it re-encodes (SGLang's line counts only the batch's
own blocks). "same as 1/step"
is the share of requests whose output ids equal the static 1/step row's. For the first example,
each of our schedules also writes its trajectory page (`forwards_trace_<schedule>.html`, the page
of `sglang-llada trace`): which forward committed each token.

"forwards vs no fold" is each row's batch forwards over the no-fold row's (the issue's target for
folding: <= 0.8x at identical outputs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from _deps import require

RESULTS = Path(__file__).resolve().parent / "results"
CONCURRENCY = (1, 16)
MAX_NEW = 96

_BATCH_LINE = re.compile(r"Prefill batch, #new-seq: \d+, #new-token: (\d+)")
_EXACT_LINE = re.compile(r"llada2_exact: (\d+) verification forwards, (\d+) positions")
_FOLD_LINE = re.compile(r"fold_store: (\d+) finished blocks? re-encoded, (\d+) positions")


def configs(workdir: Path) -> list[tuple[str, list[str]]]:
    def yaml(name: str, text: str) -> str:
        path = workdir / f"{name}.yaml"
        path.write_text(text)
        return str(path)

    return [
        ("default", []),
        ("no fold", ["--dllm-algorithm-config", yaml("nofold", "fold_store: 'off'\n")]),
        ("exact", ["--dllm-algorithm", "llada2_exact"]),
        ("exact d16", ["--dllm-algorithm", "llada2_exact", "--dllm-algorithm-config", yaml("d16", "draft_depth: 16\n")]),
        ("static 1/step", ["--dllm-algorithm", "llada2_static", "--dllm-algorithm-config", yaml("s1", "tokens_per_step: 1\n")]),
        ("in-tree", ["--dllm-algorithm", "LowConfidence", "--max-running-requests", "16"]),
    ]


def work(log: str) -> dict[str, int]:
    """Batch forwards and token positions the model computed, from the server log of one run."""
    batches = [int(n) for n in _BATCH_LINE.findall(log)]
    exact = [(int(f), int(p)) for f, p in _EXACT_LINE.findall(log)]
    folded = [int(p) for _, p in _FOLD_LINE.findall(log)]  # riding in a forward SGLang logged already
    return {
        "batch_forwards": len(batches) + sum(f for f, _ in exact),
        "positions": sum(batches) + sum(p for _, p in exact) + sum(folded),
    }


def flush(url: str, timeout: float = 120.0) -> None:
    """Empties the radix cache; SGLang answers 400 until the scheduler is fully idle."""
    deadline = time.time() + timeout
    while requests.post(url + "/flush_cache", timeout=60).status_code != 200:
        if time.time() > deadline:
            raise RuntimeError(f"{url}: /flush_cache refused for {timeout:.0f} s")
        time.sleep(0.2)


def one_run(url: str, prompts: list[str], concurrency: int) -> tuple[list[dict[str, Any]], float]:
    def call(prompt: str) -> dict[str, Any]:
        payload = {"text": prompt, "sampling_params": {"max_new_tokens": MAX_NEW, "temperature": 0.0}}
        r = requests.post(url + "/generate", json=payload, timeout=600)
        r.raise_for_status()
        return r.json()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        outs = list(pool.map(call, prompts))
    return outs, time.perf_counter() - t0


def run_config(name: str, server_args: list[str], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from tqdm import tqdm

    from sglang_llada.eval import render_prompts
    from sglang_llada.server_process import launch
    from sglang_llada.toy import TRAINED_TOY_DIR
    from sglang_llada.toy.tasks import heldout_split, is_correct

    examples = heldout_split()[: args.limit]
    prompts = render_prompts(examples)
    tag = name.replace(" ", "-").replace("/", "-")
    server = launch(TRAINED_TOY_DIR, server_args, workdir, workdir / f"server-{tag}.log")
    levels = []
    try:
        requests.post(server.url + "/generate", json={"text": "warm up", "sampling_params": {"max_new_tokens": 8}}, timeout=300)
        bar = tqdm(total=len(args.concurrency) * args.repeats, desc=name, file=sys.stderr)
        for c in args.concurrency:
            reps = []
            for _ in range(args.repeats):
                flush(server.url)
                start = len(server.log())
                outs, wall = one_run(server.url, prompts, c)
                tokens = sum(o["meta_info"]["completion_tokens"] for o in outs)
                reps.append({
                    "wall_s": wall,
                    "output_tokens": tokens,
                    "output_tokens_per_s": tokens / wall,
                    "accuracy": sum(is_correct(e, o["text"]) for e, o in zip(examples, outs)) / len(outs),
                    "request_forwards": sum(o["meta_info"].get("dllm_forwards", 0) for o in outs),
                    "request_positions": sum(o["meta_info"].get("dllm_positions", 0) for o in outs),
                    "output_ids": [o["output_ids"] for o in outs],
                    **work(server.log()[start:]),
                })
                bar.update(1)
            ordered = sorted(reps, key=lambda r: r["output_tokens_per_s"])
            median = ordered[(len(ordered) - 1) // 2]
            levels.append({"concurrency": c, **median, "tok_s_repeats": [r["output_tokens_per_s"] for r in reps]})
        bar.close()
        if args.traces and "LowConfidence" not in server_args:  # the trajectory page needs our algorithms
            from sglang_llada.trace_view import fetch_trace, render_html

            data = fetch_trace(server.url, prompts[0], MAX_NEW)
            page = args.out.parent / f"{args.out.name}_trace_{tag}.html"
            page.write_text(render_html(data, f"{name}: {examples[0].prompt}"), encoding="utf-8")
    finally:
        server.stop()
    return {"name": name, "server_args": server_args, "levels": levels}


def add_ratios(rows: list[dict[str, Any]]) -> None:
    ref = next(r for r in rows if r["name"] == "static 1/step")
    unfolded = next(r for r in rows if r["name"] == "no fold")
    for r in rows:
        for lvl, ref_lvl, def_lvl in zip(r["levels"], ref["levels"], unfolded["levels"]):
            n = lvl["output_tokens"]
            lvl["forwards_per_token"] = lvl["batch_forwards"] / n
            lvl["positions_per_token"] = lvl["positions"] / n
            same = sum(a == b for a, b in zip(lvl["output_ids"], ref_lvl["output_ids"]))
            lvl["same_as_one_per_step"] = same / len(lvl["output_ids"])
            lvl["forwards_vs_one_per_step"] = lvl["batch_forwards"] / ref_lvl["batch_forwards"]
            lvl["forwards_vs_no_fold"] = lvl["batch_forwards"] / def_lvl["batch_forwards"]
            lvl["same_as_no_fold"] = sum(a == b for a, b in zip(lvl["output_ids"], def_lvl["output_ids"])) / len(lvl["output_ids"])


def write_table(rows: list[dict[str, Any]], path: Path, header: str) -> None:
    lines = [header, ""]
    for i, c in enumerate(rows[0]["levels"]):
        lines += [f"## Concurrency {c['concurrency']}", ""]
        lines += ["| schedule | batch forwards / token | positions / token | tok/s | accuracy | same as 1/step | "
                  "same as no fold | forwards vs 1/step | forwards vs no fold |"]
        lines += ["|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            lv = r["levels"][i]
            lines.append(
                f"| {r['name']} | {lv['forwards_per_token']:.3f} | {lv['positions_per_token']:.1f} | "
                f"{lv['output_tokens_per_s']:.1f} | {lv['accuracy']:.3f} | {lv['same_as_one_per_step']:.3f} | "
                f"{lv['same_as_no_fold']:.3f} | {lv['forwards_vs_one_per_step']:.2f}x | {lv['forwards_vs_no_fold']:.2f}x |"
            )
        lines.append("")
    path.write_text("\n".join(lines))


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows[0]["levels"]), figsize=(5.5 * len(rows[0]["levels"]), 4.2), squeeze=False)
    for ax, i in zip(axes[0], range(len(rows[0]["levels"]))):
        for r in rows:
            lv = r["levels"][i]
            ax.scatter(lv["forwards_per_token"], lv["output_tokens_per_s"], s=40)
            ax.annotate(f"{r['name']} ({lv['accuracy']:.2f})", (lv["forwards_per_token"], lv["output_tokens_per_s"]),
                        fontsize=8, xytext=(4, 4), textcoords="offset points")
        ax.set(xlabel="batch forwards per output token", ylabel="output tokens/s",
               title=f"concurrency {rows[0]['levels'][i]['concurrency']} (accuracy in brackets)")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--limit", type=int, default=80, help="held-out examples per run")
    p.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    p.add_argument("--repeats", type=int, default=3, help="tok/s is the median of this many runs")
    p.add_argument("--out", type=Path, default=RESULTS / "forwards")
    p.add_argument("--no-traces", dest="traces", action="store_false",
                   help="skip the trajectory pages (OUT_trace_<schedule>.html, `sglang-llada trace`) of the first example")
    args = p.parse_args(argv)
    require()  # the plot at the end needs matplotlib: fail now, not after the run
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_config(name, sargs, args, Path(tmp)) for name, sargs in configs(Path(tmp))]
    add_ratios(rows)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    header = (
        f"# Forwards bench (shipped toy, CPU)\n\n`python bench/forwards_bench.py "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}`; commit {commit}; "
        f"{platform.machine()}, {os.cpu_count()} cores; {time.time() - t0:.0f} s total. First {args.limit} held-out "
        f"examples, greedy, max_new_tokens {MAX_NEW}, empty radix cache per run; tok/s is the median of "
        f"{args.repeats} runs, forwards and positions are the same in every run. Batch forwards count every "
        f"model forward the server ran (a forward of 16 requests counts once)."
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    slim = [{**r, "levels": [{k: v for k, v in lv.items() if k != "output_ids"} for lv in r["levels"]]} for r in rows]
    args.out.with_suffix(".json").write_text(json.dumps({"header": header, "rows": slim}, indent=1) + "\n")
    write_table(rows, args.out.with_suffix(".md"), header)
    plot(rows, args.out.with_suffix(".png"), f"forwards per token vs speed on the shipped toy ({os.cpu_count()} CPU cores)")
    print(args.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
