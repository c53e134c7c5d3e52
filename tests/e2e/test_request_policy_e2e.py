"""Sampling, seeds, logprobs and refused requests through the stock server (CPU, fp32 tiny toy,
the plugin's default algorithm `llada2_threshold`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from sglang_llada.server_process import Server, generate
from sglang_llada.testing import reference_llada2 as ref

PROMPT = "<role>HUMAN</role>Lower: AB CD<|role_end|><role>ASSISTANT</role>"


def _gen(server: Server, **params) -> dict:
    extra = {k: params.pop(k) for k in list(params) if k in ("return_logprob", "logprob_start_len", "top_logprobs_num")}
    return generate(server.url, {"text": PROMPT, "sampling_params": {"max_new_tokens": 40, "ignore_eos": True, **params}, **extra})


def test_output_logprobs_are_the_commit_probabilities(fp32_server: Server, tiny_checkpoint: Path) -> None:
    from transformers import AutoTokenizer

    out = _gen(fp32_server, return_logprob=True)
    entries = out["meta_info"]["output_token_logprobs"]  # [(logprob, token id, text)]
    assert [e[1] for e in entries] == out["output_ids"] and len(entries) == 40
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    expected = ref.generate_reference_with_stats(
        ref.load_reference(tiny_checkpoint), tok.encode(PROMPT), 40, mask_id=tok.mask_token_id
    )
    assert out["output_ids"] == expected.tokens
    assert [e[0] for e in entries] == pytest.approx(expected.logprobs, abs=1e-4)
    assert out["meta_info"]["input_token_logprobs"] in (None, [])


def test_chat_logprobs(fp32_server: Server) -> None:
    r = requests.post(
        fp32_server.url + "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Lower: AB"}], "max_tokens": 8, "logprobs": True},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert len(content) == r.json()["usage"]["completion_tokens"]
    assert all(c["logprob"] <= 0.0 for c in content)


def test_greedy_by_default_and_seeded_sampling_repeats(fp32_server: Server) -> None:
    greedy = _gen(fp32_server, temperature=0)["output_ids"]
    assert _gen(fp32_server)["output_ids"] == greedy  # no temperature given: greedy
    a = _gen(fp32_server, temperature=1.0, sampling_seed=123)["output_ids"]
    assert _gen(fp32_server, temperature=1.0, sampling_seed=123)["output_ids"] == a
    assert a != greedy  # a near-uniform toy: sampling leaves the argmax path
    assert _gen(fp32_server, temperature=1.0, sampling_seed=124)["output_ids"] != a
    # top_k = 1 is greedy whatever the temperature
    assert _gen(fp32_server, temperature=1.0, top_k=1, sampling_seed=5)["output_ids"] == greedy


@pytest.mark.parametrize(
    "payload, word",
    [
        ({"sampling_params": {"ebnf": 'root ::= "a"'}}, "ebnf"),
        ({"return_logprob": True, "logprob_start_len": 0}, "prompt logprobs"),
        ({"return_logprob": True, "top_logprobs_num": 2}, "top_logprobs_num"),
        ({"return_logprob": True, "token_ids_logprob": [5, 6]}, "token_ids_logprob"),
        ({"return_sampling_mask": True}, "return_sampling_mask"),
        ({"return_routed_experts": True}, "return_routed_experts"),
        ({"return_indexer_topk": True}, "return_indexer_topk"),
    ],
)
def test_unservable_requests_get_a_400_and_the_server_keeps_serving(fp32_server: Server, payload: dict, word: str) -> None:
    body = {"text": PROMPT, **payload}
    body["sampling_params"] = {"max_new_tokens": 8, **payload.get("sampling_params", {})}
    r = requests.post(fp32_server.url + "/generate", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert word in r.text and "diffusion" in r.text
    assert len(_gen(fp32_server, temperature=0)["output_ids"]) == 40


@pytest.mark.parametrize(
    "constraint, words",
    [({"regex": "(unclosed"}, ("cannot compile the regex", "(unclosed")), ({"json_schema": '{"type": '}, ("json_schema is not valid JSON",))],
)
def test_malformed_constraints_get_a_400_that_names_them(fp32_server: Server, constraint: dict, words: tuple) -> None:
    # regex and json_schema are served (docs/structured-output.md); a malformed one is the user's to fix
    body = {"text": PROMPT, "sampling_params": {"max_new_tokens": 8, **constraint}}
    r = requests.post(fp32_server.url + "/generate", json=body, timeout=60)
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert all(w in message for w in words), message
    assert not message.endswith(": "), message  # the parser's reason is in the message
    assert len(_gen(fp32_server, temperature=0)["output_ids"]) == 40


def test_chat_top_logprobs_is_a_400(fp32_server: Server) -> None:
    r = requests.post(
        fp32_server.url + "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "logprobs": True, "top_logprobs": 2},
        timeout=60,
    )
    assert r.status_code == 400 and "top_logprobs_num" in r.text
