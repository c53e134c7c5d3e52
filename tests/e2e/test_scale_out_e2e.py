"""Scaling out, as README's "Scaling out" section runs it: two stock servers with the plugin behind
SGLang's gateway (`smg launch --worker-urls ... --policy cache_aware`), and one server with
`--dp-size 2`. Real servers on the shipped toy (CPU)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pytest
import requests

from sglang_llada.eval import render_prompts
from sglang_llada.server_process import Server, launch, launch_gateway
from sglang_llada.toy import TRAINED_TOY_DIR
from sglang_llada.toy.tasks import heldout_split, is_correct

MODEL = str(TRAINED_TOY_DIR)  # the `model` field the gateway routes by (the served model's path)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, neutral_dir: Path) -> Iterator[tuple[Server, list[Server]]]:
    logs = tmp_path_factory.mktemp("scale_out")
    workers: list[Server] = []
    gw = None
    try:
        for i in range(2):
            workers.append(launch(TRAINED_TOY_DIR, ["--max-running-requests", "8"], neutral_dir, logs / f"worker{i}.log"))
        gw = launch_gateway([w.url for w in workers], neutral_dir, logs / "gateway.log")
        yield gw, workers
    finally:
        if gw is not None:
            gw.stop()
        for w in workers:
            w.stop()


def _chat(url: str, messages: list[dict], max_tokens: int = 96) -> dict:
    r = requests.post(url + "/v1/chat/completions", json={"model": MODEL, "messages": messages, "max_tokens": max_tokens,
                                                           "temperature": 0}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def _requests_served(worker: Server) -> int:
    """Requests this worker finished (SGLang's access log: one line per HTTP request)."""
    return len(re.findall(r'"POST /(v1/chat/completions|generate) HTTP/1.1" 200', worker.log()))


def test_gateway_answers_held_out_chats_on_both_workers(gateway: tuple[Server, list[Server]]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    gw, workers = gateway
    examples = [e for e in heldout_split() if e.task in ("upper", "add", "sub", "copy")][::6][:12]
    before = [_requests_served(w) for w in workers]
    with ThreadPoolExecutor(6) as pool:
        outs = list(pool.map(lambda e: _chat(gw.url, [{"role": "user", "content": e.prompt}]), examples))
    for ex, out in zip(examples, outs):
        assert is_correct(ex, out["choices"][0]["message"]["content"]), (ex.prompt, out)
    served = [_requests_served(w) - b for w, b in zip(workers, before)]
    assert sum(served) == len(examples) and min(served) > 0, served  # both workers took requests


def test_follow_up_turn_hits_the_radix_cache_of_the_first_turns_worker(gateway: tuple[Server, list[Server]]) -> None:
    """cache_aware routing sends a follow-up turn to the worker that holds its prefix: the turn's
    prompt tokens up to the first turn's answer come from that worker's radix cache."""
    gw, workers = gateway
    first, second = heldout_split()[-1], heldout_split()[-2]  # not sent by any other test
    before = [_requests_served(w) for w in workers]
    out1 = requests.post(gw.url + "/generate", json={"model": MODEL, "text": render_prompts([first])[0],
                                                      "sampling_params": {"max_new_tokens": 96}}, timeout=300).json()
    assert is_correct(first, out1["text"])
    served1 = [_requests_served(w) for w in workers]
    turn2 = [{"role": "user", "content": first.prompt}, {"role": "assistant", "content": first.answer},
             {"role": "user", "content": second.prompt}]
    from sglang_llada.toy.tokenizer import load_tokenizer

    text2 = load_tokenizer().apply_chat_template(turn2, add_generation_prompt=True, tokenize=False)
    out2 = requests.post(gw.url + "/generate", json={"model": MODEL, "text": text2,
                                                      "sampling_params": {"max_new_tokens": 96}}, timeout=300).json()
    served2 = [_requests_served(w) for w in workers]
    took1 = [a - b for a, b in zip(served1, before)]
    took2 = [a - b for a, b in zip(served2, served1)]
    assert sorted(took1) == [0, 1] and took2 == took1, (took1, took2)  # the same worker served both turns
    # the first turn's prompt (its full 32-token blocks at least) came from that worker's radix cache
    assert out2["meta_info"]["cached_tokens"] >= out1["meta_info"]["prompt_tokens"] // 32 * 32, out2["meta_info"]


def test_dp_size_2_server_answers(tmp_path: Path, neutral_dir: Path) -> None:
    """One server, two data-parallel scheduler ranks behind SGLang's own load balancer."""
    from concurrent.futures import ThreadPoolExecutor

    server = launch(TRAINED_TOY_DIR, ["--dp-size", "2", "--max-running-requests", "8"], neutral_dir, tmp_path / "dp.log")
    try:
        examples = heldout_split()[100:108]
        with ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(lambda e: _chat(server.url, [{"role": "user", "content": e.prompt}]), examples))
        for ex, out in zip(examples, outs):
            assert is_correct(ex, out["choices"][0]["message"]["content"]), (ex.prompt, out)
        log = server.log()
        assert "sglang-llada plugin active" in log
        assert "DP0" in log and "DP1" in log  # both data-parallel ranks started
    finally:
        server.stop()
