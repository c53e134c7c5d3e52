"""Small token automata for tests: a vocabulary whose tokens are single characters, then an end token."""

from __future__ import annotations

import interegular

from sglang_llada.constrained.automaton import TokenAutomaton

CHARS = "abcd{}"
EOS = len(CHARS)  # token ids: one character each (CHARS order), then the end token


def char_automaton(regex: str) -> TokenAutomaton:
    """The token automaton of `regex` over CHARS (ids = CHARS order) with end token EOS."""
    fsm = interegular.parse_pattern(regex).to_fsm()
    symbol = {c: fsm.alphabet[c] for c in CHARS}
    transitions: dict[int, dict[int, int]] = {
        int(s): {i: int(row[symbol[c]]) for i, c in enumerate(CHARS) if symbol[c] in row} for s, row in fsm.map.items()
    }
    return TokenAutomaton(transitions, int(fsm.initial), frozenset(int(f) for f in fsm.finals), frozenset({EOS}))
