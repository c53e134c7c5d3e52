"""The block constraint of structured output under diffusion (sglang_llada/constrained/automaton.py),
checked against brute force: every fill of a block's masks, in any order."""

from __future__ import annotations

import itertools
import random

import pytest

from sglang_llada.constrained.automaton import TokenAutomaton, admit, allowed_tokens, feasible
from sglang_llada.testing.char_automata import CHARS, EOS, char_automaton


def brute_allowed(fsm: TokenAutomaton, start: int, block: list[int | None], budget: int) -> list[set[int] | None]:
    """Per masked position: the tokens it takes in some fill of all masks after which the output
    can be completed within `budget` more tokens."""
    holes = [p for p, t in enumerate(block) if t is None]
    out: list[set[int] | None] = [set() if t is None else None for t in block]
    for fill in itertools.product(range(len(CHARS) + 1), repeat=len(holes)):
        cur = list(block)
        for p, t in zip(holes, fill):
            cur[p] = t
        end = fsm.walk(start, cur)  # type: ignore[arg-type]
        if end is None:
            continue
        d = fsm.distance(end)
        if d is None or (d > budget and not fsm.accepts(end)):
            continue
        for p, t in zip(holes, fill):
            out[p].add(t)  # type: ignore[union-attr]
    return out


PATTERNS = ["a(b|c)*d", "\\{(ab|cd)*\\}", "(a|b)(c|d)(a|b)", "a*b*c*", "(abc|dd)+"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_allowed_tokens_equal_brute_force_on_random_partial_blocks(pattern: str) -> None:
    fsm = char_automaton(pattern)
    rng = random.Random(pattern)
    checked = 0
    for _ in range(60):
        S = rng.randint(1, 5)
        block: list[int | None] = [None] * S
        for p in rng.sample(range(S), rng.randint(0, S - 1)):
            block[p] = rng.randrange(len(CHARS) + 1)
        budget = rng.randint(0, 3)
        want = brute_allowed(fsm, fsm.initial, block, budget)
        got = allowed_tokens(fsm, fsm.initial, block, budget)
        assert got == want, (pattern, block, budget)
        assert feasible(fsm, fsm.initial, block, budget) == any(want[p] for p in range(S) if block[p] is None)
        checked += any(want[p] for p in range(S) if block[p] is None)
    assert checked >= 10  # the random blocks were not all dead ends


def test_end_token_only_where_the_language_accepts_and_then_only_end_tokens() -> None:
    fsm = char_automaton("ab")
    a, b = CHARS.index("a"), CHARS.index("b")
    assert allowed_tokens(fsm, fsm.initial, [None, None, None, None], 0) == [{a}, {b}, {EOS}, {EOS}]
    assert not feasible(fsm, fsm.initial, [a, EOS, None, None], 5)


def test_budget_past_the_block_counts() -> None:
    fsm = char_automaton("abcd")
    a = CHARS.index("a")
    assert feasible(fsm, fsm.initial, [None, None], 2)  # "ab" now, "cd" in the next block
    assert not feasible(fsm, fsm.initial, [None, None], 1)  # max_new_tokens would cut "abc"
    assert allowed_tokens(fsm, fsm.initial, [None, None], 2)[0] == {a}


def test_proposals_that_are_each_allowed_but_not_together_are_admitted_one_by_one() -> None:
    fsm = char_automaton("ab|ba")
    a, b = CHARS.index("a"), CHARS.index("b")
    block: list[int | None] = [None, None]
    allowed = allowed_tokens(fsm, fsm.initial, block, 0)
    assert a in allowed[0] and a in allowed[1]  # "a?" and "?a" are each completable
    assert admit(fsm, fsm.initial, block, [(0, a), (1, a)], 0) == [(0, a)]  # "aa" is not
    assert admit(fsm, fsm.initial, block, [(1, a), (0, b)], 0) == [(1, a), (0, b)]


# --- automata from SGLang's outlines machinery, on the toy tokenizer ---------------------------


def test_json_schema_automaton_accepts_the_json_task_answers_and_nothing_malformed() -> None:
    from sglang_llada.constrained.grammar import automaton_from_json_schema, automaton_from_regex
    from sglang_llada.toy.tasks import JSON_SCHEMA, split
    from sglang_llada.toy.tokenizer import load_tokenizer

    tok = load_tokenizer()
    fsm = automaton_from_json_schema(JSON_SCHEMA, tok)
    eos = tok.eos_token_id
    for ex in split("json"):
        ids = tok.encode(ex.answer, add_special_tokens=False)
        assert fsm.accepts(fsm.walk(fsm.initial, [*ids, eos, eos])), ex.answer  # type: ignore[arg-type]
    bad_answers = [
        '{"op": "mul", "result": "1234"}', '{"op": "add", "result": 1234}', '{"op": "add", "result": "12"}',
        '{"op": "add"}', '{"op": "add", "result": "1234"',
    ]
    for bad in bad_answers:
        end = fsm.walk(fsm.initial, [*tok.encode(bad, add_special_tokens=False), eos])
        assert end is None, bad
    # A fully masked block may start only with "{" and may not end before the object closes.
    allowed = allowed_tokens(fsm, fsm.initial, [None] * 32, 0)
    assert allowed[0] == set(tok.encode("{", add_special_tokens=False))
    assert eos not in allowed[5]
    assert automaton_from_regex("[0-9]+", tok) is automaton_from_regex("[0-9]+", tok)  # cached
    with pytest.raises(ValueError, match="cannot compile"):
        automaton_from_regex("(unclosed", tok)
