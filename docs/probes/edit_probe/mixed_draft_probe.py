"""What a checkpoint predicts at each position of a *mixed* draft (letters of two valid answers,
the parallel-decoding error of the multi-answer prompts): one reference forward on the prompt plus
the draft (no masks), and per position the argmax and its probability. Under `llada2_edit` S (edit
threshold 0) a position is rewritten exactly where the argmax differs from the draft, so a draft
whose every argmax is its own token is a fixed point of S-mode editing.

    .venv/bin/python docs/probes/edit_probe/mixed_draft_probe.py CKPT_DIR [CKPT_DIR ...]

Uses the pure-torch reference forward (sglang_llada/testing/reference_llada2.py), no server.
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoTokenizer

from sglang_llada.eval import render_prompts
from sglang_llada.testing.reference_llada2 import load_reference
from sglang_llada.toy.tasks import Example

# (prompt, draft): the drafts S mode left wrong in bench/results/toy_bars.md, and two valid answers.
DRAFTS: tuple[tuple[str, str], ...] = (
    ("Pair:", "dark guava"),
    ("Pair:", "dark fig"),
    ("Pair:", "pink guava"),
    ("Fruits: 3", "grape, pear, fige"),
    ("Fruits: 4", "grape, pear, lemcn, pear"),
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ckpts", nargs="+")
    args = p.parse_args()
    for ckpt in args.ckpts:
        tok = AutoTokenizer.from_pretrained(ckpt)
        model = load_reference(ckpt)
        print(f"{ckpt}:")
        for prompt, draft in DRAFTS:
            prompt_ids = tok.encode(render_prompts([Example("probe", prompt, "")])[0])
            draft_ids = tok.encode(draft, add_special_tokens=False) + [int(tok.eos_token_id)] * 2
            with torch.no_grad():
                probs = model.forward(torch.tensor(prompt_ids + draft_ids)).softmax(-1)[len(prompt_ids):]  # [A, V]
            top_p, top = probs.max(-1)
            rewritten = "".join(tok.decode([k]) if k != d else "." for d, k in zip(draft_ids, top.tolist()))
            cells = " ".join(f"{tok.decode([d])!r}>{tok.decode([k])!r}:{q:.2f}" if k != d else f"{tok.decode([d])!r}:{q:.2f}"
                             for d, k, q in zip(draft_ids, top.tolist(), top_p.tolist()))
            fixed = "fixed point" if all(k == d for d, k in zip(draft_ids, top.tolist())) else "edited"
            print(f"  {prompt!r} {draft!r}: {fixed}; argmax where it differs: {rewritten.replace('<|endoftext|>', '$')!r}")
            print(f"    {cells.replace('<|endoftext|>', '$')}")


if __name__ == "__main__":
    main()
