"""Structured output under diffusion decoding, through the stock server with no flags: `regex` and
`json_schema` on /generate, `response_format` on /v1/chat/completions, OpenAI `tools` with
tool_choice "required" or a named function, `sgl.gen(regex=...)` in the frontend DSL. Every
constrained output is a word of its language; answers the model knows stay right; requests without
a constraint in the same batches are unaffected; what is not supported is a 400. The model is the
JSON toy (the 2.0 toy trained further on the JSON task), so JSON answers can be checked too.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import jsonschema
import pytest
import requests

from sglang_llada.eval import render_prompts
from sglang_llada.server_process import Server, generate
from sglang_llada.testing.server_checks import idle_and_clean, strict_server
from sglang_llada.toy import JSON_TOY_DIR
from sglang_llada.toy.tasks import JSON_SCHEMA, is_correct, split

GREEDY = {"max_new_tokens": 64, "temperature": 0.0}


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory, neutral_dir: Path) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("logs") / "constrained.log"
    yield from strict_server(JSON_TOY_DIR, ["--max-running-requests", "8"], neutral_dir, log)


def _post(server: Server, params: dict, text: str) -> requests.Response:
    return requests.post(server.url + "/generate", json={"text": text, "sampling_params": {**GREEDY, **params}}, timeout=120)


def test_regex_output_is_a_word_and_known_answers_stay_right(toy: Server) -> None:
    examples = [e for e in split("heldout") if e.task in ("add", "sub")][:6]
    prompts = render_prompts(examples)
    for ex, prompt in zip(examples, prompts):
        free = generate(toy.url, {"text": prompt, "sampling_params": GREEDY})["text"]
        fixed = generate(toy.url, {"text": prompt, "sampling_params": {**GREEDY, "regex": "[0-9]+"}})["text"]
        assert re.fullmatch("[0-9]+", fixed), fixed
        assert is_correct(ex, free) and fixed == free.strip(), (ex.answer, free, fixed)
    # A language the model would not answer in: the output still belongs to it, whatever the order
    # the positions were committed in. Both patterns span more than one 32-token block.
    text_prompt = render_prompts([e for e in split("heldout") if e.task == "copy"][:1])[0]
    for pattern in ("[A-Z]{40,50}", "(ab|cd)+x{3}"):
        out = generate(toy.url, {"text": text_prompt, "sampling_params": {**GREEDY, "regex": pattern}})
        assert re.fullmatch(pattern, out["text"]), (pattern, out["text"])


def test_json_schema_output_validates_and_known_answers_stay_right(toy: Server) -> None:
    examples = split("json")[:6]
    schema = json.dumps(JSON_SCHEMA)
    for ex, prompt in zip(examples, render_prompts(examples)):
        free = generate(toy.url, {"text": prompt, "sampling_params": GREEDY})["text"]
        fixed = generate(toy.url, {"text": prompt, "sampling_params": {**GREEDY, "json_schema": schema}})["text"]
        jsonschema.validate(json.loads(fixed), JSON_SCHEMA)
        if is_correct(ex, free):
            assert is_correct(ex, fixed), (ex.answer, free, fixed)


def test_response_format_on_chat_completions(toy: Server) -> None:
    messages = [{"role": "user", "content": split("json")[0].prompt}]
    formats = [
        {"type": "json_schema", "json_schema": {"name": "result", "schema": JSON_SCHEMA}},
        {"type": "json_object"},
    ]
    for fmt in formats:
        r = requests.post(
            toy.url + "/v1/chat/completions",
            json={"model": "toy", "messages": messages, "max_tokens": 64, "temperature": 0, "response_format": fmt},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        doc = json.loads(r.json()["choices"][0]["message"]["content"])
        assert isinstance(doc, dict)
        if fmt["type"] == "json_schema":
            jsonschema.validate(doc, JSON_SCHEMA)


ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "add"}}])
def test_tool_choice_required_or_named_gives_parsed_tool_calls(toy: Server, choice: object, strict: bool) -> None:
    # SGLang's OpenAI layer turns the tools into a structural_tag for the qwen25 parser the plugin
    # picks for LLaDA2's template; the arguments follow the schema when the tool is strict (OpenAI's
    # rule) and are any JSON object otherwise.
    tool = {"type": "function", "function": {**ADD_TOOL["function"], "strict": strict}}
    body = {
        "model": "toy", "messages": [{"role": "user", "content": "Add 12 and 30"}], "max_tokens": 96,
        "temperature": 0, "tools": [tool], "tool_choice": choice,
    }
    r = requests.post(toy.url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    choice0 = r.json()["choices"][0]
    calls = choice0["message"].get("tool_calls")
    assert calls and choice0["finish_reason"] == "tool_calls", choice0
    for call in calls:
        assert call["function"]["name"] == "add"
        arguments = json.loads(call["function"]["arguments"])
        assert isinstance(arguments, dict)
        if strict:
            jsonschema.validate(arguments, ADD_TOOL["function"]["parameters"])


def test_tool_choice_auto_with_strict_tools_is_a_400(toy: Server) -> None:
    tool = {"type": "function", "function": {**ADD_TOOL["function"], "strict": True}}
    body = {"model": "toy", "messages": [{"role": "user", "content": "Add 12 and 30"}], "max_tokens": 32, "tools": [tool]}
    r = requests.post(toy.url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 400 and "tool_choice" in r.text, (r.status_code, r.text)


def test_frontend_dsl_regex(toy: Server) -> None:
    import sglang as sgl

    import sglang_llada.frontend  # noqa: F401  (the LLaDA2 chat template for the frontend)

    ex = [e for e in split("heldout") if e.task == "add"][0]

    @sgl.function
    def ask(s):  # type: ignore[no-untyped-def]
        s += sgl.user(ex.prompt)
        s += sgl.assistant(sgl.gen("answer", max_tokens=16, temperature=0, regex="[0-9]{4}"))

    state = ask.run(backend=sgl.RuntimeEndpoint(toy.url))
    assert re.fullmatch("[0-9]{4}", state["answer"]), state["answer"]
    assert state["answer"] == ex.answer


def test_constrained_and_free_requests_share_batches(toy: Server) -> None:
    examples = split("heldout")[:8]
    prompts = render_prompts(examples)
    alone = [generate(toy.url, {"text": p, "sampling_params": {**GREEDY, "max_new_tokens": 80}})["text"] for p in prompts]
    with ThreadPoolExecutor(16) as pool:
        free = [pool.submit(generate, toy.url, {"text": p, "sampling_params": {**GREEDY, "max_new_tokens": 80}}) for p in prompts]
        fixed = [pool.submit(generate, toy.url, {"text": p, "sampling_params": {**GREEDY, "regex": "[a-z]{5}"}}) for p in prompts]
        assert [f.result()["text"] for f in free] == alone
        assert all(re.fullmatch("[a-z]{5}", f.result()["text"]) for f in fixed)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"ebnf": 'root ::= "a"'}, "`ebnf` is not supported"),
        ({"structural_tag": "{}"}, "only SGLang's tool-call form"),
        ({"regex": "a", "json_schema": "{}"}, "set only one of `regex`, `json_schema`"),
        ({"regex": "(unclosed"}, "cannot compile the regex"),
        ({"json_schema": "{not json"}, "json_schema is not valid JSON"),
        ({"regex": "[0-9]{40}", "max_new_tokens": 8}, "max_new_tokens=8 is too few"),
    ],
)
def test_refusals_are_400s_that_say_why(toy: Server, params: dict, message: str) -> None:
    r = _post(toy, params, "JSON: 123+456")
    assert r.status_code == 400 and message in r.text, (r.status_code, r.text)


def test_server_is_idle_and_clean_after_constrained_requests(toy: Server) -> None:
    idle_and_clean(toy)
