"""Train the toy with the training-data mix changed, to try a recipe before it becomes the default.

    .venv/bin/python bench/toy_recipe_variant.py --sub-weight 2 -- --out /tmp/sub2
    .venv/bin/python bench/reference_decode_eval.py /tmp/sub2 1.0 2 48   # score it, no server

Everything after `--` goes to `python -m sglang_llada.toy.train` (defaults: the shipped recipe).
`--sub-weight N` draws differences N times as often as sums within arithmetic batches (the
shipped 1:1 left the toy at add 0.77 / sub 0.17); `--arith-share X` is the share of arithmetic
batches (shipped 0.5). Only the training stream changes; the held-out split never does. The
knobs are written to `variant.json` beside the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sglang_llada.toy import tasks
from sglang_llada.toy import train


def main() -> int:
    argv = sys.argv[1:]
    ours, rest = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sub-weight", type=int, default=1, help="differences per sum in arithmetic batches")
    p.add_argument("--arith-share", type=float, default=tasks.TRAIN_MIX["arith"])
    a = p.parse_args(ours)
    if a.sub_weight < 1 or not 0.0 < a.arith_share < 1.0:
        p.error("--sub-weight must be >= 1 and --arith-share in (0, 1)")
    # train_batches draws a task uniformly from its family's tuple: repeating "sub" weights it.
    tasks.FAMILIES["arith"] = ("add",) + ("sub",) * a.sub_weight
    tasks.TRAIN_MIX.update(text=1.0 - a.arith_share, arith=a.arith_share)
    rc = train.main(rest)
    out = Path(rest[rest.index("--out") + 1])
    (out / "variant.json").write_text(json.dumps({"sub_weight": a.sub_weight, "arith_share": a.arith_share, "train_args": rest}, indent=2))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
