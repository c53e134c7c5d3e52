"""End-to-end: the stock `sglang.launch_server`, our plugin, real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import requests

from sglang_llada.server_process import generate
from sglang_llada.testing import reference_llada2 as ref

PROMPT = "The quick brown fox jumps over the lazy dog. " * 2  # 90 bytes: 2 blocks + a partial one


def test_default_server_generates_exactly_max_new_tokens(default_server) -> None:
    out = generate(
        default_server.url,
        {"text": PROMPT, "sampling_params": {"max_new_tokens": 40, "ignore_eos": True}},
    )
    assert len(out["output_ids"]) == 40
    assert out["meta_info"]["completion_tokens"] == 40
    log = default_server.log()
    # One line says the plugin is active, which class and which algorithm.
    assert "sglang-llada plugin active" in log
    assert "sglang_llada.models.llada2.LLaDA2MoeModelLM" in log
    assert "llada2_threshold" in log  # our threshold algorithm is the default
    # Served on our CPU platform, as a diffusion model, with the checkpoint's mask id.
    assert "torch_native" in log
    assert 260 not in out["output_ids"]  # <|mask|> of the toy tokenizer never leaks out


def test_greedy_output_matches_torch_reference(fp32_server, tiny_checkpoint: Path) -> None:
    """Token-for-token: the server's block diffusion decoding equals the reference decoder."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    prompt_ids = tok.encode(PROMPT)
    assert len(prompt_ids) % 32 != 0  # exercises a partial prompt block
    out = generate(
        fp32_server.url,
        {"input_ids": prompt_ids, "sampling_params": {"max_new_tokens": 48, "ignore_eos": True}},
    )
    model = ref.load_reference(tiny_checkpoint)
    expected = ref.generate_reference(
        model, prompt_ids, 48, mask_id=tok.mask_token_id, block_size=32, threshold=0.95
    )
    assert out["output_ids"] == expected


def test_chat_completion_applies_llada2_template(default_server, tiny_checkpoint: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    messages = [{"role": "user", "content": "Say something."}]
    r = requests.post(
        default_server.url + "/v1/chat/completions",
        json={"model": "default", "messages": messages, "max_tokens": 16, "temperature": 0},
        timeout=120,
    )
    r.raise_for_status()
    body = r.json()
    templated = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert templated.endswith("<role>ASSISTANT</role>")
    assert body["usage"]["prompt_tokens"] == len(tok.encode(templated))
    assert body["choices"][0]["message"]["role"] == "assistant"


def test_chat_completion_streams_several_chunks(default_server) -> None:
    r = requests.post(
        default_server.url + "/v1/chat/completions",
        json={
            "model": "default",
            "messages": [{"role": "user", "content": "Count."}],
            "max_tokens": 96,
            "temperature": 0,
            "stream": True,
            "ignore_eos": True,
        },
        stream=True,
        timeout=120,
    )
    r.raise_for_status()
    chunks = []
    for line in r.iter_lines():
        if line.startswith(b"data: ") and line != b"data: [DONE]":
            event = json.loads(line[len(b"data: "):])
            if event["choices"] and event["choices"][0]["delta"].get("content"):
                chunks.append(event["choices"][0]["delta"]["content"])
    assert len(chunks) >= 3  # 96 tokens = 3 committed blocks, one chunk each at least


def test_frontend_dsl_program(default_server) -> None:
    import sglang as sgl

    @sgl.function
    def answer(s, question):
        s += "Q: " + question + "\n"
        s += "A:" + sgl.gen("answer", max_tokens=20, temperature=0)

    backend = sgl.RuntimeEndpoint(default_server.url)
    state = answer.run(question="What is two plus two?", backend=backend)
    assert isinstance(state["answer"], str)
    assert state.get_meta_info("answer")["completion_tokens"] > 0


def test_server_stops_without_orphans(tmp_path_factory, neutral_dir, tiny_checkpoint) -> None:
    import psutil

    from sglang_llada.server_process import launch

    server = launch(tiny_checkpoint, [], neutral_dir, tmp_path_factory.mktemp("logs") / "orphans.log")
    children = psutil.Process(server.proc.pid).children(recursive=True)
    assert children, "the server should have scheduler/detokenizer children"
    server.stop()
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"orphans left: {[p.pid for p in alive]}"


def test_idle_server_does_not_hold_a_core(default_server) -> None:
    """SGLang's scheduler busy-polls its sockets when idle; on CPU the platform turns on its
    IdleSleeper (`sleep_on_idle`), so an idle server leaves the cores to everything else."""
    import time

    import psutil

    info = requests.get(f"{default_server.url}/get_server_info", timeout=30).json()
    assert info["sleep_on_idle"] is True
    generate(default_server.url, {"text": PROMPT, "sampling_params": {"max_new_tokens": 4}})
    time.sleep(2.0)  # the request is done and the scheduler has gone idle
    root = psutil.Process(default_server.proc.pid)
    procs = [root, *root.children(recursive=True)]
    before = {p.pid: sum(p.cpu_times()[:2]) for p in procs}
    time.sleep(3.0)
    used = sum(sum(p.cpu_times()[:2]) - before[p.pid] for p in procs)
    # Busy-polling costs ~2.7 CPU-seconds in 3 s; sleeping in zmq.Poller costs a few hundredths.
    assert used < 0.6, f"idle server used {used:.2f} CPU-seconds in 3 s"
