"""Token automata for `regex` and `json_schema` constraints, built by outlines (SGLang's own
grammar backend for regular constraints).

SGLang 0.5.23's outlines backend (`sglang/srt/constrained/outlines_backend.py`) compiles a regex,
or a JSON schema turned into a regex by `build_regex_from_schema`, into an outlines `RegexGuide`
whose index maps every state to its allowed token ids and next states -- exactly the token-level
automaton the block constraint (`automaton.py`) walks both ways. The index lists the end token as
a self-loop of accepting states; here it is taken out and replaced by the automaton's own end
semantics (EOS from an accepting state, then only EOS).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sglang_llada.constrained.automaton import TokenAutomaton
from sglang_llada.constrained.request import regex_error, regex_from_json_schema


def automaton_from_regex(regex: str, tokenizer: Any) -> TokenAutomaton:
    """The token automaton of `regex` over `tokenizer`'s vocabulary (a Hugging Face tokenizer).
    Raises ValueError with the parser's message on a pattern outlines cannot compile."""
    return _compiled(regex, _TokenizerKey(tokenizer))


def automaton_from_json_schema(schema: str | dict[str, Any], tokenizer: Any) -> TokenAutomaton:
    """The token automaton of the JSON documents `schema` accepts (outlines' schema-to-regex)."""
    return automaton_from_regex(regex_from_json_schema(schema), tokenizer)


class _TokenizerKey:
    """Hashes a tokenizer by identity, so compiled automata are cached per (pattern, tokenizer)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __hash__(self) -> int:
        return id(self.tokenizer)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _TokenizerKey) and other.tokenizer is self.tokenizer


@lru_cache(maxsize=64)
def _compiled(regex: str, key: _TokenizerKey) -> TokenAutomaton:
    from outlines.fsm.guide import RegexGuide
    from outlines.models.transformers import TransformerTokenizer

    tokenizer = key.tokenizer
    try:
        guide = RegexGuide.from_regex(regex, TransformerTokenizer(tokenizer))
    except Exception as e:  # noqa: BLE001 - interegular / outlines errors of several types
        raise regex_error(regex, e) from e
    index = guide.states_to_token_maps
    eos = frozenset({int(tokenizer.eos_token_id)})
    table = index.get_transitions()
    states = set(table) | {n for row in table.values() for n in row.values()}
    transitions = {s: {t: n for t, n in row.items() if t not in eos} for s, row in table.items()}
    finals = frozenset(s for s in states if index.is_final_state(s))
    return TokenAutomaton(transitions, index.get_initial_state(), finals, eos)
