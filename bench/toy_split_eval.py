"""Score a toy checkpoint on named task splits with the pure-torch reference decoder (no server).

    .venv/bin/python bench/toy_split_eval.py CKPT_DIR [--splits short,varlen,multiturn,json,heldout]
        [--limit 24] [--threshold 0.95] [--threads 1]

A quick look at a (snapshot of a) training run before serving it: greedy block diffusion (block 32,
confidence threshold, the LLaDA2 reference loop of `sglang_llada/testing/reference_llada2.py`) on
the first `--limit` examples of each split (`sglang_llada/toy/tasks.py`), exact match per split and
per task, tokens per forward, and two wrong answers per split. Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json

import torch

from sglang_llada.testing.reference_llada2 import generate_reference_with_stats, load_reference
from sglang_llada.toy.tasks import is_correct, split
from sglang_llada.toy.train import Encoder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ckpt")
    p.add_argument("--splits", default="short,varlen,multiturn,json,heldout")
    p.add_argument("--limit", type=int, default=24, help="first N examples of each split")
    p.add_argument("--threshold", type=float, default=0.95)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model, enc = load_reference(a.ckpt), Encoder()
    report: dict[str, object] = {"ckpt": a.ckpt, "threshold": a.threshold}
    for name in a.splits.split(","):
        per_task: dict[str, list[bool]] = {}
        forwards = tokens = 0
        wrong: list[tuple[str, str]] = []
        for ex in split(name)[: a.limit]:
            r = generate_reference_with_stats(
                model, enc.prompt_ids(ex), len(ex.answer) + 24, mask_id=enc.mask, threshold=a.threshold, eos_ids={enc.eos},
            )
            out = enc.tok.decode(r.tokens, skip_special_tokens=True)
            ok = is_correct(ex, out)
            per_task.setdefault(ex.task, []).append(ok)
            forwards += r.num_forwards
            tokens += len(r.tokens)
            if not ok and len(wrong) < 2:
                wrong.append((ex.answer, out))
        n = sum(len(v) for v in per_task.values())
        report[name] = {
            "exact": round(sum(sum(v) for v in per_task.values()) / n, 3),
            "per_task": {t: round(sum(v) / len(v), 3) for t, v in per_task.items()},
            "tpf": round(tokens / max(1, forwards), 2),
            "wrong": wrong,
        }
        print(name, json.dumps(report[name]), flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
