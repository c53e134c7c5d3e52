"""The editing decoders' folded final check: forwards per output token with and without it, on the
shipped LLaDA2.1 and LLaDA2.2 toys (held-out split), at identical outputs.

    .venv/bin/python bench/folded_check_bench.py      # writes bench/results/folded_check.{json,md}

Per toy, two stock servers in turn (no flags: the checkpoint's own decoder, llada2_edit mode Q on the
2.1 toy, llada2_levenshtein mode Q on the 2.2 toy): the default, which folds each block's final check
into the next block's first forward (`fold_store: auto`, on on this CPU platform), and the same with
`fold_store: 'off'` (one forward per block that sees the block final and changes nothing). Each runs
the first `--limit` held-out examples one at a time, greedy and seeded-sampled (`sglang-llada eval
--temperature T --seed S`: request i gets seed S + i), max_new_tokens 96, and reports each request's
own forwards (`meta_info.dllm_forwards`: with one request at a time, the batch forwards too), per
output token and per decoded block, the share of identical outputs, exact-match accuracy, and how
many held blocks their folded check changed (rolled back: the next block's step discarded), from the
server's log lines.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

RESULTS = Path(__file__).resolve().parent / "results"
MAX_NEW = 96
BLOCK = 32
TOYS = {"2.1": ("TOY_21_DIR", 2.0), "2.2": ("TOY_22_DIR", 1.0)}  # toy, sampling temperature


def blocks(out: dict[str, Any]) -> int:
    p, c = out["meta_info"]["prompt_tokens"], out["meta_info"]["completion_tokens"]
    return -(-(p + c) // BLOCK) - p // BLOCK


def run_server(toy: Path, args: list[str], workdir: Path, tag: str, limit: int, temperatures: list[float], seed: int) -> dict[str, Any]:
    from tqdm import tqdm

    from sglang_llada.eval import render_prompts
    from sglang_llada.server_process import launch
    from sglang_llada.toy.tasks import heldout_split, is_correct

    examples = heldout_split()[:limit]
    prompts = render_prompts(examples)
    server = launch(toy, args, workdir, workdir / f"server-{tag}.log")
    runs = {}
    try:
        for t in temperatures:
            start = len(server.log())
            outs = []
            for i, prompt in enumerate(tqdm(prompts, desc=f"{tag} T={t}", file=sys.stderr)):
                params: dict[str, Any] = {"max_new_tokens": MAX_NEW, "temperature": t}
                if t > 0:
                    params["sampling_seed"] = seed + i
                r = requests.post(server.url + "/generate", json={"text": prompt, "sampling_params": params}, timeout=600)
                r.raise_for_status()
                outs.append(r.json())
            runs[str(t)] = {
                "output_ids": [o["output_ids"] for o in outs],
                "forwards": [o["meta_info"]["dllm_forwards"] for o in outs],
                "tokens": [o["meta_info"]["completion_tokens"] for o in outs],
                "blocks": [blocks(o) for o in outs],
                "correct": [is_correct(e, o["text"]) for e, o in zip(examples, outs)],
            }
            log = server.log()[start:]
            runs[str(t)]["folded_forwards"] = len(re.findall(r"fold_store: \d+ finished blocks? re-encoded", log))
            runs[str(t)]["rolled_back"] = sum(int(n) for n in re.findall(r"fold_store: (\d+) held blocks? changed", log))
    finally:
        server.stop()
    return {"runs": runs}


def summarize(on: dict[str, Any], off: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for t, a in on["runs"].items():
        b = off["runs"][t]
        tokens = sum(b["tokens"])
        rows.append({
            "temperature": float(t),
            "requests": len(b["tokens"]),
            "output_tokens": tokens,
            "blocks": sum(b["blocks"]),
            "forwards_off": sum(b["forwards"]),
            "forwards_on": sum(a["forwards"]),
            "forwards_per_token_off": sum(b["forwards"]) / tokens,
            "forwards_per_token_on": sum(a["forwards"]) / tokens,
            "forwards_per_block_off": sum(b["forwards"]) / sum(b["blocks"]),
            "forwards_per_block_on": sum(a["forwards"]) / sum(b["blocks"]),
            "saved_per_boundary": (sum(b["forwards"]) - sum(a["forwards"])) / max(1, sum(b["blocks"]) - len(b["blocks"])),
            "folded_forwards": a["folded_forwards"],
            "rolled_back": a["rolled_back"],
            "same_outputs": sum(x == y for x, y in zip(a["output_ids"], b["output_ids"])) / len(b["output_ids"]),
            "accuracy_on": sum(a["correct"]) / len(a["correct"]),
            "accuracy_off": sum(b["correct"]) / len(b["correct"]),
        })
    return rows


def write_md(result: dict[str, Any], path: Path) -> None:
    lines = [
        "# Folded final check of the editing decoders (shipped 2.1 / 2.2 toys, CPU)",
        "",
        f"`{result['command']}`; commit {result['commit']}; {result['machine']}; {result['wall_s']:.0f} s total. "
        f"First {result['limit']} held-out examples, one request at a time, max_new_tokens {MAX_NEW}; sampled rows: "
        f"request i has sampling_seed {result['seed']} + i. Forwards are each request's own "
        "(`meta_info.dllm_forwards`); \"on\" is the stock server (fold_store auto = on here), \"off\" `fold_store: 'off'`. "
        "Blocks: the blocks each request decoded; a request's last block has no next block, so its check "
        "runs as a plain forward: at most one forward saved per block boundary. Folded forwards: forwards of "
        "the \"on\" server that carried a held block; rolled back: held blocks their check changed (the "
        "next block's step discarded, the block checked again in the next forward).",
        "",
        "| toy | decoder | T | forwards / token off | on | ratio | forwards / block off | on | saved / boundary "
        "| folded forwards | rolled back | same outputs | accuracy off | on |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for gen, rows in result["toys"].items():
        decoder = "llada2_edit Q" if gen == "2.1" else "llada2_levenshtein Q"
        for r in rows:
            lines.append(
                f"| {gen} | {decoder} | {r['temperature']:g} | {r['forwards_per_token_off']:.4f} | {r['forwards_per_token_on']:.4f} | "
                f"{r['forwards_per_token_on'] / r['forwards_per_token_off']:.3f}x | {r['forwards_per_block_off']:.3f} | "
                f"{r['forwards_per_block_on']:.3f} | {r['saved_per_boundary']:.3f} | {r['folded_forwards']} | "
                f"{r['rolled_back']} | {r['same_outputs']:.3f} | "
                f"{r['accuracy_off']:.3f} | {r['accuracy_on']:.3f} |"
            )
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--limit", type=int, default=240, help="held-out examples per run (240: all)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--toys", nargs="+", default=list(TOYS), choices=list(TOYS))
    p.add_argument("--out", type=Path, default=RESULTS / "folded_check")
    args = p.parse_args(argv)

    import sglang_llada.toy as toy_pkg

    t0 = time.time()
    result: dict[str, Any] = {
        "command": " ".join(["python", "bench/folded_check_bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "commit": subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip(),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "limit": args.limit,
        "seed": args.seed,
        "toys": {},
        "raw": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        off_cfg = workdir / "off.yaml"
        off_cfg.write_text("fold_store: 'off'\n")
        for gen in args.toys:
            attr, temperature = TOYS[gen]
            toy = getattr(toy_pkg, attr)
            temps = [0.0, temperature]
            on = run_server(toy, [], workdir, f"{gen}-on", args.limit, temps, args.seed)
            off = run_server(toy, ["--dllm-algorithm-config", str(off_cfg)], workdir, f"{gen}-off", args.limit, temps, args.seed)
            result["toys"][gen] = summarize(on, off)
            for side in (on, off):  # the outputs were compared in `summarize`; the file keeps the counts
                for run in side["runs"].values():
                    run.pop("output_ids")
            result["raw"][gen] = {"on": on, "off": off}
    result["wall_s"] = time.time() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    write_md(result, args.out.with_suffix(".md"))
    print(args.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
