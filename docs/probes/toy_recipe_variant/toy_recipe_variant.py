"""Train the toy with the training-data mix changed, to try a recipe before it becomes the default.

    .venv/bin/python docs/probes/toy_recipe_variant/toy_recipe_variant.py --task-weight sub=2 -- --out /tmp/sub2
    .venv/bin/python bench/reference_decode_eval.py /tmp/sub2 1.0 2 48   # score it, no server

Everything after `--` goes to `python -m sglang_llada.toy.train` (defaults: the shipped recipe).
`--task-weight TASK=N` (repeatable) draws TASK N times as often as its family's other tasks
(tasks.TRAIN_TASK_WEIGHT; the shipped recipe weighs every task 1); `--arith-share X` is the
share of arithmetic batches (shipped 0.6). Only the training stream changes; the held-out split
never does. The knobs are written to `variant.json` beside the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sglang_llada.toy import tasks, train


def _weight(text: str) -> tuple[str, int]:
    task, _, n = text.partition("=")
    if task not in tasks.TASK_NAMES or not n.isdigit() or int(n) < 1:
        raise argparse.ArgumentTypeError(f"expected TASK=N with TASK in {tasks.TASK_NAMES} and N >= 1, got {text!r}")
    return task, int(n)


def main() -> int:
    argv = sys.argv[1:]
    ours, rest = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task-weight", type=_weight, action="append", default=[], metavar="TASK=N")
    p.add_argument("--arith-share", type=float, default=tasks.TRAIN_MIX["arith"])
    a = p.parse_args(ours)
    if not 0.0 < a.arith_share < 1.0:
        p.error("--arith-share must be in (0, 1)")
    if "--out" not in rest:
        p.error("pass the checkpoint directory after `--`: -- --out DIR")
    tasks.TRAIN_TASK_WEIGHT.update(a.task_weight)  # read by train_batches when training starts
    tasks.TRAIN_MIX.update(text=1.0 - a.arith_share, arith=a.arith_share)
    rc = train.main(rest)
    out = Path(rest[rest.index("--out") + 1])
    knobs = {"task_weight": tasks.TRAIN_TASK_WEIGHT, "arith_share": a.arith_share, "train_args": rest}
    (out / "variant.json").write_text(json.dumps(knobs, indent=2))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
