"""The toy task suite: generated prompts with exact, checkable answers.

Six tasks, from easy positions (every answer character is a copy of a prompt character) to
hard ones (a digit of a sum depends on a carry chain; a sorted list depends on the whole input):

  copy     "Copy: ab cde fg"          -> "ab cde fg"           answers of 1..4 blocks
  upper    "Upper: ab cde"            -> "AB CDE"              1..3 blocks
  reverse  "Reverse: abc de"          -> "ed cba"              1..2 blocks
  repeat   "Repeat 3 times: ab1"      -> "ab1ab1ab1"           1..3 blocks
  sort     "Sort: 5 1 9 1"            -> "1 1 5 9"             1 block
  add      "Add: 4821+937"            -> "5758"                1 block

A split is a pure function of (name, seed): `heldout` is drawn from its own seed and the
training stream rejects every held-out prompt, so held-out accuracy measures generalization.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

TASK_NAMES: tuple[str, ...] = ("copy", "upper", "reverse", "repeat", "sort", "add")
# Training oversamples the hard tasks; the held-out split is balanced (HELDOUT_PER_TASK each).
TRAIN_MIX: dict[str, float] = {
    "copy": 0.14, "upper": 0.12, "reverse": 0.16, "repeat": 0.12, "sort": 0.22, "add": 0.24,
}
HELDOUT_SEED = 20261122
HELDOUT_PER_TASK = 40
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_ALNUM = _LETTERS + "0123456789"


@dataclass(frozen=True)
class Example:
    task: str
    prompt: str  # the user message (the chat template is applied by the caller)
    answer: str  # the exact expected completion, without the end-of-text token


def _words(rng: random.Random, lo: int, hi: int) -> str:
    """Random lowercase words, total length in [lo, hi]."""
    target = rng.randint(lo, hi)
    words: list[str] = []
    length = -1
    while length < target:
        w = "".join(rng.choice(_LETTERS) for _ in range(rng.randint(1, 7)))
        words.append(w)
        length += len(w) + 1
    return " ".join(words)[:target].rstrip() or "a"


def _copy(rng: random.Random) -> Example:
    s = _words(rng, 4, 110)
    return Example("copy", f"Copy: {s}", s)


def _upper(rng: random.Random) -> Example:
    s = _words(rng, 4, 80)
    return Example("upper", f"Upper: {s}", s.upper())


def _reverse(rng: random.Random) -> Example:
    s = _words(rng, 3, 40)
    return Example("reverse", f"Reverse: {s}", s[::-1])


def _repeat(rng: random.Random) -> Example:
    unit = "".join(rng.choice(_ALNUM) for _ in range(rng.randint(2, 8)))
    n = rng.randint(2, 9)
    return Example("repeat", f"Repeat {n} times: {unit}", unit * n)


def _sort(rng: random.Random) -> Example:
    xs = [rng.randint(0, 9) for _ in range(rng.randint(3, 12))]
    return Example(
        "sort", "Sort: " + " ".join(map(str, xs)), " ".join(map(str, sorted(xs)))
    )


def _add(rng: random.Random) -> Example:
    a = rng.randint(0, 10 ** rng.randint(1, 5) - 1)
    b = rng.randint(0, 10 ** rng.randint(1, 5) - 1)
    return Example("add", f"Add: {a}+{b}", str(a + b))


_GENERATORS: dict[str, Callable[[random.Random], Example]] = {
    "copy": _copy, "upper": _upper, "reverse": _reverse,
    "repeat": _repeat, "sort": _sort, "add": _add,
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
