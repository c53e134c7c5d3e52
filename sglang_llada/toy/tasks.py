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
from typing import Optional

TASK_NAMES: tuple[str, ...] = ("copy", "upper", "lower", "add", "sub")
# Tasks trained together in one batch (same row length within a family).
FAMILIES: dict[str, tuple[str, ...]] = {"text": ("copy", "upper", "lower"), "arith": ("add", "sub")}
# Share of training batches per family; the held-out split is balanced (HELDOUT_PER_TASK each).
# 60% arithmetic: at 50% the toy learned only one of sums and differences within the step budget
# (docs/toy-model.md, "What did not work"); at 60% it learns both, and text stays exact.
TRAIN_MIX: dict[str, float] = {"text": 0.4, "arith": 0.6}
# Draws per task within its family's training batches (absent: 1). Empty in the shipped recipe:
# reweighting differences against sums moved which of the two the toy learned, not how many
# (docs/toy-model.md, "What did not work"). docs/probes/toy_recipe_variant/toy_recipe_variant.py --task-weight sets it.
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
    prompt: str  # the (last) user message (the chat template is applied by the caller)
    answer: str  # the exact expected completion, without the end-of-text token
    # Earlier turns of a multi-turn chat, oldest first: (user message, assistant answer) pairs.
    history: tuple[tuple[str, str], ...] = ()

    def messages(self) -> list[dict[str, str]]:
        """The chat as OpenAI-style messages, ending with the user turn to be answered."""
        out: list[dict[str, str]] = []
        for user, assistant in self.history:
            out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return out + [{"role": "user", "content": self.prompt}]


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


_DIGITS = "0123456789"


def varlen_text(rng: random.Random, length: int) -> str:
    """Exactly `length` characters (1..72): words of lowercase letters and groups of digits (about
    one in five), separated by single spaces, never starting or ending with a space."""
    while True:
        out = ""
        while len(out) < length:
            alphabet = _DIGITS if rng.random() < 0.2 else _LETTERS
            out += "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7))) + " "
        out = out[:length]
        if out.endswith(" "):
            out = out[:-1] + rng.choice(_LETTERS)
        if not any(w in out for w in _TEMPLATE_WORDS):
            return out


def runs_text(rng: random.Random, length: int) -> str:
    """Exactly `length` characters of words made of runs of one letter (2-4 times each, 1-3 runs a
    word), e.g. "aaabb cccc dd": copying them needs the run lengths right, where a decoder that
    commits positions in parallel can drop or repeat a character."""
    while True:
        out = ""
        while len(out) < length:
            out += "".join(rng.choice(_LETTERS) * rng.randint(2, 4) for _ in range(rng.randint(1, 3))) + " "
        out = out[:length]
        if out.endswith(" "):
            out = out[:-1] + out[-2]
        if not any(w in out for w in _TEMPLATE_WORDS):
            return out


def text_example(task: str, s: str) -> Example:
    """A copy / upper / lower example over the lowercase string `s`."""
    if task == "copy":
        return Example("copy", f"Copy: {s}", s)
    if task == "upper":
        return Example("upper", f"Upper: {s}", s.upper())
    if task == "lower":
        return Example("lower", f"Lower: {s.upper()}", s)
    raise ValueError(f"not a text task: {task!r}")


def _copy(rng: random.Random) -> Example:
    return text_example("copy", _words(rng, TEXT_LEN))


def _upper(rng: random.Random) -> Example:
    return text_example("upper", _words(rng, TEXT_LEN))


def _lower(rng: random.Random) -> Example:
    return text_example("lower", _words(rng, TEXT_LEN))


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


def train_batches(seed: int, sizes: dict[str, int], with_json: bool = False) -> Iterator[list[Example]]:
    """Endless one-family batches: the family drawn by TRAIN_MIX, then `sizes[family]` examples,
    each of a task drawn from the family by TRAIN_TASK_WEIGHT (TRAIN_GENERATORS); never a held-out
    prompt. `with_json` (the "fixed-json" recipe): FIXED_JSON_MIX, with batches of the JSON task.

    A family's tasks share one row length, so its batches need no padding; the trainer sizes each
    family's batches to a common token budget (short arithmetic rows come many to a batch).
    """
    rng = random.Random(seed)
    excluded = {ex.prompt for ex in heldout_split()}
    if with_json:  # never a prompt of the general splits either (the `json` split scores this task)
        excluded |= {e.prompt for v in general_splits().values() for e in v}
    mix = FIXED_JSON_MIX if with_json else TRAIN_MIX
    names = list(mix)
    weights = [mix[n] for n in names]
    families = {**FAMILIES, "json": ("json",)}
    generators = {**TRAIN_GENERATORS, "json": GENERAL_TRAIN_GENERATORS["json"]}
    # A task repeated `weight` times in its family's draw tuple: one rng.choice per example.
    draws = {f: tuple(t for t in ts for _ in range(TRAIN_TASK_WEIGHT.get(t, 1))) for f, ts in families.items()}
    while True:
        family = rng.choices(names, weights)[0]
        batch: list[Example] = []
        while len(batch) < sizes[family]:
            ex = generators[rng.choice(draws[family])](rng)
            if ex.prompt not in excluded:
                batch.append(ex)
        yield batch


# --- the "general" recipe: inputs of any length, multi-turn chats, a JSON task -----------------
#
# The fixed-width suite above is what the toy shipped until now was trained on. A new user types
# short and long inputs, chats over several turns and asks for JSON; the general recipe trains on
# all of that, and its held-out splits (below) check each.

GENERAL_TASKS: tuple[str, ...] = ("copy", "upper", "lower", "add", "sub", "json")
# The fixed-width suite plus the JSON task ("fixed-json" recipe: the shipped 2.0 toy was fine-tuned
# on it from the fixed-width toy): sums have 4 digits and differences 3, so where "}" goes depends
# on the operator the model read.
FIXED_JSON_MIX: dict[str, float] = {"text": 0.3, "arith": 0.45, "json": 0.25}
GENERAL_FAMILIES: dict[str, tuple[str, ...]] = {
    "text": ("copy", "upper", "lower"), "arith": ("add", "sub"), "json": ("json",),
}
# Share of training batches per family; "chat" batches hold every task as the last turn of a chat
# with 1-2 earlier turns (right answers). Arithmetic keeps the largest share of the fixed recipe's
# lesson (sums and differences formed at 60% of batches, not at 50%); the JSON task repeats it.
GENERAL_MIX: dict[str, float] = {"text": 0.35, "arith": 0.35, "json": 0.15, "chat": 0.15}
SPLIT_PER_TASK = 16
JSON_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {
        "op": {"type": "string", "enum": ["add", "sub"]},
        "result": {"type": "string", "pattern": "^[0-9]{3,4}$"},
    },
    "required": ["op", "result"],
    "additionalProperties": False,
}


def varlen_example(task: str, rng: random.Random, lo: int = 1, hi: int = TEXT_LEN) -> Example:
    """A copy / upper / lower example whose input has a uniform length in [lo, hi]."""
    return text_example(task, varlen_text(rng, rng.randint(lo, hi)))


def json_example(rng: random.Random, sparse_share: float = 0.0) -> Example:
    """`JSON: 482+937` -> `{"op": "add", "result": "1419"}` (or a difference, a >= b): fixed keys,
    the result a string of digits as wide as the Add / Sub answers (4 and 3, zero-padded).

    Not a JSON integer: without leading zeros the result's digits move with its length, and the toy
    (which adds in fixed columns) did not learn that in 900 steps (0 of 16 right, the format right;
    docs/toy-model.md)."""
    a, b = operands(rng, sparse_share)
    if rng.random() < 0.5:
        return Example("json", f"JSON: {a:0{DIGITS}d}+{b:0{DIGITS}d}", f'{{"op": "add", "result": "{a + b:0{DIGITS + 1}d}"}}')
    a, b = max(a, b), min(a, b)
    return Example("json", f"JSON: {a:0{DIGITS}d}-{b:0{DIGITS}d}", f'{{"op": "sub", "result": "{a - b:0{DIGITS}d}"}}')


def _varlen_generator(task: str) -> Callable[[random.Random], Example]:
    return lambda rng: varlen_example(task, rng)


GENERAL_TRAIN_GENERATORS: dict[str, Callable[[random.Random], Example]] = {
    **{t: _varlen_generator(t) for t in FAMILIES["text"]},
    **{t: TRAIN_GENERATORS[t] for t in FAMILIES["arith"]},  # with the zeroed-digit pairs
    "json": lambda rng: json_example(rng, ARITH_SPARSE_SHARE),
}
_SPLIT_GENERATORS: dict[str, Callable[[random.Random], Example]] = {
    **{t: _varlen_generator(t) for t in FAMILIES["text"]},
    "add": _add, "sub": _sub, "json": json_example,
}


def with_history(ex: Example, rng: random.Random, gens: dict[str, Callable[[random.Random], Example]]) -> Example:
    """`ex` as the last turn of a chat with 1-2 earlier turns of random tasks, answered right."""
    turns = tuple((e.prompt, e.answer) for e in (gens[rng.choice(GENERAL_TASKS)](rng) for _ in range(rng.randint(1, 2))))
    return Example(ex.task, ex.prompt, ex.answer, turns)


def _task_split(seed: int, make: Callable[[str, random.Random], Example], names: tuple[str, ...]) -> list[Example]:
    rng = random.Random(seed)
    out: list[Example] = []
    seen: set[str] = set()
    while len(out) < SPLIT_PER_TASK * len(names):
        name = names[len(out) % len(names)]
        ex = make(name, rng)
        if ex.prompt not in seen:
            seen.add(ex.prompt)
            out.append(ex)
    return out


def general_splits() -> dict[str, list[Example]]:
    """The held-out splits of the general recipe (16 examples a task each, distinct prompts):

    short      copy / upper / lower, inputs of 1-12 characters
    varlen     copy / upper / lower, inputs of 1-72 characters
    multiturn  every task as the last of 2-3 turns
    json       the JSON task (sums and differences)
    runs       copy, inputs of 24-72 characters made of repeated-letter runs (`runs_text`)
    """
    text = FAMILIES["text"]
    return {
        "short": _task_split(HELDOUT_SEED + 1, lambda t, r: varlen_example(t, r, 1, 12), text),
        "varlen": _task_split(HELDOUT_SEED + 2, lambda t, r: varlen_example(t, r), text),
        "multiturn": _task_split(
            HELDOUT_SEED + 3, lambda t, r: with_history(_SPLIT_GENERATORS[t](r), r, _SPLIT_GENERATORS), GENERAL_TASKS,
        ),
        "json": _task_split(HELDOUT_SEED + 4, lambda t, r: json_example(r), ("json",)),
        "runs": _task_split(HELDOUT_SEED + 5, lambda t, r: text_example(t, runs_text(r, r.randint(24, TEXT_LEN))), ("copy",)),
    }


def general_train_batches(seed: int, row_tokens: Callable[[Example], int], budget: int) -> Iterator[list[Example]]:
    """Endless one-family batches of the general recipe, never a prompt of any held-out split.

    The family is drawn per batch by GENERAL_MIX (as the fixed recipe does: the share of
    *batches*, hence of updates, is what decided which tasks formed), the task uniform within it;
    a "chat" batch's examples get 1-2 earlier turns. Examples are drawn until the batch's padded
    rows (rows x the longest `row_tokens`) reach `budget`.
    """
    rng = random.Random(seed)
    excluded = {ex.prompt for ex in heldout_split()} | {e.prompt for v in general_splits().values() for e in v}
    names = list(GENERAL_MIX)
    weights = [GENERAL_MIX[n] for n in names]
    while True:
        family = rng.choices(names, weights)[0]

        def draw(family: str = family) -> Optional[Example]:
            tasks = GENERAL_TASKS if family == "chat" else GENERAL_FAMILIES[family]
            ex = GENERAL_TRAIN_GENERATORS[rng.choice(tasks)](rng)
            if ex.prompt in excluded:
                return None
            return with_history(ex, rng, GENERAL_TRAIN_GENERATORS) if family == "chat" else ex

        yield padded_batch(draw, row_tokens, budget)


def padded_batch(draw: Callable[[], Optional[Example]], row_tokens: Callable[[Example], int], budget: int) -> list[Example]:
    """Examples from `draw()` (None: drawn and rejected) until the batch's padded rows (rows x the
    longest `row_tokens`) reach `budget`."""
    batch: list[Example] = []
    longest = 0
    while len(batch) * longest < budget:
        ex = draw()
        if ex is not None:
            batch.append(ex)
            longest = max(longest, row_tokens(ex))
    return batch


# --- multi-answer tasks and the help reply (the toys issue: drafts that can go wrong) ------------
#
# Every task above fixes each answer position by the prompt, so a greedy draft of a trained toy is
# right at any threshold and the editing decoders have nothing to repair. Real prompts often have
# several valid answers; positions committed in the same forward can then come from different
# answers ("red banana" from "red apple" / "yellow banana"): the parallel-decoding error LLaDA2.1's
# token editing repairs, and LLaDA2.2's insert / delete where the answers differ in length. These
# tasks have small fixed answer sets whose members differ in length and share letters position by
# position; training answers each uniformly at random, and they are scored by validity.

FRUITS: tuple[str, ...] = (
    "apple", "apricot", "banana", "cherry", "coconut", "date", "fig", "grape", "guava", "kiwi",
    "lemon", "lime", "mango", "melon", "olive", "orange", "papaya", "peach", "pear", "plum",
)
# Two-word pairs whose halves go together (a colour and a fruit of that colour): mixing two pairs
# position by position gives a pair that is not in the set ("red lemon").
PAIRS: tuple[str, ...] = (
    "red apple", "red cherry", "yellow banana", "yellow lemon", "green lime", "green kiwi",
    "purple grape", "purple plum", "orange mango", "orange papaya", "brown date", "brown coconut",
    "black olive", "pink guava", "white coconut", "golden pear", "dark fig", "pale melon",
    "soft peach", "sour lime",
)
MULTI_TASKS: tuple[str, ...] = ("fruit", "pair", "fruits")
FRUITS_COUNTS = range(2, 9)  # `Fruits: N`; eight names are about two blocks
# The one reply to any prompt outside the toy's formats: what the toy answers, in one short text.
HELP_TEXT = (
    "I answer: Copy: / Upper: / Lower: + 72 letters, Add: / Sub: / JSON: 123+456, Fruit:, Pair:, Fruits: 5"
)


def _fruit(rng: random.Random) -> Example:
    return Example("fruit", "Fruit:", rng.choice(FRUITS))


def _pair(rng: random.Random) -> Example:
    return Example("pair", "Pair:", rng.choice(PAIRS))


def fruits_example(rng: random.Random, n: int | None = None) -> Example:
    """`Fruits: N` -> N fruit names (repeats allowed), comma-separated: several independent choices
    in one block, and a next block for a folded check to ride in."""
    n = rng.choice(FRUITS_COUNTS) if n is None else n
    return Example("fruits", f"Fruits: {n}", ", ".join(rng.choice(FRUITS) for _ in range(n)))


MULTI_GENERATORS: dict[str, Callable[[random.Random], Example]] = {
    "fruit": _fruit, "pair": _pair, "fruits": fruits_example,
}


def sibling(ex: Example, rng: random.Random) -> Example | None:
    """Another valid answer to a multi-answer prompt (a `Fruits: N` list of the same length), or
    None for a task with one answer. The 2.1 toy's token-to-token stream writes some corrupted
    positions from it: a draft whose positions come from different answers ("red lemon" from "red
    apple" / "yellow lemon") is the parallel-decoding error that editing repairs."""
    if ex.task == "fruits":
        return fruits_example(rng, len(ex.answer.split(", ")))
    gen = MULTI_GENERATORS.get(ex.task)
    return None if gen is None else gen(rng)

# Out-of-format prompts: the help reply's training and held-out phrases are disjoint lists; the
# generated kinds (text tasks of the wrong width, arithmetic of the wrong digit count) draw from
# seeds, and the training stream rejects every held-out prompt.
_HELP_PHRASES_TRAIN: tuple[str, ...] = (
    "Hello", "Hi there", "Good morning", "Hey", "How are you?", "What can you do?", "Help",
    "Tell me a joke", "What is your name?", "Who made you?", "Thanks", "What time is it?",
    "Translate this please", "Write a poem", "Are you a robot?", "What is 1+1?", "Bye",
    "Please help me", "Explain diffusion models", "Summarize this text",
)
_HELP_PHRASES_HELDOUT: tuple[str, ...] = (
    "Hi", "Hello!", "Good evening", "What is 2+2?", "Who are you?", "Can you help?", "Sing a song",
    "What day is today?", "Thank you", "Goodbye",
)
HELP_KINDS: tuple[str, ...] = ("phrase", "short-text", "long-text", "digits", "empty", "words")


def help_example(rng: random.Random, phrases: tuple[str, ...] = _HELP_PHRASES_TRAIN, kind: str | None = None) -> Example:
    """A prompt the toy has no format for, answered with HELP_TEXT: a phrase, a text task whose input
    is not 72 characters, arithmetic with other than 3 digits, an empty message, or plain words."""
    kind = rng.choice(HELP_KINDS) if kind is None else kind
    if kind == "phrase":
        prompt = rng.choice(phrases)
    elif kind == "short-text":  # a text task whose input is shorter than the 72 characters it needs
        prompt = text_example(rng.choice(FAMILIES["text"]), varlen_text(rng, rng.randint(1, TEXT_LEN - 1))).prompt
    elif kind == "long-text":
        s = varlen_text(rng, TEXT_LEN) + " " + varlen_text(rng, rng.randint(1, 24))
        prompt = text_example(rng.choice(FAMILIES["text"]), s).prompt
    elif kind == "digits":  # arithmetic with other than 3 digits
        digits = rng.choice((1, 2, 4))
        a, b = sorted((rng.randrange(10**digits), rng.randrange(10**digits)), reverse=True)
        prompt = f"Add: {a}+{b}" if rng.random() < 0.5 else f"Sub: {a}-{b}"
    elif kind == "empty":
        prompt = ""
    else:
        prompt = _words(rng, rng.randint(3, 40))
    return Example("help", prompt, HELP_TEXT)


def multi_split(per_task: int = 2 * SPLIT_PER_TASK, seed: int = HELDOUT_SEED + 6) -> list[Example]:
    """The multi-answer split: `Fruit:` and `Pair:` and `Fruits: N` for every N, `per_task` each.
    The answer stored is one draw; scoring is by validity (`is_valid`), so repeated prompts are
    scored on what the server samples (greedy repeats give one answer per distinct prompt)."""
    rng = random.Random(seed)
    out = [_fruit(rng) for _ in range(per_task)] + [_pair(rng) for _ in range(per_task)]
    out += [fruits_example(rng, FRUITS_COUNTS[i % len(FRUITS_COUNTS)]) for i in range(per_task)]
    return out


def help_split(per_kind: int = 8, seed: int = HELDOUT_SEED + 7) -> list[Example]:
    """Held-out out-of-format prompts (`per_kind` of each kind, distinct, never trained on), plus
    multi-turn chats whose last turn is out of format; every answer is HELP_TEXT."""
    rng = random.Random(seed)
    out: list[Example] = []
    seen: set[str] = set()
    for kind in HELP_KINDS:
        tries = 0
        while sum(1 for e in out if e.task == "help" and help_kind(e.prompt) == kind) < per_kind and tries < 1000:
            tries += 1
            ex = help_example(rng, _HELP_PHRASES_HELDOUT, kind)
            if ex.prompt not in seen:
                seen.add(ex.prompt)
                out.append(ex)
    for _ in range(per_kind):
        out.append(with_history(help_example(rng, _HELP_PHRASES_HELDOUT, "phrase"), rng, _SPLIT_GENERATORS))
    return out


def help_kind(prompt: str) -> str:
    if prompt == "":
        return "empty"
    if any(prompt.startswith(p) for p in ("Copy: ", "Upper: ", "Lower: ")):
        return "short-text" if len(prompt.split(": ", 1)[1]) < TEXT_LEN else "long-text"
    if prompt.startswith(("Add: ", "Sub: ")):
        return "digits"
    if prompt in _HELP_PHRASES_HELDOUT or prompt in _HELP_PHRASES_TRAIN:
        return "phrase"
    return "words"


def is_valid(example: Example, completion: str) -> bool:
    """Multi-answer tasks: every pick is a member of the prompt's set, a list has the asked length;
    every other task: exact match (`is_correct`)."""
    text = completion.strip()
    if example.task == "fruit":
        return text in FRUITS
    if example.task == "pair":
        return text in PAIRS
    if example.task == "fruits":
        picks = text.split(", ")
        return len(picks) == int(example.prompt.split(": ")[1]) and all(p in FRUITS for p in picks)
    return text == example.answer


# The "multi" recipe (`python -m sglang_llada.toy.train --recipe multi --init <shipped toy>`): the
# fixed-width suite and the JSON task keep their share, beside the multi-answer tasks and the help
# reply (a help batch holds out-of-format prompts, some as the last turn of a chat).
MULTI_MIX: dict[str, float] = {"text": 0.15, "arith": 0.2, "json": 0.15, "multi": 0.3, "help": 0.2}
# The "multi2" recipe, trained further from a "multi" toy: what that toy had not learned gets the
# larger share (`Pair:`, `Fruits: N` lists of the asked length, the help reply to out-of-width
# arithmetic and unseen phrases); within "multi" the tasks are drawn by MULTI2_TASK_WEIGHTS.
MULTI2_MIX: dict[str, float] = {"text": 0.1, "arith": 0.15, "json": 0.1, "multi": 0.4, "help": 0.25}
MULTI2_TASK_WEIGHTS: dict[str, float] = {"fruit": 1.0, "pair": 2.0, "fruits": 3.0}


def multi_train_batches(
    seed: int, row_tokens: Callable[[Example], int], budget: int, recipe: str = "multi",
) -> Iterator[list[Example]]:
    """Endless one-family batches of the "multi" recipe (MULTI_MIX; "multi2": MULTI2_MIX and
    MULTI2_TASK_WEIGHTS), padded rows up to `budget` as `general_train_batches` sizes them; never a
    prompt of a held-out split (the multi-answer prompts are a fixed few: the split scores what the
    server answers to them, not unseen prompts)."""
    mix = MULTI2_MIX if recipe == "multi2" else MULTI_MIX
    task_weights = MULTI2_TASK_WEIGHTS if recipe == "multi2" else {t: 1.0 for t in MULTI_GENERATORS}
    rng = random.Random(seed)
    held = {ex.prompt for ex in heldout_split()} | {e.prompt for v in general_splits().values() for e in v}
    held |= {e.prompt for e in help_split()}
    generators: dict[str, tuple[Callable[[random.Random], Example], ...]] = {
        "text": tuple(TRAIN_GENERATORS[t] for t in FAMILIES["text"]),
        "arith": tuple(TRAIN_GENERATORS[t] for t in FAMILIES["arith"]),
        "json": (GENERAL_TRAIN_GENERATORS["json"],),
        "multi": tuple(MULTI_GENERATORS.values()),
        "help": (help_example,),
    }
    names = list(mix)
    weights = [mix[n] for n in names]
    multi_names = list(MULTI_GENERATORS)
    multi_weights = [task_weights[t] for t in multi_names]
    while True:
        family = rng.choices(names, weights)[0]

        def draw(family: str = family) -> Optional[Example]:
            if family == "multi" and recipe == "multi2":
                ex = MULTI_GENERATORS[rng.choices(multi_names, multi_weights)[0]](rng)
            else:
                ex = rng.choice(generators[family])(rng)
            if family != "multi" and ex.prompt in held and ex.prompt != "":  # "": the one empty message
                return None
            return with_history(ex, rng, GENERAL_TRAIN_GENERATORS) if family == "help" and rng.random() < 0.25 else ex

        yield padded_batch(draw, row_tokens, budget)


SPLITS: tuple[str, ...] = ("heldout", "heldout-small", "short", "varlen", "multiturn", "json", "runs", "multi", "help")


def split(name: str) -> list[Example]:
    """A named evaluation split: `heldout` (the fixed-width suite, 48 a task), `heldout-small` (5 a
    task, for smoke runs), one of the general recipe's (`general_splits`), `multi` (multi-answer
    tasks, scored by validity) or `help` (out-of-format prompts, answered with HELP_TEXT)."""
    if name == "multi":
        return multi_split()
    if name == "help":
        return help_split()
    if name == "heldout":
        return heldout_split()
    if name == "heldout-small":
        return heldout_split(per_task=5)
    if name in SPLITS:
        return general_splits()[name]
    raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")


def is_correct(example: Example, completion: str) -> bool:
    """Exact match (only surrounding whitespace is forgiven); a multi-answer task by validity."""
    return is_valid(example, completion)
