"""The toy task suite: generated prompts with exact, checkable answers.

Five tasks, from easy positions (every answer character is a copy of a prompt character) to
hard ones (an answer digit depends on a carry or borrow chain):

  copy   "Copy: ab cde fg ..."        (70 characters)  -> the same 70 characters   4 blocks
  upper  "Upper: ab cde ..."          (60 characters)  -> "AB CDE ..."              3 blocks
  lower  "Lower: AB CDE ..."          (40 characters)  -> "ab cde ..."              2 blocks
  add    "Add: 04821+00937"                            -> "005758"                  1 block
  sub    "Sub: 73921-04832"                            -> "69089"                   1 block

Every task has a fixed input width, so each answer character sits at a fixed distance from the
prompt characters it depends on. With rotary positions, attending at a fixed relative offset is
one head's job (a fixed-length copy was learned in ~400 steps), while variable-length copying
needs an induction circuit that did not form within the 30-minute budget on 2 CPU cores
(docs/toy-model.md, "What did not work"). Prompt lengths still differ across tasks (the
chat-templated prompts are 98 to 158 tokens), and answers span 1 to 4 blocks.

A split is a pure function of (name, seed): `heldout` is drawn from its own seed and the
training stream rejects every held-out prompt, so held-out accuracy measures generalization.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

TASK_NAMES: tuple[str, ...] = ("copy", "upper", "lower", "add", "sub")
# Training oversamples the arithmetic; the held-out split is balanced (HELDOUT_PER_TASK each).
TRAIN_MIX: dict[str, float] = {"copy": 0.15, "upper": 0.15, "lower": 0.15, "add": 0.275, "sub": 0.275}
HELDOUT_SEED = 20261122
HELDOUT_PER_TASK = 48
COPY_LEN = 70
UPPER_LEN = 60
LOWER_LEN = 40
DIGITS = 5
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Example:
    task: str
    prompt: str  # the user message (the chat template is applied by the caller)
    answer: str  # the exact expected completion, without the end-of-text token


def _words(rng: random.Random, length: int) -> str:
    """Random lowercase words separated by single spaces, exactly `length` characters."""
    out = ""
    while len(out) < length:
        out += "".join(rng.choice(_LETTERS) for _ in range(rng.randint(1, 7))) + " "
    out = out[:length]
    return out[:-1] + rng.choice(_LETTERS) if out.endswith(" ") else out


def _copy(rng: random.Random) -> Example:
    s = _words(rng, COPY_LEN)
    return Example("copy", f"Copy: {s}", s)


def _upper(rng: random.Random) -> Example:
    s = _words(rng, UPPER_LEN)
    return Example("upper", f"Upper: {s}", s.upper())


def _lower(rng: random.Random) -> Example:
    s = _words(rng, LOWER_LEN)
    return Example("lower", f"Lower: {s.upper()}", s)


def _add(rng: random.Random) -> Example:
    a, b = rng.randrange(10**DIGITS), rng.randrange(10**DIGITS)
    return Example("add", f"Add: {a:0{DIGITS}d}+{b:0{DIGITS}d}", f"{a + b:0{DIGITS + 1}d}")


def _sub(rng: random.Random) -> Example:
    a, b = sorted((rng.randrange(10**DIGITS), rng.randrange(10**DIGITS)), reverse=True)
    return Example("sub", f"Sub: {a:0{DIGITS}d}-{b:0{DIGITS}d}", f"{a - b:0{DIGITS}d}")


_GENERATORS: dict[str, Callable[[random.Random], Example]] = {
    "copy": _copy, "upper": _upper, "lower": _lower, "add": _add, "sub": _sub,
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
            ex = _GENERATORS[t](rng)
            if ex.prompt not in seen:
                seen.add(ex.prompt)
                by_task[t].append(ex)
    return [by_task[t][i] for i in range(per_task) for t in TASK_NAMES]


def train_stream(seed: int) -> Iterator[Example]:
    """An endless stream of training examples (TRAIN_MIX), never a held-out prompt."""
    rng = random.Random(seed)
    excluded = {ex.prompt for ex in heldout_split()}
    names = list(TRAIN_MIX)
    weights = [TRAIN_MIX[n] for n in names]
    while True:
        ex = _GENERATORS[rng.choices(names, weights)[0]](rng)
        if ex.prompt not in excluded:
            yield ex


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
