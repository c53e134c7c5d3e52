"""A request's constraint: what `regex` / `json_schema` become on a diffusion server.

SGLang hands `regex` / `json_schema` to its grammar backends, which advance one token at a time and
never finish under block decoding. So the tokenizer process (tokenizer/request_checks.py) checks the
constraint, turns it into one regex (a JSON schema through outlines' schema-to-regex, the way SGLang's
outlines backend does), moves it into `custom_params` under `CONSTRAINT_KEY` and clears the SGLang
fields; the scheduler (scheduler/batch_policy.py) compiles the regex into a token automaton (cached)
and pins each block's `RowConstraint` on the batch for the algorithm.
"""

from __future__ import annotations

import json
from typing import Any, Optional

CONSTRAINT_KEY = "dllm_constraint"  # custom_params[CONSTRAINT_KEY] = {"regex": ...}

# What outlines (and SGLang's outlines backend, by default) allows between JSON tokens: at most
# one space, so a schema's language stays small and its outputs compact.
JSON_WHITESPACE = r"[ ]?"


def regex_from_json_schema(schema: str | dict[str, Any]) -> str:
    """The regex of the JSON documents `schema` accepts (ValueError naming the problem)."""
    from outlines_core.fsm.json_schema import build_regex_from_schema

    text = schema if isinstance(schema, str) else json.dumps(schema)
    try:
        json.loads(text)
    except ValueError as e:
        raise ValueError(f"json_schema is not valid JSON: {e}") from e
    try:
        return build_regex_from_schema(text, JSON_WHITESPACE)
    except Exception as e:  # noqa: BLE001 - outlines raises several types; the message is what helps
        raise ValueError(f"cannot compile the JSON schema: {e}") from e


# Characters that mean something in a regex; any other character stands for itself.
_REGEX_SPECIAL = set(".^$*+?{}[]\\|()")
_REGEX_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
# Between two tool calls, as LLaDA2's chat template writes them.
TOOL_CALL_SEPARATOR = "\n"


def literal_regex(text: str) -> str:
    """The regex that matches exactly `text` (in the syntax interegular parses)."""
    return "".join(_REGEX_ESCAPES.get(c) or ("\\" + c if c in _REGEX_SPECIAL else c) for c in text)


def regex_from_structural_tag(tag: str | dict[str, Any]) -> str:
    """The regex of a structural tag as SGLang's OpenAI layer writes it for `tool_choice` "required"
    or a named function with a tool-call parser (FunctionCallParser.get_legacy_structural_tag):
    `{"structures": [{"begin", "schema", "end"}], "triggers", "at_least_one": true}`, i.e. one or
    more calls, each `begin` + JSON arguments + `end`, and no free text. Arguments follow the
    structure's schema; an empty schema (a tool without `strict`, as OpenAI defines it) means any
    JSON object. ValueError (a 400) for every other structural tag."""
    try:
        doc = json.loads(tag) if isinstance(tag, str) else tag
    except ValueError as e:
        raise ValueError(f"structural_tag is not valid JSON: {e}") from e
    structures = doc.get("structures") if isinstance(doc, dict) else None
    if not isinstance(structures, list) or not structures:
        raise ValueError(
            "structural_tag: only SGLang's tool-call form ({\"structures\": [{\"begin\", \"schema\", "
            "\"end\"}], \"triggers\", \"at_least_one\": true}, written for tool_choice \"required\" or a "
            "named function) is supported under diffusion decoding; use `regex` or `json_schema`"
        )
    if not doc.get("at_least_one"):
        raise ValueError(
            "structural_tag without at_least_one (free text around tool calls: tool_choice \"auto\" with "
            "strict tools) is not supported under diffusion decoding; use tool_choice \"required\" or a "
            "named function, or drop `strict`"
        )
    calls = []
    for s in structures:
        if not isinstance(s, dict) or not isinstance(s.get("begin"), str) or not isinstance(s.get("end"), str):
            raise ValueError("structural_tag: each structure needs string `begin` and `end`")
        schema = s.get("schema") or {"type": "object"}
        # JSON_WHITESPACE: LLaDA2's template writes `"arguments": {` where the begin ends at the colon.
        args = JSON_WHITESPACE + "(" + regex_from_json_schema(schema) + ")"
        calls.append(literal_regex(s["begin"]) + args + literal_regex(s["end"]))
    one = "(" + "|".join(f"({c})" for c in calls) + ")"
    return one + "(" + literal_regex(TOOL_CALL_SEPARATOR) + one + ")*"


def regex_error(regex: str, e: Exception) -> ValueError:
    """The 400's message for a regex the parser rejects (some parse errors carry no text)."""
    return ValueError(f"cannot compile the regex {regex!r}: {str(e) or type(e).__name__}")


def check_regex(regex: str) -> None:
    """ValueError when `regex` is not a pattern the automaton builder can compile."""
    import interegular

    try:
        interegular.parse_pattern(regex)
    except Exception as e:  # noqa: BLE001 - interegular's parse errors have several types
        raise regex_error(regex, e) from e


def constraint_regex(custom_params: Any) -> Optional[str]:
    """The regex a request's custom_params carry under CONSTRAINT_KEY, or None."""
    if not isinstance(custom_params, dict):
        return None
    entry = custom_params.get(CONSTRAINT_KEY)
    if isinstance(entry, dict) and isinstance(entry.get("regex"), str):
        return entry["regex"]
    return None
