"""The toy task suite: generated prompts with exact, checkable answers.

Five tasks, from easy positions (every answer character is a copy of a prompt character) to
hard ones (an answer digit depends on a carry or borrow):

  copy   "Copy: ab cde fg ..."   (72 characters)  -> the same 72 characters   4 blocks
  upper  "Upper: ab cde ..."     (72 characters)  -> "AB CDE ..."             4 blocks
  lower  "Lower: AB CDE ..."     (72 characters)  -> "ab cde ..."             4 blocks
  add    "Add: 482+937"                            -> "1419"                   1 block
  sub    "Sub: 739-483"  (a >= b)                  -> "256"                    1 block

Why fixed widths: each answer character then sits at one fixed distance from the prompt
characters it depends on. With rotary positions, attending at a fixed relative offset is one
head's job, while variable-length copying needs an induction circuit that did not form within
the 30-minute budget on 2 CPU cores (docs/toy-model.md, "What did not work"). The three text tasks
share one width, hence one offset (72 + the 4 template tokens after the user turn): one attention
pattern serves all three, and only the character map differs. Chat-templated prompts are 24 or
90-91 tokens; answers span 1 block (arithmetic) or 4 (text).

Training draws whole batches from one family (`TRAIN_MIX`: 40% text, 60% arithmetic): text rows
are ~9x longer than arithmetic rows, so the trainer sizes each family's batches to a common token
budget.

A split is a pure function of (name, seed): `heldout` is drawn from its own seed and the
training stream rejects every held-out prompt, so held-out accuracy measures generalization.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

TASK_NAMES: tuple[str, ...] = ("copy", "upper", "lower", "add", "sub")
# Tasks trained together in one batch (same row length within a family).
FAMILIES: dict[str, tuple[str, ...]] = {"text": ("copy", "upper", "lower"), "arith": ("add", "sub")}
# Share of training batches per family; the held-out split is balanced (HELDOUT_PER_TASK each).
# 60% arithmetic: at 50% the toy learned only one of sums and differences within the step budget
# (docs/toy-model.md, "What did not work"); at 60% it learns both, and text stays exact.
TRAIN_MIX: dict[str, float] = {"text": 0.4, "arith": 0.6}
# Draws per task within its family's training batches (absent: 1). Empty in the shipped recipe:
# reweighting differences against sums moved which of the two the toy learned, not how many
# (docs/toy-model.md, "What did not work"). bench/toy_recipe_variant.py --task-weight sets it.
TRAIN_TASK_WEIGHT: dict[str, int] = {}
# Training only (the held-out split stays uniform): ARITH_SPARSE_SHARE of the arithmetic pairs have
# each operand digit zeroed with probability ARITH_ZERO_P. Why: a digit of a sum mod 10 tells
# nothing about either operand digit alone, so at first no gradient points attention at the two
# digits it must combine, and that plateau is what kept the toy's sums and differences from
# forming (docs/toy-model.md). Where one of the two is 0, the answer digit is a copy of the other:
# attention learns the digit alignment as fast as copying, and the pair lookup follows.
ARITH_SPARSE_SHARE = 0.5
ARITH_ZERO_P = 0.7
HELDOUT_SEED = 20261122
HELDOUT_PER_TASK = 48
TEXT_LEN = 72
DIGITS = 3
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
# The chat template's words are single tokens of the toy tokenizer (tokenizer.TEMPLATE_TOKENS): a
# task string containing one would tokenize shorter and break the fixed layout, so none does.
_TEMPLATE_WORDS = ("system", "human", "assistant", "role", "detailed thinking off")


@dataclass(frozen=True)
class Example:
    task: str
    prompt: str  # the user message (the chat template is applied by the caller)
    answer: str  # the exact expected completion, without the end-of-text token


def _words(rng: random.Random, length: int) -> str:
    """Random lowercase words separated by single spaces, exactly `length` characters."""
    while True:
        out = ""
        while len(out) < length:
            out += "".join(rng.choice(_LETTERS) for _ in range(rng.randint(1, 7))) + " "
        out = out[:length]
        out = out[:-1] + rng.choice(_LETTERS) if out.endswith(" ") else out
        if not any(w in out for w in _TEMPLATE_WORDS):
            return out


def _copy(rng: random.Random) -> Example:
    s = _words(rng, TEXT_LEN)
    return Example("copy", f"Copy: {s}", s)


def _upper(rng: random.Random) -> Example:
    s = _words(rng, TEXT_LEN)
    return Example("upper", f"Upper: {s}", s.upper())


def _lower(rng: random.Random) -> Example:
    s = _words(rng, TEXT_LEN)
    return Example("lower", f"Lower: {s.upper()}", s)


def operands(
    rng: random.Random, sparse_share: float, digits: int = DIGITS, zero_p: float = ARITH_ZERO_P
) -> tuple[int, int]:
    """Two `digits`-digit operands: uniform, or (with probability sparse_share) with each digit
    zeroed with probability zero_p."""
    if sparse_share <= 0.0 or rng.random() >= sparse_share:  # uniform draws: the held-out split as before
        return rng.randrange(10**digits), rng.randrange(10**digits)

    def sparse() -> int:
        return int("".join("0" if rng.random() < zero_p else str(rng.randrange(10)) for _ in range(digits)))

    return sparse(), sparse()


def _add(rng: random.Random, sparse_share: float = 0.0) -> Example:
    a, b = operands(rng, sparse_share)
    return Example("add", f"Add: {a:0{DIGITS}d}+{b:0{DIGITS}d}", f"{a + b:0{DIGITS + 1}d}")


def _sub(rng: random.Random, sparse_share: float = 0.0) -> Example:
    a, b = sorted(operands(rng, sparse_share), reverse=True)
    return Example("sub", f"Sub: {a:0{DIGITS}d}-{b:0{DIGITS}d}", f"{a - b:0{DIGITS}d}")


# Evaluation draws (held-out split): every digit uniform.
GENERATORS: dict[str, Callable[[random.Random], Example]] = {
    "copy": _copy, "upper": _upper, "lower": _lower, "add": _add, "sub": _sub,
}
# Training draws: the same tasks, with ARITH_SPARSE_SHARE of the arithmetic pairs sparse.
TRAIN_GENERATORS: dict[str, Callable[[random.Random], Example]] = {
    **GENERATORS,
    "add": lambda rng: _add(rng, ARITH_SPARSE_SHARE),
    "sub": lambda rng: _sub(rng, ARITH_SPARSE_SHARE),
}


def heldout_split(per_task: int = HELDOUT_PER_TASK, seed: int = HELDOUT_SEED) -> list[Example]:
    """The balanced evaluation split: `per_task` distinct examples of every task, interleaved."""
    rng = random.Random(seed)
    by_task: dict[str, list[Example]] = {t: [] for t in TASK_NAMES}
    seen: set[str] = set()
    while any(len(v) < per_task for v in by_task.values()):
        for t in TASK_NAMES:
            if len(by_task[t]) >= per_task:
                continue
            ex = GENERATORS[t](rng)
            if ex.prompt not in seen:
                seen.add(ex.prompt)
                by_task[t].append(ex)
    return [by_task[t][i] for i in range(per_task) for t in TASK_NAMES]


def train_stream(seed: int) -> Iterator[Example]:
    """An endless stream of single training examples (family by TRAIN_MIX), never held-out."""
    for batch in train_batches(seed, {f: 1 for f in FAMILIES}):
        yield batch[0]


def train_batches(seed: int, sizes: dict[str, int]) -> Iterator[list[Example]]:
    """Endless one-family batches: the family drawn by TRAIN_MIX, then `sizes[family]` examples,
    each of a task drawn from the family by TRAIN_TASK_WEIGHT (TRAIN_GENERATORS); never a held-out
    prompt.

    A family's tasks share one row length, so its batches need no padding; the trainer sizes each
    family's batches to a common token budget (short arithmetic rows come many to a batch).
    """
    rng = random.Random(seed)
    excluded = {ex.prompt for ex in heldout_split()}
    names = list(TRAIN_MIX)
    weights = [TRAIN_MIX[n] for n in names]
    # A task repeated `weight` times in its family's draw tuple: one rng.choice per example.
    draws = {f: tuple(t for t in ts for _ in range(TRAIN_TASK_WEIGHT.get(t, 1))) for f, ts in FAMILIES.items()}
    while True:
        family = rng.choices(names, weights)[0]
        batch: list[Example] = []
        while len(batch) < sizes[family]:
            ex = TRAIN_GENERATORS[rng.choice(draws[family])](rng)
            if ex.prompt not in excluded:
                batch.append(ex)
        yield batch


def split(name: str) -> list[Example]:
    """A named evaluation split (`heldout`, or `heldout-small` with 5 per task, for smoke runs)."""
    if name == "heldout":
        return heldout_split()
    if name == "heldout-small":
        return heldout_split(per_task=5)
    raise ValueError(f"unknown split {name!r}; choose 'heldout' or 'heldout-small'")


def is_correct(example: Example, completion: str) -> bool:
    """Exact match; only surrounding whitespace is forgiven."""
    return completion.strip() == example.answer
