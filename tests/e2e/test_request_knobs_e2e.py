"""End to end: per-request decoding knobs (`custom_params.dllm`) through a served tiny checkpoint."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

PROMPTS = ["Copy: abc de", "Add: 12+34", "Lower: XY Z"]
MAX_NEW = 40


def _params(knobs: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    params: dict[str, Any] = {"max_new_tokens": MAX_NEW, "temperature": 0, "ignore_eos": True}
    if knobs is not None:
        params["custom_params"] = {"dllm": knobs}
    return params


def test_e2e_request_knobs(fp32_server: Any) -> None:
    import requests

    from sglang_llada.server_process import generate

    url = fp32_server.url

    def run(prompt: str, knobs: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        return generate(url, {"text": prompt, "sampling_params": _params(knobs)}, timeout=300)

    solo = [run(p) for p in PROMPTS]
    fast = run(PROMPTS[0], {"threshold": 0.0})
    # The random toy is never confident: one position per forward by default; threshold 0 commits
    # a whole block per forward (its KV store folded into the next block's first forward: fold_store).
    meta, base = fast["meta_info"], solo[0]["meta_info"]
    blocks = -(-(meta["prompt_tokens"] + MAX_NEW) // 32) - meta["prompt_tokens"] // 32
    assert meta["dllm_forwards"] == blocks < base["dllm_forwards"]
    assert fast["output_ids"] != solo[0]["output_ids"] and len(fast["output_ids"]) == MAX_NEW

    # concurrent: rows with and without knobs share batches; each keeps its own decoding
    jobs = [(p, None) for p in PROMPTS] + [(PROMPTS[0], {"threshold": 0.0}), (PROMPTS[1], {})]
    with ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(lambda job: run(*job), jobs))
    for i in range(len(PROMPTS)):
        assert together[i]["output_ids"] == solo[i]["output_ids"], PROMPTS[i]
    assert together[3]["output_ids"] == fast["output_ids"]
    assert together[4]["output_ids"] == solo[1]["output_ids"]  # an empty dllm object: the defaults

    # refused up front with a 400 naming the knob; the server keeps serving
    for knobs, words in (
        ({"threshold": 1.5}, ["threshold", "[0, 1]", "1.5", "llada2_threshold"]),
        ({"max_edit_steps": 2}, ["max_edit_steps", "not a per-request knob", "llada2_threshold"]),
        ({"sampling": "greedy"}, ["sampling", "server-wide"]),
    ):
        r = requests.post(url + "/generate", json={"text": PROMPTS[0], "sampling_params": _params(knobs)}, timeout=60)
        assert r.status_code == 400, r.text
        assert all(w in r.text for w in words), r.text
    r = requests.post(url + "/generate", json={"text": PROMPTS[0], "sampling_params": {
        "max_new_tokens": 8, "custom_params": {"dllm": "fast"}}}, timeout=60)
    assert r.status_code == 400 and "must be a JSON object" in r.text
    # a batched /generate: every item is checked
    r = requests.post(url + "/generate", json={"text": PROMPTS[:2], "sampling_params": [
        _params({"threshold": 0.5}), _params({"threshold": -1})]}, timeout=60)
    assert r.status_code == 400 and "threshold" in r.text, r.text
    assert run(PROMPTS[2])["output_ids"] == solo[2]["output_ids"]

    # the OpenAI chat endpoint: custom_params in the body (extra_body of the OpenAI client)
    def chat(custom: Optional[dict[str, Any]]) -> requests.Response:
        body: dict[str, Any] = {"messages": [{"role": "user", "content": "Lower: AB"}], "max_tokens": 24,
                                "temperature": 0, "ignore_eos": True,
                                "return_input_ids_in_sglext": True, "return_output_ids_in_sglext": True}
        if custom is not None:
            body["custom_params"] = custom
        return requests.post(url + "/v1/chat/completions", json=body, timeout=300)

    plain, knobbed = chat(None), chat({"dllm": {"threshold": 0.0}})
    assert plain.status_code == 200 and knobbed.status_code == 200, (plain.text, knobbed.text)
    ext = knobbed.json()["sglext"]  # input_ids [prompt], output_ids [[choice 0]]
    out_ids = ext["output_ids"][0]
    assert len(out_ids) == 24
    # the same prompt through /generate with the same knob: the same tokens; without it, others
    again = generate(url, {"input_ids": ext["input_ids"], "sampling_params": {
        "max_new_tokens": 24, "temperature": 0, "ignore_eos": True, "custom_params": {"dllm": {"threshold": 0.0}}}})
    assert out_ids == again["output_ids"]
    assert plain.json()["sglext"]["output_ids"][0] != out_ids
    bad = chat({"dllm": {"threshold": 3}})
    assert bad.status_code == 400 and "threshold" in bad.text and "[0, 1]" in bad.text
    # /v1/completions passes custom_params on too
    r = requests.post(url + "/v1/completions", json={"prompt": PROMPTS[0], "max_tokens": 8,
                                                      "custom_params": {"dllm": {"factor": 2}}}, timeout=60)
    assert r.status_code == 400 and "`factor` is not a per-request knob" in r.text, r.text
    r = requests.post(url + "/v1/completions", json={"prompt": PROMPTS[0], "max_tokens": 8, "temperature": 0,
                                                      "custom_params": {"dllm": {"threshold": 0.0}}}, timeout=300)
    assert r.status_code == 200, r.text
