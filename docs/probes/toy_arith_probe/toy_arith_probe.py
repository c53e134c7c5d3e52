"""Arithmetic-only probe of the toy's training recipe: how fast do sums and differences form?

    .venv/bin/python docs/probes/toy_arith_probe/toy_arith_probe.py --format msb --steps 400 --every 100
    .venv/bin/python docs/probes/toy_arith_probe/toy_arith_probe.py --format rev --steps 400 --every 100

Trains the toy LLaDA2 (the shipped architecture, optimizer and block-diffusion objective of
`sglang_llada/toy/train.py`) on add/sub batches only, and every `--every` steps decodes 100 sums
and 100 differences one token per forward (the most confident masked position each forward,
pure torch, no server) and prints one JSON line: exact match and correct digits per answer
position. `--format rev` writes answers least-significant digit first (the carry then depends on
the digit decoded just before), `msb` as the shipped tasks do. Nothing is saved; it is a probe to
run before committing 30 minutes to a full training run (docs/toy-model.md).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from sglang_llada.toy import tasks
from sglang_llada.toy import train as T
from sglang_llada.toy.torch_model import ToyLLaDA2


def make_generators(digits: int, reverse: bool, sparse_share: float = 0.0, zero_p: float = tasks.ARITH_ZERO_P):
    def fmt(s: str) -> str:
        return s[::-1] if reverse else s

    def pair(rng: random.Random) -> tuple[int, int]:
        return tasks.operands(rng, sparse_share, digits, zero_p)

    def add(rng: random.Random) -> tasks.Example:
        x, y = pair(rng)
        return tasks.Example("add", f"Add: {x:0{digits}d}+{y:0{digits}d}", fmt(f"{x + y:0{digits + 1}d}"))

    def sub(rng: random.Random) -> tasks.Example:
        x, y = sorted(pair(rng), reverse=True)
        return tasks.Example("sub", f"Sub: {x:0{digits}d}-{y:0{digits}d}", fmt(f"{x - y:0{digits}d}"))

    return add, sub


@torch.no_grad()
def evaluate(model: ToyLLaDA2, enc: T.Encoder, examples: list[tasks.Example]) -> dict[str, object]:
    """One token per forward: commit the single most confident masked position, until none is left."""
    model.eval()
    exact: dict[str, int] = {}
    digits: dict[str, list[int]] = {}
    for ex in examples:
        prompt = enc.prompt_ids(ex)
        P = len(prompt)
        N = -(-(P + 1) // T.BLOCK) * T.BLOCK  # the answer fills the prompt's last block
        ids = torch.tensor([prompt + [enc.mask] * (N - P)])
        pos = torch.arange(N)[None]
        allowed = (pos[0][:, None] // T.BLOCK >= pos[0][None, :] // T.BLOCK)[None]  # [1, N, N]
        while (ids == enc.mask).any():
            conf, tok = model(ids, pos, allowed)[0].softmax(-1).max(-1)  # [N]
            conf[ids[0] != enc.mask] = -1.0
            i = int(conf.argmax())
            ids[0, i] = tok[i]
        out = enc.tok.decode(ids[0, P:].tolist()).split(enc.tok.eos_token)[0].strip()
        exact[ex.task] = exact.get(ex.task, 0) + (out == ex.answer)
        per = digits.setdefault(ex.task, [0] * len(ex.answer))
        for k, ch in enumerate(ex.answer):
            per[k] += k < len(out) and out[k] == ch
    model.train()
    n = {t: sum(e.task == t for e in examples) for t in exact}
    return {"exact": {t: exact[t] / n[t] for t in exact}, "digits_correct": digits}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--format", choices=("msb", "rev"), default="msb")
    p.add_argument("--digits", type=int, default=tasks.DIGITS)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--lr", type=float, default=T.TrainConfig.lr)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sparse-share", type=float, default=tasks.ARITH_SPARSE_SHARE, help="share of training pairs with zeroed digits")
    p.add_argument("--zero-p", type=float, default=tasks.ARITH_ZERO_P, help="chance each digit of such a pair is 0")
    a = p.parse_args()

    add, sub = make_generators(a.digits, a.format == "rev")  # the probe set: uniform digits
    train_add, train_sub = make_generators(a.digits, a.format == "rev", a.sparse_share, a.zero_p)
    tasks.TRAIN_GENERATORS.update(add=train_add, sub=train_sub)
    tasks.TRAIN_MIX.clear()
    tasks.TRAIN_MIX["arith"] = 1.0
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = T.TrainConfig(steps=a.steps, lr=a.lr, threads=a.threads)
    model = ToyLLaDA2(T.arch_config("diffusion"))
    enc = T.Encoder()
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(1)
    batches = tasks.train_batches(0, T.batch_sizes(enc, cfg))
    rng = random.Random(123)
    probe = [add(rng) for _ in range(100)] + [sub(rng) for _ in range(100)]

    t0, losses = time.time(), []
    for step in range(a.steps):
        b = T.diffusion_batch([(enc.prompt_ids(e), enc.answer_ids(e)) for e in next(batches)], enc, g)
        for group in opt.param_groups:
            group["lr"] = T.lr_at(step, cfg)
        losses.append(T.optimizer_step(model, opt, b, cfg))
        if (step + 1) % a.every == 0:
            row = {"step": step + 1, "seconds": round(time.time() - t0), "loss_avg50": round(sum(losses[-50:]) / len(losses[-50:]), 3)}
            print(json.dumps({**row, **evaluate(model, enc, probe)}), flush=True)


if __name__ == "__main__":
    main()
