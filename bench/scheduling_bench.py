"""Side by side, one run, one checkpoint, one machine: our scheduling vs SGLang's in-tree dLLM vs the
autoregressive twin -- prefill forwards and time to first token by prompt length, output tokens/s
and accuracy by concurrency.

    .venv/bin/python bench/scheduling_bench.py        # writes bench/results/scheduling_bench.*

Servers (each the stock `python -m sglang.launch_server`, started in turn, on the shipped toy):

* ours           no flags: `llada2_threshold` (0.95), whole-prompt prefill, running requests sized
                 from KV memory;
* in-tree        `--dllm-algorithm LowConfidence` (SGLang's own threshold algorithm, 0.95, which
                 gets SGLang's one-block-per-forward prompt prefill) with SGLang's dLLM default
                 of `--max-running-requests 1`;
* in-tree best   the same with `--max-running-requests 16`;
* AR twin        the autoregressive twin (same architecture, data and budget), served by SGLang's
                 in-tree BailingMoeV2 class (`--trust-remote-code`).

The in-tree rows run SGLang's dLLM scheduler and algorithm on our model class and CPU platform
(SGLang's own LLaDA2 class needs CUDA): what they measure is SGLang's scheduling and decoding,
which is what this compares.

Prefill: one streaming request per prompt length (random byte ids, distinct per length and
repeat so that nothing is in the radix cache), `max_new_tokens 1`; TTFT = time to the first
streamed chunk, and `dllm_prefill_forwards` from its `meta_info`. Throughput: `sglang-llada eval`
on the first `--limit` held-out examples at each concurrency (output tokens/s over the wall time,
exact match), each run from an empty radix cache (`/flush_cache`), and the model's work in each
run (batch forwards, token positions) from SGLang's per-forward log lines. This 2-core machine's
timings vary by +-30% from run to run, so every timing is the median of `--repeats` runs
(accuracy and TPF are the same in every run: greedy decoding).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from _deps import require

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT_LENS = (32, 128, 512, 1000, 2000, 4000)  # the toy's context is 4,096 tokens
CONCURRENCY = (1, 4, 16)


def configs(ar_twin: Path | None) -> list[tuple[str, Path | None, list[str]]]:
    from sglang_llada.toy import TRAINED_TOY_DIR

    rows: list[tuple[str, Path | None, list[str]]] = [
        ("ours", TRAINED_TOY_DIR, []),
        ("in-tree", TRAINED_TOY_DIR, ["--dllm-algorithm", "LowConfidence", "--max-running-requests", "1"]),
        ("in-tree best", TRAINED_TOY_DIR, ["--dllm-algorithm", "LowConfidence", "--max-running-requests", "16"]),
    ]
    if ar_twin is not None:
        rows.append(("AR twin", ar_twin, ["--trust-remote-code"]))
    return rows


def ttft(url: str, n_tokens: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    ids = [rng.randrange(0, 256) for _ in range(n_tokens)]
    payload = {"input_ids": ids, "stream": True, "sampling_params": {"max_new_tokens": 1, "ignore_eos": True}}
    t0 = time.perf_counter()
    first, meta = None, {}
    with requests.post(url + "/generate", json=payload, stream=True, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                first = first if first is not None else time.perf_counter() - t0
                meta = json.loads(line[6:])["meta_info"]
    return {
        "prompt_tokens": meta.get("prompt_tokens"),
        "ttft_s": first,
        "prefill_forwards": meta.get("dllm_prefill_forwards"),
        "cached_tokens": meta.get("cached_tokens"),
    }


_BATCH_LINE = re.compile(r"Prefill batch, #new-seq: \d+, #new-token: (\d+)")


def forward_work(log: str, wall_s: float) -> dict[str, Any]:
    """What the model did during one eval run, from SGLang's per-forward "Prefill batch" log
    lines (every dLLM forward, prompt or denoising, is logged as one): batch forwards, token
    positions computed, and their rates. Diffusion servers only: an AR server logs its decode
    steps only every 40th step."""
    batches = [int(n) for n in _BATCH_LINE.findall(log)]  # token positions of each forward
    if not batches:
        return {}
    positions = sum(batches)
    return {
        "batch_forwards": len(batches),
        "positions": positions,
        "positions_per_forward": positions / len(batches),
        "ms_per_forward": 1000.0 * wall_s / len(batches),
        "positions_per_s": positions / wall_s,
    }


def _median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run with the median `key` (odd counts; the lower middle for even), all repeats listed."""
    ordered = sorted(runs, key=lambda r: r[key])
    return {**ordered[(len(ordered) - 1) // 2], f"{key}_repeats": [r[key] for r in runs]}


def run_config(name: str, model: Path, server_args: list[str], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from sglang_llada.eval import evaluate
    from sglang_llada.server_process import launch

    tag = name.replace(" ", "-")
    print(f"== {name}: {model.name} {' '.join(server_args)}", file=sys.stderr, flush=True)
    server = launch(model, server_args, workdir, workdir / f"server-{tag}.log")
    try:
        requests.post(server.url + "/generate", json={"text": "warm up", "sampling_params": {"max_new_tokens": 8}}, timeout=300)
        prefill = [
            _median_run([ttft(server.url, n, seed=100_000 * (r + 1) + n) for r in range(args.repeats)], "ttft_s")
            for n in args.prompt_lens
        ]
        runs = []
        for c in args.concurrency:
            reps = []
            for _ in range(args.repeats):
                # Every repeat starts from an empty radix cache: the prompts are encoded each time.
                requests.post(server.url + "/flush_cache", timeout=60).raise_for_status()
                start = len(server.log())
                summary = evaluate(server.url, "heldout", concurrency=c, limit=args.limit)[0]
                work = forward_work(server.log()[start:], summary["wall_s"]) if summary["tpf"] is not None else {}
                reps.append({**summary, **work})
            runs.append({"concurrency": c, **_median_run(reps, "output_tokens_per_s")})
    finally:
        server.stop()
    return {"name": name, "model": model.name, "server_args": server_args, "prefill": prefill, "throughput": runs}


def _by(rows: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["name"] == name), None)


def write_table(rows: list[dict[str, Any]], path: Path, header: str) -> None:
    names = [r["name"] for r in rows]
    lines = [header, "", "## Prompt prefill (one request, `max_new_tokens 1`)", ""]
    lines += ["| prompt tokens | " + " | ".join(f"{n}: prefill forwards / TTFT s" for n in names) + " |"]
    lines += ["|---:|" + "---:|" * len(names)]
    for i, n_tok in enumerate(rows[0]["prefill"]):
        cells = []
        for r in rows:
            p = r["prefill"][i]
            fw = "-" if p["prefill_forwards"] is None else str(p["prefill_forwards"])
            cells.append(f"{fw} / {p['ttft_s']:.3f}")
        lines.append(f"| {n_tok['prompt_tokens']} | " + " | ".join(cells) + " |")
    lines += ["", "## Held-out split by concurrency", ""]
    lines += ["| concurrency | " + " | ".join(f"{n}: tok/s / acc / TPF" for n in names) + " |"]
    lines += ["|---:|" + "---:|" * len(names)]
    for i, c in enumerate(rows[0]["throughput"]):
        cells = []
        for r in rows:
            t = r["throughput"][i]
            tpf = "-" if t["tpf"] is None else f"{t['tpf']:.2f}"
            cells.append(f"{t['output_tokens_per_s']:.1f} / {t['accuracy']:.3f} / {tpf}")
        lines.append(f"| {c['concurrency']} | " + " | ".join(cells) + " |")
    dllm = [r for r in rows if r["throughput"][0].get("batch_forwards") is not None]
    if dllm:
        lines += ["", "## Model work per held-out run (from SGLang's per-forward log lines)", ""]
        lines += ["Batch forwards / token positions per forward / ms per forward / positions per second.", ""]
        lines += ["| concurrency | " + " | ".join(r["name"] for r in dllm) + " |"]
        lines += ["|---:|" + "---:|" * len(dllm)]
        for i, c in enumerate(rows[0]["throughput"]):
            cells = []
            for r in dllm:
                t = r["throughput"][i]
                cells.append(f"{t['batch_forwards']} / {t['positions_per_forward']:.0f} / {t['ms_per_forward']:.0f} / {t['positions_per_s']:.0f}")
            lines.append(f"| {c['concurrency']} | " + " | ".join(cells) + " |")
    ours = _by(rows, "ours")
    if ours is not None:
        lines += ["", "## Ratios (ours / other, output tokens/s)", ""]
        others = [r for r in rows if r is not ours]
        lines += ["| concurrency | " + " | ".join(f"ours / {r['name']}" for r in others) + " |"]
        lines += ["|---:|" + "---:|" * len(others)]
        for i, t in enumerate(ours["throughput"]):
            cells = [f"{t['output_tokens_per_s'] / r['throughput'][i]['output_tokens_per_s']:.2f}x" for r in others]
            lines.append(f"| {t['concurrency']} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in rows:
        x = [p["prompt_tokens"] for p in r["prefill"]]
        a.plot(x, [p["ttft_s"] for p in r["prefill"]], "o-", label=r["name"])
        b.plot([t["concurrency"] for t in r["throughput"]], [t["output_tokens_per_s"] for t in r["throughput"]], "o-", label=r["name"])
    a.set(xscale="log", yscale="log", xlabel="prompt tokens", ylabel="time to first token (s)", title="prefill")
    b.set(xscale="log", xlabel="concurrent requests", ylabel="output tokens/s", title="held-out split throughput")
    b.set_xticks(list(CONCURRENCY), [str(c) for c in CONCURRENCY])
    for ax in (a, b):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    from sglang_llada.toy import AR_TWIN_DIR

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ar-twin", type=Path, default=AR_TWIN_DIR, help="AR checkpoint ('' to skip)")
    p.add_argument("--limit", type=int, default=80, help="held-out examples per concurrency level")
    p.add_argument("--prompt-lens", type=int, nargs="+", default=list(PROMPT_LENS))
    p.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    p.add_argument("--repeats", type=int, default=3, help="timings are the median of this many runs")
    p.add_argument("--out", type=Path, default=RESULTS / "scheduling_bench")
    args = p.parse_args(argv)
    require()  # the plot at the end needs matplotlib: fail now, not after the run
    ar = args.ar_twin if str(args.ar_twin) and (Path(args.ar_twin) / "config.json").exists() else None
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_config(name, model, sargs, args, Path(tmp)) for name, model, sargs in configs(ar)]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    header = (
        f"# Scheduling bench (shipped toy, CPU)\n\n`python bench/scheduling_bench.py "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}`; commit {commit}; "
        f"{platform.machine()}, {os.cpu_count()} cores, torch threads default; {time.time() - t0:.0f} s total. "
        f"Throughput rows: first {args.limit} held-out examples, greedy, max_new_tokens 96. "
        f"Every timing is the median of {args.repeats} runs (all runs in the .json)."
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"header": header, "rows": rows}, indent=1) + "\n")
    write_table(rows, args.out.with_suffix(".md"), header)
    plot(rows, args.out.with_suffix(".png"), f"ours vs SGLang in-tree dLLM vs AR twin ({os.cpu_count()} CPU cores)")
    print(args.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
