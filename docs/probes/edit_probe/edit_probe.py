"""Which correct answer tokens a checkpoint would edit: one reference forward per example on the
prompt plus its *correct* answer (no masks), and the positions where another token has
probability > 0.5 (what `llada2_edit` Q's edit threshold would overwrite). A model trained for
editing should want none; a 2.0 model, never trained on visible answer positions, wants many.

    .venv/bin/python docs/probes/edit_probe/edit_probe.py CKPT_DIR [--split heldout] [--tasks copy,upper,lower] [--limit 12]

Uses the pure-torch reference forward (sglang_llada/testing/reference_llada2.py), no server.
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch
from transformers import AutoTokenizer

from sglang_llada.algorithms.edit import EDIT_MODES
from sglang_llada.eval import render_prompts
from sglang_llada.testing.reference_llada2 import load_reference
from sglang_llada.toy.tasks import split


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ckpt")
    p.add_argument("--split", default="heldout")
    p.add_argument("--tasks", default="copy,upper,lower")
    p.add_argument("--limit", type=int, default=12, help="first N examples of those tasks")
    p.add_argument("--edit-threshold", type=float, default=EDIT_MODES["Q"][1], help="default: llada2_edit Q's")
    args = p.parse_args()
    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = load_reference(args.ckpt)
    examples = [e for e in split(args.split) if e.task in args.tasks.split(",")][: args.limit]
    edits: Counter[tuple[str, str]] = Counter()
    seen: Counter[str] = Counter()
    for ex, prompt in zip(examples, render_prompts(examples)):
        prompt_ids = tok.encode(prompt)
        answer_ids = tok.encode(ex.answer, add_special_tokens=False) + [int(tok.eos_token_id)]
        probs = model.forward(torch.tensor(prompt_ids + answer_ids)).softmax(-1)[len(prompt_ids):]  # [A, V]
        top_p, top = probs.max(-1)
        for t, k, pk in zip(answer_ids, top.tolist(), top_p.tolist()):
            seen[tok.decode([t])] += 1
            if k != t and pk > args.edit_threshold:
                edits[(tok.decode([t]), tok.decode([k]))] += 1
    n = sum(seen.values())
    print(f"{args.ckpt}: {len(examples)} {args.split} examples ({args.tasks}), {n} answer tokens; "
          f"{sum(edits.values())} would be edited (p > {args.edit_threshold}):")
    for (src, dst), c in edits.most_common(12):
        print(f"  {src!r} -> {dst!r}: {c} (of {seen[src]} {src!r})")


if __name__ == "__main__":
    main()
