"""Variable-length text probe of the toy's training recipe: does copying strings of any length form?

    .venv/bin/python docs/probes/toy_varlen_probe/toy_varlen_probe.py --objective diffusion --steps 600 --every 150
    .venv/bin/python docs/probes/toy_varlen_probe/toy_varlen_probe.py --objective ar --steps 600 --every 150
    .venv/bin/python docs/probes/toy_varlen_probe/toy_varlen_probe.py --objective diffusion --ar-steps 300 ...
    .venv/bin/python docs/probes/toy_varlen_probe/toy_varlen_probe.py --objective diffusion --init sglang_llada/toy/checkpoints/llada2-toy

Trains the toy architecture on copy / upper / lower with inputs of 1 to 72 characters (words and
digit groups, `tasks.varlen_text`) and every `--every` steps decodes 60 fixed probe examples
(lengths spread over 1..72): greedy block diffusion at threshold 0.95 (pure torch, no server), or
greedy next-token decoding for `--objective ar`. Prints one JSON line per probe: exact match per
task, exact match by input length (short 1-12, mid 13-40, long 41-72) and forwards per token.
Nothing is saved; it is a probe to run before committing hours to a full run (docs/toy-model.md).
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


@torch.no_grad()
def decode(model: ToyLLaDA2, enc: T.Encoder, prompt: list[int], max_new: int, ar: bool) -> tuple[list[int], int]:
    """Greedy decode without a KV cache. Diffusion: block 32, commit every masked position above
    0.95 (at least the most confident one), stop after the block that holds an end token."""
    if ar:
        ids = list(prompt)
        for n in range(1, max_new + 1):
            x = torch.tensor([ids])
            L = x.shape[1]
            logits = model(x, torch.arange(L)[None], torch.ones(L, L, dtype=torch.bool).tril()[None])
            nxt = int(logits[0, -1].argmax())
            if nxt == enc.eos:
                return ids[len(prompt) :], n
            ids.append(nxt)
        return ids[len(prompt) :], max_new
    P = len(prompt)
    end = -(-(P + max_new) // T.BLOCK) * T.BLOCK
    ids = torch.tensor(prompt + [enc.mask] * (end - P))
    pos = torch.arange(end)
    masked = ids == enc.mask
    forwards = 0
    for b in range(P // T.BLOCK, end // T.BLOCK):
        hi = (b + 1) * T.BLOCK
        allowed = (pos[:hi, None] // T.BLOCK >= pos[None, :hi] // T.BLOCK)[None]
        while masked[:hi].any():
            probs = model(ids[None, :hi], pos[None, :hi], allowed)[0].softmax(-1)
            probs[:, enc.mask] = 0.0
            conf, tok = probs.max(-1)
            conf[~masked[:hi]] = -1.0
            take = conf > 0.95
            if not take.any():
                take[int(conf.argmax())] = True
            ids[:hi][take] = tok[take]
            masked[:hi][take] = False
            forwards += 1
        if (ids[P:hi] == enc.eos).any():
            break
    out = ids[P:].tolist()
    return (out[: out.index(enc.eos)] if enc.eos in out else out), forwards


def probe_set() -> list[tasks.Example]:
    rng = random.Random(777)
    out = []
    for i in range(60):
        length = 1 + (i * 71) // 59  # 1 .. 72, spread
        name = ("copy", "upper", "lower")[i % 3]
        out.append(tasks.text_example(name, tasks.varlen_text(rng, length)))
    return out


def evaluate(model: ToyLLaDA2, enc: T.Encoder, examples: list[tasks.Example], ar: bool) -> dict[str, object]:
    model.eval()
    by_task: dict[str, list[bool]] = {}
    by_len: dict[str, list[bool]] = {}
    fw = toks = 0
    for ex in examples:
        tokens, n = decode(model, enc, enc.prompt_ids(ex), len(ex.answer) + 2, ar)
        ok = enc.tok.decode(tokens).strip() == ex.answer
        L = len(ex.answer)
        by_task.setdefault(ex.task, []).append(ok)
        by_len.setdefault("short" if L <= 12 else "mid" if L <= 40 else "long", []).append(ok)
        fw += n
        toks += len(tokens) + 1
    model.train()

    def rate(d: dict[str, list[bool]]) -> dict[str, float]:
        return {k: round(sum(v) / len(v), 3) for k, v in d.items()}

    return {"exact": rate(by_task), "by_length": rate(by_len), "forwards_per_token": round(fw / toks, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objective", choices=("diffusion", "ar"), default="diffusion")
    p.add_argument("--ar-steps", type=int, default=0, help="diffusion: next-token steps first")
    p.add_argument("--init", default=None, help="start from this checkpoint's weights")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--every", type=int, default=150)
    p.add_argument("--lr", type=float, default=T.TrainConfig.lr)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-len", type=int, default=72, help="training inputs of 1..max-len characters")
    a = p.parse_args()

    tasks.TRAIN_MIX.clear()
    tasks.TRAIN_MIX["text"] = 1.0
    for name in tasks.FAMILIES["text"]:  # inputs of 1..max_len characters, uniform
        tasks.TRAIN_GENERATORS[name] = lambda rng, name=name: tasks.varlen_example(name, rng, 1, a.max_len)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = T.TrainConfig(steps=a.steps, lr=a.lr, threads=a.threads)
    model = ToyLLaDA2(T.arch_config("diffusion"))
    if a.init:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(f"{a.init}/model.safetensors"))
    enc = T.Encoder()
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(1)
    probe = probe_set()
    def batches():  # text examples until rows x longest row reaches the token budget
        rng = random.Random(0)
        held = {e.prompt for e in probe}
        while True:
            out, longest = [], 0
            while len(out) * longest < cfg.batch_tokens:
                ex = tasks.TRAIN_GENERATORS[rng.choice(tasks.FAMILIES["text"])](rng)
                if ex.prompt not in held:
                    out.append((enc.prompt_ids(ex), enc.answer_ids(ex)))
                    longest = max(longest, T.diffusion_row_tokens(len(out[-1][0]), len(out[-1][1])))
            yield out

    t0, losses = time.time(), []
    stream = batches()
    for step in range(a.steps):
        samples = next(stream)
        ar = a.objective == "ar" or step < a.ar_steps
        b = T.ar_batch(samples, enc) if ar else T.diffusion_batch(samples, enc, g)
        for group in opt.param_groups:
            group["lr"] = T.lr_at(step, cfg)
        losses.append(T.optimizer_step(model, opt, b, cfg))
        if (step + 1) % a.every == 0:
            row = {"step": step + 1, "seconds": round(time.time() - t0), "loss_avg50": round(sum(losses[-50:]) / len(losses[-50:]), 3)}
            print(json.dumps({**row, **evaluate(model, enc, probe, a.objective == "ar")}), flush=True)


if __name__ == "__main__":
    main()
