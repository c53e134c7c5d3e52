"""Train the toy LLaDA2 (block diffusion) or its autoregressive twin on the toy task suite.

    python -m sglang_llada.toy.train --objective diffusion --out DIR   # the LLaDA2 toy
    python -m sglang_llada.toy.train --objective ar --out DIR          # the AR twin (Bailing MoE V2)

Both objectives see the same examples in the same order (same seed, steps and batch size) and
the same architecture; only the attention mask, the inputs and the loss differ.

Block diffusion (LLaDA2): blocks are aligned to absolute positions (multiples of 32), the way
the server decodes -- a partial last prompt block is denoised together with the first answer
positions. Each answer block gets its own mask ratio t ~ U(0, 1]; its masked positions are
predicted from the block itself plus *clean* earlier blocks (k ~ U{1..n} of its n answer
positions are masked, t = k/n). One forward covers every block of
a sample by concatenating a clean copy (the context) and the noisy blocks:

    clean  [0, N - 32)         block-causal among itself
    noisy  [b0 * 32, N)        sees clean blocks < its own, and its own noisy block

Loss: cross-entropy on masked positions weighted by 1/t (the masked-diffusion ELBO), summed
and divided by the number of answer tokens. The answer ends with <|endoftext|> and is padded
with it to the end of its block, as LLaDA2's SFT data is, so the model learns to fill the tail
of the last block with confident end tokens.

Autoregressive: the same sequence, causal mask, next-token loss on the answer tokens.

The model is `torch_model.ToyLLaDA2`: its parameters carry the checkpoint names and it runs the
one pure-torch LLaDA2 forward, the function the tests check our SGLang model class against.

Determinism: one seed fixes data order, masks and initialization; run with the same thread
count to reproduce a checkpoint bit for bit (CPU float32 kernels are deterministic
for a fixed thread count).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sglang_llada.toy.checkpoint import build_config, write_checkpoint
from sglang_llada.toy.config import AR_TWIN_ARCH, AR_TWIN_CONFIG_CODE, TRAINED_TOY_ARCH
from sglang_llada.toy.edit_labels import edit_labels, indel_draft
from sglang_llada.toy.tasks import (
    FAMILIES,
    GENERATORS,
    Example,
    general_train_batches,
    multi_train_batches,
    sibling,
    train_batches,
)
from sglang_llada.toy.tokenizer import load_tokenizer, vocab_size

BLOCK = 32


@dataclass(frozen=True)
class TrainConfig:
    objective: str = "diffusion"  # or "ar"
    seed: int = 0
    # Sized for the 30-minute budget on 2 cores: ~1.0 s per diffusion step (4608 row tokens).
    steps: int = 1750
    # Diffusion only: optionally start with ar_steps of next-token training, the way LLaDA2 is
    # adapted from an autoregressive model (Ling 2.0). Off by default: on the fixed-width tasks
    # block diffusion learns fixed-offset copying directly (docs/toy-model.md).
    ar_steps: int = 0
    # Single-task batches (no padding) of batch_tokens diffusion-row tokens, at least batch_size
    # examples: 16 rows of the longest task, or ~144 arithmetic rows.
    batch_size: int = 16
    batch_tokens: int = 4608
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    expert_bias_rate: float = 1e-3
    threads: int = 2
    # "fixed": the fixed-width suite (tasks.TRAIN_MIX); "fixed-json": with the JSON task
    # (tasks.FIXED_JSON_MIX); "general": inputs of any length, multi-turn chats and the JSON task
    # (tasks.general_train_batches), batched by padded row tokens; "multi": the fixed-width suite and
    # the JSON task beside multi-answer tasks and the help reply (tasks.multi_train_batches).
    recipe: str = "fixed"
    # Start from this checkpoint's weights instead of a random initialization.
    init: str | None = None
    # LLaDA2.1's token-to-token stream (diffusion_batch): the largest corruption rate; 0 = off.
    # Under "2.2" it applies to the plain mask-to-token blocks (the drafts have their own labels).
    t2t: float = 0.0
    # "2.2": block routing and DELETE / SPLIT in the config, and the Levenshtein stream
    # (diffusion_batch `indel`, the largest edit rate) on half of the answer blocks.
    generation: str = "2.0"
    indel: float = 0.3
    # With t2t: the share of corrupted positions of a multi-answer example written from another
    # valid answer at the same position (tasks.sibling) instead of a random token of its class;
    # under "2.2" also the share of its indel drafts that start from such a mixture.
    t2t_mix: float = 0.0
    # With t2t and t2t_mix: the share of multi-answer rows whose draft also holds one *tail* of
    # another answer: from a cut inside one pick (a name, or a whole pair) to that pick's end, every
    # visible position takes the sibling's token (diffusion_batch `spans`). The label is the answer
    # the pick's head belongs to, so a mixed draft such as `dark guava` is repaired towards its
    # earlier letters (`dark fig`). Position-wise mixing (each position at a rate <= t2t) rarely
    # corrupts a whole word, so alone it taught the model that a consistent word is right, and
    # S-mode editing kept `dark guava` (docs/toy-model.md, docs/probes/edit_probe).
    t2t_span: float = 0.0


class Encoder:
    """Chat-templated prompt ids and answer ids, with the toy tokenizer."""

    def __init__(self) -> None:
        self.tok = load_tokenizer()
        self.eos = int(self.tok.eos_token_id)
        self.mask = int(self.tok.convert_tokens_to_ids("<|mask|>"))
        # The characters answers are made of: what a token-to-token corruption writes (a wrong
        # token a draft could plausibly hold).
        chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 {}\":,"
        self.answer_alphabet = sorted({i for c in chars for i in self.tok.encode(c, add_special_tokens=False)})
        # A draft's wrong token is usually a near miss of the right one (a wrong digit, not a
        # letter in a number): the token-to-token stream replaces a token by another of its class.
        classes = ("0123456789", "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        self.confusable: dict[int, list[int]] = {}
        for members in classes:
            ids = [self.tok.encode(c, add_special_tokens=False)[0] for c in members]
            for i in ids:
                self.confusable[i] = [j for j in ids if j != i]

    def prompt_ids(self, ex: Example) -> list[int]:
        messages = ex.messages()
        ids = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 returns an encoding
            ids = ids["input_ids"]
        return list(ids)

    def answer_ids(self, ex: Example) -> list[int]:
        return list(self.tok.encode(ex.answer, add_special_tokens=False)) + [self.eos]


@dataclass
class Batch:
    ids: torch.Tensor  # [B, T] long
    positions: torch.Tensor  # [B, T] long
    allowed: torch.Tensor  # [B, T, T] bool
    targets: torch.Tensor  # [B, T] long, -100 where no loss
    weights: torch.Tensor  # [B, T] float, per-position loss weight
    n_answer_tokens: int
    # [B, T] long: each token's MoE routing block (block-routed checkpoints): a row's clean copy
    # and its noisy blocks repeat positions, so blocks are named per row and copy.
    route_blocks: torch.Tensor | None = None


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    T = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (T - len(r)) for r in rows], dtype=torch.long)


def diffusion_batch(
    samples: list[tuple[list[int], list[int]]], enc: Encoder, g: torch.Generator, *, t2t: float = 0.0,
    indel: float = 0.0, control: tuple[int, int] | None = None,
    siblings: list[list[int] | None] | None = None, mix: float = 0.0,
    spans: list[tuple[int, int] | None] | None = None,
) -> Batch:
    """Block-diffusion rows (module docstring). With `t2t` > 0, LLaDA2.1's second stream: in each
    answer block, each position left unmasked is also replaced with probability c ~ U(0, t2t) by
    a random token of its class (`Encoder.confusable`: a digit by another digit, a letter by a
    letter of the same case; other tokens by any answer character), and every unmasked answer
    position carries a loss (weight 1) for its true token: restore a corrupted token, keep a
    right one. That is what token-to-token editing asks of the model at decode time (an
    `llada2_edit` step rewrites a written position whose prediction differs).

    With `indel` > 0 (LLaDA2.2, `control` = (DELETE id, SPLIT id)), half of the answer blocks (a
    coin per block) become drafts with insertions, deletions and substitutions (each position at
    a rate ~ U(0, indel), `edit_labels.indel_draft`) and k/n of it masked; every answer position
    of such a block is labelled by the alignment of the draft with the target
    (`edit_labels.edit_labels`: the token, DELETE or SPLIT), masked ones weighted n/k, the others
    1. The other half are plain mask-to-token blocks: a masked slot of an indel draft may stand
    for any of several target tokens (it depends on edits the model cannot see), so a model
    trained on drafts alone never grows confident on plain masks (a first 2.2 run decoded one
    token per forward at threshold 0.95). `t2t` applies to those plain blocks too (a 2.2 run
    without it learned to rewrite a correct `d`: docs/probes/edit_probe/edit_toys_22_unshipped_probe.txt).

    `siblings[r]` (answer ids of another valid answer to row r's prompt, or None) with `mix` > 0:
    a corrupted position takes, with probability `mix`, the sibling's token at the same answer
    offset (its end-of-text past its end) where that differs from the true one: drafts mixed from
    two answers, the parallel-decoding error of multi-answer prompts. Under `indel`, with
    probability `mix` an indel draft starts from such a mixture (each position the sibling's with
    a rate ~ U(0, 0.5)) instead of the target: answers of different lengths make drafts whose
    letters sit one position off, which DELETE / SPLIT repair.

    `spans[r]` = (cut, stop) answer offsets (or None; plain blocks only): every visible position
    of row r at an offset in [cut, stop) holds the sibling's token there (end-of-text past its
    end), labelled with the true one -- a pick whose tail comes from another answer
    (`answer_spans`)."""
    rng = random.Random(int(torch.randint(1 << 30, (), generator=g))) if indel > 0.0 else None
    ids_rows, pos_rows, tgt_rows, w_rows, kinds = [], [], [], [], []
    n_answer = 0
    for r_i, (prompt, answer) in enumerate(samples):
        sib = siblings[r_i] if siblings is not None else None
        span = spans[r_i] if spans is not None and sib is not None else None
        P = len(prompt)
        N = -(-(P + len(answer)) // BLOCK) * BLOCK
        full = prompt + answer + [enc.eos] * (N - P - len(answer))  # EOS-padded to block end
        b0 = P // BLOCK
        clean_len = N - BLOCK
        noisy = list(full[b0 * BLOCK :])
        targets = [-100] * len(noisy)
        weights = [0.0] * len(noisy)
        for b in range(b0, N // BLOCK):
            lo, hi = max(b * BLOCK, P), (b + 1) * BLOCK  # answer positions of block b
            n = hi - lo
            # Mask exactly k ~ U{1..n} positions (ratio t = k/n) and weight each by 1/t: the
            # masked-diffusion weighting, with the block's total weight fixed at n -- far less
            # variance than Bernoulli(t) masking, whose rare small-t draws carry weights ~1/t.
            k = int(torch.randint(1, n + 1, (), generator=g))
            if rng is not None and control is not None and rng.random() < 0.5:
                block = noisy[lo - b0 * BLOCK : hi - b0 * BLOCK]
                base = block
                if sib is not None and rng.random() < mix:
                    # a draft mixed from two valid answers of different lengths: positions taken
                    # from the sibling shift what follows (labels align it with the target)
                    c_mix = rng.random() * 0.5
                    base = [(sib[off] if off < len(sib) else enc.eos) if rng.random() < c_mix else t
                            for off, t in enumerate(block, start=lo - P)]
                draft = indel_draft(base, rng, mask=enc.mask, alphabet=enc.answer_alphabet,
                                    rate=rng.random() * indel, mask_ratio=k / n)
                labels = edit_labels(draft, block, mask=enc.mask, delete=control[0], split=control[1])
                for i, (d, label) in enumerate(zip(draft, labels)):
                    j = lo + i - b0 * BLOCK
                    noisy[j], targets[j], weights[j] = d, label, (n / k if d == enc.mask else 1.0)
                continue
            order = torch.randperm(n, generator=g).tolist()
            for i in order[:k]:
                j = lo + i - b0 * BLOCK
                targets[j] = noisy[j]
                weights[j] = n / k
                noisy[j] = enc.mask
            if t2t > 0.0:
                c = float(torch.rand((), generator=g)) * t2t
                for i in order[k:]:
                    j = lo + i - b0 * BLOCK
                    targets[j], weights[j] = noisy[j], 1.0
                    if float(torch.rand((), generator=g)) < c:
                        off = b0 * BLOCK + j - P  # answer offset of position j
                        alt = (sib[off] if off < len(sib) else enc.eos) if sib is not None else None
                        if alt is not None and alt != noisy[j] and float(torch.rand((), generator=g)) < mix:
                            noisy[j] = alt
                            continue
                        pool = enc.confusable.get(noisy[j], enc.answer_alphabet)
                        noisy[j] = pool[int(torch.randint(len(pool), (), generator=g))]
                if t2t > 0.0 and span is not None and sib is not None:
                    for i in order[k:]:
                        j = lo + i - b0 * BLOCK
                        off = b0 * BLOCK + j - P
                        if span[0] <= off < span[1]:
                            noisy[j] = sib[off] if off < len(sib) else enc.eos
        n_answer += N - P
        ids_rows.append(full[:clean_len] + noisy)
        pos_rows.append(list(range(clean_len)) + list(range(b0 * BLOCK, N)))
        tgt_rows.append([-100] * clean_len + targets)
        w_rows.append([0.0] * clean_len + weights)
        kinds.append((clean_len, len(noisy)))

    ids = _pad(ids_rows, enc.eos)
    T = ids.shape[1]
    allowed = torch.zeros(len(samples), T, T, dtype=torch.bool)
    for r, (clean_len, _) in enumerate(kinds):
        pos = torch.tensor(pos_rows[r])
        blk = pos // BLOCK  # [t]
        is_noisy = torch.arange(len(pos)) >= clean_len
        qb, kb = blk[:, None], blk[None, :]
        qn, kn = is_noisy[:, None], is_noisy[None, :]
        a = (~qn & ~kn & (kb <= qb)) | (qn & ~kn & (kb < qb)) | (qn & kn & (kb == qb))
        allowed[r, : len(pos), : len(pos)] = a
    # Padding rows attend to themselves only (keeps softmax finite; they carry no loss).
    idx = torch.arange(T)
    allowed[:, idx, idx] = True
    # Routing blocks: 32 positions of one copy of one row (padding: a block of its own).
    route = torch.full((len(samples), T), -1, dtype=torch.long)
    for r, (clean_len, _) in enumerate(kinds):
        pos = torch.tensor(pos_rows[r])
        route[r, : len(pos)] = (pos // BLOCK) * 2 + (torch.arange(len(pos)) >= clean_len).long()
    route = torch.where(route >= 0, route, 1 << 20) + torch.arange(len(samples))[:, None] * (1 << 21)
    w = torch.zeros(len(samples), T)
    for r, row in enumerate(w_rows):
        w[r, : len(row)] = torch.tensor(row)
    return Batch(ids, _pad(pos_rows, 0), allowed, _pad(tgt_rows, -100), w, n_answer, route)


def answer_spans(
    ex: Example, answer: Sequence[int], sib: Sequence[int] | None, g: torch.Generator, share: float,
) -> tuple[int, int] | None:
    """With probability `share`, the (cut, stop) answer offsets of one pick's tail for
    diffusion_batch `spans`: a `Fruits: N` name (its separator or end-of-text included) or the whole
    answer of `Fruit:` / `Pair:` (up to the longer of the two answers' ends), the cut after the
    pick's first token. None for a task with one answer, or when the draw says no."""
    if sib is None or share <= 0.0 or float(torch.rand((), generator=g)) >= share:
        return None
    if len(answer) != len(ex.answer) + 1:  # one token a character (+ end-of-text), as the toy tokenizes
        return None
    stop_all = max(len(answer), len(sib))
    if ex.task == "fruits":
        starts = [0] + [i + 2 for i, c in enumerate(ex.answer) if c == ","]
        i = int(torch.randint(len(starts), (), generator=g))
        start = starts[i]
        stop = starts[i + 1] - 1 if i + 1 < len(starts) else stop_all  # through the ',' (or the tail)
    else:
        start, stop = 0, stop_all
    cut = start + 1 + int(torch.randint(max(stop - start - 1, 1), (), generator=g))
    return (cut, stop) if cut < stop else None


def ar_batch(samples: list[tuple[list[int], list[int]]], enc: Encoder) -> Batch:
    ids_rows, tgt_rows = [], []
    n_answer = 0
    for prompt, answer in samples:
        seq = prompt + answer
        ids_rows.append(seq[:-1])
        tgt_rows.append([-100] * (len(prompt) - 1) + answer)
        n_answer += len(answer)
    ids = _pad(ids_rows, enc.eos)
    B, T = ids.shape
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    targets = _pad(tgt_rows, -100)
    return Batch(
        ids, torch.arange(T).expand(B, T).contiguous(), causal.expand(B, T, T),
        targets, (targets != -100).float(), n_answer,
    )


def diffusion_row_tokens(prompt_len: int, answer_len: int) -> int:
    """Length of one diffusion training row: the clean context plus the noisy blocks."""
    N = -(-(prompt_len + answer_len) // BLOCK) * BLOCK
    return (N - BLOCK) + (N - (prompt_len // BLOCK) * BLOCK)


def batch_sizes(enc: Encoder, cfg: TrainConfig) -> dict[str, int]:
    """Examples per batch for each task family: as many of its longest rows as fit
    cfg.batch_tokens, at least batch_size.

    Sized by the diffusion row for both objectives, so the AR twin sees the same examples.
    """
    rng = random.Random(0)
    sizes = {}
    for family, names in FAMILIES.items():
        rows = []
        for name in names:
            ex = GENERATORS[name](rng)
            rows.append(diffusion_row_tokens(len(enc.prompt_ids(ex)), len(enc.answer_ids(ex))))
        sizes[family] = max(cfg.batch_size, cfg.batch_tokens // max(rows))
    if cfg.recipe == "fixed-json":  # the longest JSON answer: a 4-digit sum
        ex = Example("json", "JSON: 999+999", '{"op": "add", "result": "1998"}')
        sizes["json"] = max(cfg.batch_size, cfg.batch_tokens // diffusion_row_tokens(len(enc.prompt_ids(ex)), len(enc.answer_ids(ex))))
    return sizes


def fixed_batches(enc: Encoder, cfg: TrainConfig) -> Iterator[list[Example]]:
    """Endless one-family batches of the fixed-width suite (sizes from `batch_sizes`)."""
    yield from train_batches(cfg.seed, batch_sizes(enc, cfg), with_json=cfg.recipe == "fixed-json")


def general_batches(enc: Encoder, cfg: TrainConfig) -> Iterator[list[Example]]:
    """Endless batches of the general or the multi recipe (tasks.general_train_batches /
    multi_train_batches), cfg.batch_tokens padded diffusion-row tokens each (sized by the diffusion
    row for both objectives)."""

    def row_tokens(ex: Example) -> int:
        return diffusion_row_tokens(len(enc.prompt_ids(ex)), len(enc.answer_ids(ex)))

    if cfg.recipe in ("multi", "multi2"):
        batches = multi_train_batches(cfg.seed, row_tokens, cfg.batch_tokens, cfg.recipe)
    else:
        batches = general_train_batches(cfg.seed, row_tokens, cfg.batch_tokens)
    yield from batches


def arch_config(objective: str, generation: str = "2.0") -> dict[str, Any]:
    """The trained toy's config.json; generation "2.2" adds block routing and the DELETE / SPLIT
    ids (checkpoint.generation_overrides), the same tensors."""
    overrides = dict(TRAINED_TOY_ARCH)
    if objective == "ar":
        overrides.update(AR_TWIN_ARCH)
    return build_config(vocab_size(), overrides, generation)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def optimizer_step(model: Any, opt: torch.optim.Optimizer, batch: Batch, cfg: TrainConfig) -> float:
    """One step on `batch`: weighted cross-entropy per answer token, clipped AdamW update, then
    the router's expert-bias update (aux-loss-free balancing). Returns the loss."""
    routed = model.dims.expert_capacity is not None  # block routing: name the blocks
    logits = model(batch.ids, batch.positions, batch.allowed, batch.route_blocks if routed else None)  # [B, T, V]
    ce = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=-100, reduction="none")
    loss = (ce * batch.weights.flatten()).sum() / batch.n_answer_tokens
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    model.update_expert_bias(cfg.expert_bias_rate)
    return float(loss.detach())


def train(cfg: TrainConfig, out_dir: Path, *, progress: bool = True, save_every: int = 0) -> dict[str, Any]:
    from tqdm import tqdm

    from sglang_llada.toy.torch_model import ToyLLaDA2

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    if cfg.generation == "2.2" and cfg.objective != "diffusion":
        raise ValueError("generation 2.2 is a diffusion toy (block routing, DELETE / SPLIT)")
    if cfg.t2t_span > 0.0 and (cfg.t2t <= 0.0 or cfg.t2t_mix <= 0.0 or cfg.generation == "2.2"):
        # the tails are written on the token-to-token stream's plain blocks, from the siblings
        # that t2t_mix draws; the 2.2 stream's indel drafts have labels of their own
        raise ValueError("--t2t-span needs --t2t > 0 and --t2t-mix > 0 (the 2.1 toy's token-to-token stream); --generation 2.2 does not use it")
    config = arch_config(cfg.objective, cfg.generation)
    control = (int(config["delete_token_id"]), int(config["split_token_id"])) if cfg.generation == "2.2" else None
    model = ToyLLaDA2(config)
    if cfg.init:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(Path(cfg.init) / "model.safetensors")))
    enc = Encoder()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embeddings" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embeddings" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.98),
    )
    g = torch.Generator().manual_seed(cfg.seed + 1)
    losses: list[float] = []
    t0 = time.time()
    bar = tqdm(range(cfg.steps), desc=f"train {cfg.objective}", disable=not progress, file=sys.stderr)
    batches = general_batches(enc, cfg) if cfg.recipe in ("general", "multi", "multi2") else fixed_batches(enc, cfg)
    # Siblings draw from a stream of their own, so a run without t2t_mix sees the data it always did.
    sib_rng = random.Random(cfg.seed + 2)
    span_g = torch.Generator().manual_seed(cfg.seed + 3)  # likewise for t2t_span's draws
    for step in bar:
        examples = next(batches)
        samples = [(enc.prompt_ids(e), enc.answer_ids(e)) for e in examples]
        diffusion = cfg.objective == "diffusion" and step >= cfg.ar_steps
        siblings: list[list[int] | None] | None = None
        if diffusion and cfg.t2t_mix > 0.0:
            siblings = [None if (s := sibling(e, sib_rng)) is None else enc.answer_ids(s) for e in examples]
        spans: list[tuple[int, int] | None] | None = None
        if siblings is not None and cfg.t2t_span > 0.0:
            spans = [answer_spans(e, a, sb, span_g, cfg.t2t_span) for e, (_, a), sb in zip(examples, samples, siblings)]
        if not diffusion:
            batch = ar_batch(samples, enc)
        elif control is not None:
            batch = diffusion_batch(samples, enc, g, t2t=cfg.t2t, indel=cfg.indel, control=control,
                                    siblings=siblings, mix=cfg.t2t_mix)
        else:
            batch = diffusion_batch(samples, enc, g, t2t=cfg.t2t, siblings=siblings, mix=cfg.t2t_mix, spans=spans)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        losses.append(optimizer_step(model, opt, batch, cfg))
        if step % 10 == 0 or step == cfg.steps - 1:
            bar.set_postfix(stage="diffusion" if diffusion else "ar", loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
        if save_every and (step + 1) % save_every == 0 and step + 1 < cfg.steps:
            # Snapshots of a long run, to score while it trains (not part of the result).
            write_checkpoint(Path(out_dir) / f"step-{step + 1}", config, model.export_state(),
                             editing=cfg.t2t > 0 and cfg.generation == "2.0")

    tensors = model.export_state()
    # A checkpoint trained with the token-to-token stream says so the way LLaDA2.1's does (its
    # generation_config carries the editing knobs), so the server decodes it with editing.
    write_checkpoint(out_dir, config, tensors, editing=cfg.t2t > 0 and cfg.generation == "2.0")
    if cfg.objective == "ar":
        (Path(out_dir) / "configuration_bailing_moe_v2.py").write_text(AR_TWIN_CONFIG_CODE)
    summary = {
        "objective": cfg.objective,
        "train_config": cfg.__dict__,
        "final_loss_avg50": sum(losses[-50:]) / len(losses[-50:]),
        "train_seconds": round(time.time() - t0, 1),
        "parameters": sum(t.numel() for t in tensors.values()),
        "torch": torch.__version__,
    }
    (Path(out_dir) / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objective", choices=("diffusion", "ar"), default="diffusion")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    d = TrainConfig()
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--ar-steps", type=int, default=d.ar_steps, help="diffusion: next-token steps first")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="min examples per batch")
    p.add_argument("--batch-tokens", type=int, default=d.batch_tokens, help="row tokens per batch")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--recipe", choices=("fixed", "fixed-json", "general", "multi", "multi2"), default=d.recipe, help="training data (tasks.py)")
    p.add_argument("--init", default=None, help="start from this checkpoint directory's weights")
    p.add_argument("--t2t", type=float, default=d.t2t, help="LLaDA2.1 token-to-token stream: max corruption rate (2.2: on the plain blocks)")
    p.add_argument("--t2t-mix", type=float, default=d.t2t_mix,
                   help="with --t2t: share of corrupted multi-answer positions taken from another valid answer "
                        "(2.2: also of indel drafts started from such a mixture)")
    p.add_argument("--t2t-span", type=float, default=d.t2t_span,
                   help="with --t2t-mix: share of multi-answer rows whose draft holds one pick's tail from another "
                        "answer, labelled with the answer of the pick's head")
    p.add_argument("--save-every", type=int, default=0, help="also write OUT/step-N every N steps")
    p.add_argument("--generation", choices=("2.0", "2.2"), default=d.generation,
                   help="2.2: block routing, DELETE / SPLIT and the Levenshtein stream (--indel)")
    p.add_argument("--indel", type=float, default=d.indel, help="2.2: largest insert / delete / substitute rate")
    a = p.parse_args(argv)
    cfg = TrainConfig(
        objective=a.objective, seed=a.seed, steps=a.steps, ar_steps=a.ar_steps,
        batch_size=a.batch_size, batch_tokens=a.batch_tokens, lr=a.lr, threads=a.threads,
        recipe=a.recipe, init=a.init, t2t=a.t2t, generation=a.generation, indel=a.indel,
        t2t_mix=a.t2t_mix, t2t_span=a.t2t_span,
    )
    summary = train(cfg, Path(a.out), save_every=a.save_every)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
