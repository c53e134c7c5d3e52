"""Diffusion-aware scheduling through a real server (CPU): whole-prompt prefill, literal mask tokens,
radix reuse, per-block streaming, stop strings, aborts, and no KV leak after many mixed requests.

One server for the module: the shipped trained toy, fp32, `--max-running-requests 4` (so that
requests queue and queued ones can be aborted), `--chunked-prefill-size 512` (so that a long prompt
continues its prefill in a second round), with SGLang's strict idle memory check on: a KV or
request-slot leak raises in the scheduler when it goes idle, and the server dies. `--enable-metrics`
exposes SGLang's count of aborted requests (how a client disconnect is seen: SGLang aborts the
request two seconds after its client left).
"""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from sglang_llada.eval import render_prompts
from sglang_llada.server_process import Server, generate
from sglang_llada.testing import reference_llada2 as ref
from sglang_llada.testing.server_checks import idle_and_clean, strict_server
from sglang_llada.toy import TRAINED_TOY_DIR
from sglang_llada.toy.tasks import heldout_split

BLOCK = 32
MAX_RUNNING = 4
CHUNK = 512


@pytest.fixture(scope="module")
def server(tmp_path_factory, neutral_dir: Path) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("logs") / "scheduling.log"
    args = ["--dtype", "float32", "--max-running-requests", str(MAX_RUNNING), "--chunked-prefill-size", str(CHUNK),
            "--enable-metrics"]
    yield from strict_server(TRAINED_TOY_DIR, args, neutral_dir, log)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TRAINED_TOY_DIR)


@pytest.fixture(scope="module")
def reference():
    return ref.load_reference(TRAINED_TOY_DIR)


def _aborted_total(srv: Server) -> float:
    text = requests.get(srv.url + "/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("sglang:num_aborted_requests_total"))


def _stream(url: str, payload: dict, on_chunk=None, timeout: Any = 300) -> list[dict]:
    """POST a streaming /generate; the parsed chunks. `on_chunk(i, chunk)` returning False
    closes the connection there (a client disconnect)."""
    chunks: list[dict] = []
    with requests.post(url + "/generate", json={**payload, "stream": True}, stream=True, timeout=timeout) as r:
        assert r.status_code == 200, r.text
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunks.append(json.loads(line[6:]))
            if on_chunk is not None and on_chunk(len(chunks) - 1, chunks[-1]) is False:
                break
    return chunks


# ------------------------------------------------------------------------------------------
# prefill
# ------------------------------------------------------------------------------------------


def test_long_prompt_prefilled_in_one_forward_equals_reference(server: Server, tokenizer, reference) -> None:
    """A 1,000-token prompt: its 31 full blocks (992 tokens) in two forwards, 512 + 480 tokens under
    `--chunked-prefill-size 512` (one forward under the default 4,096; SGLang 0.5.23 takes 31), the
    partial block denoised with the first masks; the greedy tokens equal the pure-torch reference
    decoder. Sent again, the 992 prompt tokens of the full blocks come from the radix cache."""
    rng = random.Random(0)
    ids = [rng.randrange(0, 256) for _ in range(1000)]
    payload = {"input_ids": ids, "sampling_params": {"max_new_tokens": 40, "ignore_eos": True}}
    out = generate(server.url, payload)
    meta = out["meta_info"]
    assert meta["cached_tokens"] == 0
    assert meta["dllm_prefill_forwards"] == -(-(1000 // BLOCK * BLOCK) // CHUNK) == 2
    expected = ref.generate_reference(reference, ids, 40, mask_id=tokenizer.mask_token_id)
    assert out["output_ids"] == expected

    again = generate(server.url, payload)
    assert again["meta_info"]["cached_tokens"] == 1000 // BLOCK * BLOCK
    assert again["meta_info"]["dllm_prefill_forwards"] == 0
    assert again["output_ids"] == expected


def test_literal_mask_tokens_in_prompt_are_not_denoised(server: Server, tokenizer, reference) -> None:
    """`<|mask|>` typed by a user, in full prompt blocks and in the partial block denoised with the
    first masks, stays a prompt token: the output equals the reference decoder's, which knows prompt
    positions by length, and the text prompt gives the same as its ids."""
    mask = tokenizer.mask_token
    text = f"a{mask}b " * 10 + f"tail {mask} end"
    ids = tokenizer.encode(text)
    positions = [i for i, t in enumerate(ids) if t == tokenizer.mask_token_id]
    assert len(positions) == 11 and positions[-1] >= len(ids) // BLOCK * BLOCK  # one in the partial block
    params = {"max_new_tokens": 24, "ignore_eos": True}
    by_ids = generate(server.url, {"input_ids": ids, "sampling_params": params})
    by_text = generate(server.url, {"text": text, "sampling_params": params})
    expected = ref.generate_reference(reference, ids, 24, mask_id=tokenizer.mask_token_id)
    assert by_ids["output_ids"] == expected
    assert by_text["output_ids"] == expected
    assert by_text["meta_info"]["prompt_tokens"] == len(ids)


# ------------------------------------------------------------------------------------------
# streaming, EOS, stop strings, max_new_tokens
# ------------------------------------------------------------------------------------------


def _answer(task: str):
    ex = next(e for e in heldout_split() if e.task == task)
    return ex, render_prompts([ex])[0]


def test_streaming_sends_one_chunk_per_committed_block(server: Server, tokenizer) -> None:
    """Each chunk adds one committed block (the first one: what is left of the partial prompt block),
    text once sent never changes, and the stream ends at the first EOS with nothing after it."""
    ex, prompt = _answer("copy")  # a 72-character answer: several blocks
    chunks = _stream(server.url, {"text": prompt, "sampling_params": {"max_new_tokens": 200}})
    final = generate(server.url, {"text": prompt, "sampling_params": {"max_new_tokens": 200}})
    n_prompt = final["meta_info"]["prompt_tokens"]
    texts = [c["text"] for c in chunks]
    counts = [c["meta_info"]["completion_tokens"] for c in chunks]
    assert texts[-1] == final["text"] and counts[-1] == final["meta_info"]["completion_tokens"]
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))
    sizes = [b - a for a, b in zip([0, *counts], counts)]
    first = BLOCK - n_prompt % BLOCK
    assert len(chunks) >= 3
    assert sizes[0] == first and all(s == BLOCK for s in sizes[1:-1]) and 0 < sizes[-1] <= BLOCK
    # The answer ends with EOS inside its last block: nothing after it, the EOS not in the text.
    assert final["meta_info"]["finish_reason"]["type"] == "stop"
    assert final["text"].strip() == ex.answer
    assert final["output_ids"].count(tokenizer.eos_token_id) <= 1
    if tokenizer.eos_token_id in final["output_ids"]:
        assert final["output_ids"][-1] == tokenizer.eos_token_id


def test_stop_strings_and_max_new_tokens_are_exact(server: Server) -> None:
    ex, prompt = _answer("upper")
    whole = generate(server.url, {"text": prompt, "sampling_params": {"max_new_tokens": 200}})["text"]
    assert whole.strip() == ex.answer
    cut = whole.index(whole.strip()[20])  # a character inside the second block of the answer
    stop = whole[cut : cut + 2]
    first = whole.index(stop)
    out = generate(server.url, {"text": prompt, "sampling_params": {"max_new_tokens": 200, "stop": [stop]}})
    assert out["text"] == whole[:first]
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop}
    streamed = _stream(server.url, {"text": prompt, "sampling_params": {"max_new_tokens": 200, "stop": [stop]}})
    assert streamed[-1]["text"] == whole[:first]

    for n in (1, 10, 33):
        out = generate(server.url, {"text": prompt, "sampling_params": {"max_new_tokens": n}})
        assert out["meta_info"]["completion_tokens"] == n
        assert out["meta_info"]["finish_reason"] == {"type": "length", "length": n}


# ------------------------------------------------------------------------------------------
# aborts and leaks
# ------------------------------------------------------------------------------------------

# Long enough to be aborted while it runs: threshold 1 commits about one token per forward (the
# default toy fills a block of its rambling in one forward at 0.95 and finished 3000 tokens first).
LONG = {"max_new_tokens": 3000, "ignore_eos": True, "custom_params": {"dllm": {"threshold": 1.0}}}


def test_aborting_running_and_queued_requests_frees_everything(server: Server) -> None:
    """MAX_RUNNING long requests run, two more queue. One running and one queued request are aborted
    by rid (/abort_request); one running and one queued client disconnect (the running one closes
    its stream, the queued one gives up waiting); the last two running ones are aborted by rid too.
    Every request aborted by rid ends with finish_reason abort, SGLang counts all six aborts (the
    two disconnects included), the server goes idle without a leak, and a request sent afterwards
    equals the same request sent before."""
    _, prompt = _answer("lower")
    probe = {"text": prompt, "sampling_params": {"max_new_tokens": 100}}
    before = generate(server.url, probe)["output_ids"]
    aborted_before = _aborted_total(server)

    results: dict[str, list[dict]] = {}
    started = {f"run{i}": threading.Event() for i in range(MAX_RUNNING)}
    leave = threading.Event()

    def client(rid: str) -> None:
        def on_chunk(i: int, chunk: dict) -> bool:
            if rid in started:
                started[rid].set()
            return not (rid == "run1" and leave.is_set())

        payload = {"text": prompt, "rid": rid, "sampling_params": LONG}
        # the queued client that leaves: no chunk comes while it waits, so it stops reading
        timeout: Any = (10, 3.0) if rid == "queued1" else 300
        try:
            results[rid] = _stream(server.url, payload, on_chunk=on_chunk, timeout=timeout)
        except requests.RequestException as exc:
            results[rid] = [{"error": repr(exc)}]

    threads = [threading.Thread(target=client, args=(rid,)) for rid in started]
    for t in threads:
        t.start()
    for ev in started.values():
        assert ev.wait(120), "running requests did not start"
    queued = [threading.Thread(target=client, args=(rid,)) for rid in ("queued0", "queued1")]
    for t in queued:
        t.start()
    queued[1].join(60)  # queued1's client gives up after 3 s without a chunk
    assert "error" in results["queued1"][0], results["queued1"][0]
    time.sleep(3.0)  # SGLang aborts a disconnected request 2 s after its client left
    abort = lambda rid: requests.post(server.url + "/abort_request", json={"rid": rid}, timeout=30)  # noqa: E731
    assert abort("queued0").status_code == 200
    assert abort("run0").status_code == 200
    leave.set()  # run1's client closes its stream at its next chunk
    time.sleep(4.0)  # SGLang aborts a disconnected request 2 s after its client left
    for rid in ("run2", "run3"):
        assert abort(rid).status_code == 200
    for t in threads + queued:
        t.join(120)
        assert not t.is_alive()
    for rid in ("queued0", "run0", "run2", "run3"):
        last = results[rid][-1]
        assert last["meta_info"]["finish_reason"]["type"] == "abort", (rid, last)
        assert last["meta_info"]["completion_tokens"] < LONG["max_new_tokens"]
    idle_and_clean(server)
    assert _aborted_total(server) - aborted_before == 6
    assert generate(server.url, probe)["output_ids"] == before


def test_200_mixed_requests_leave_no_leak(server: Server) -> None:
    """200 requests, 8 at a time: held-out tasks of every kind with and without stop strings and
    streaming, short max_new_tokens, client timeouts (disconnects) and /abort_request by rid.
    Afterwards the scheduler is idle, its strict leak check silent, and answers are unchanged."""
    examples = heldout_split()
    prompts = render_prompts(examples)
    rng = random.Random(1)
    greedy: dict[int, str] = {}
    kinds = ["plain", "stream", "stop", "short", "abort", "disconnect", "long_prompt"]

    def one(i: int) -> tuple[str, Any]:
        kind = kinds[i % len(kinds)]
        j = rng.randrange(len(prompts)) if kind != "plain" else i % 40
        text = prompts[j]
        params: dict[str, Any] = {"max_new_tokens": 120}
        if kind == "plain":
            out = generate(server.url, {"text": text, "sampling_params": params}, timeout=300)
            return kind, (j, out["text"])
        if kind == "stream":
            return kind, _stream(server.url, {"text": text, "sampling_params": params})[-1]["text"]
        if kind == "stop":
            params["stop"] = [examples[j].answer[5:7]]
            return kind, generate(server.url, {"text": text, "sampling_params": params}, timeout=300)["text"]
        if kind == "short":
            params["max_new_tokens"] = rng.choice([1, 5, 31, 33])
            return kind, generate(server.url, {"text": text, "sampling_params": params}, timeout=300)
        if kind == "long_prompt":
            ids = [rng.randrange(0, 256) for _ in range(rng.randrange(200, 700))]
            return kind, generate(server.url, {"input_ids": ids, "sampling_params": {"max_new_tokens": 8}}, timeout=300)
        rid = f"mixed-{i}"
        if kind == "abort":
            timer = threading.Timer(0.3, lambda: requests.post(server.url + "/abort_request", json={"rid": rid}, timeout=30))
            timer.start()
            out = generate(server.url, {"text": text, "rid": rid, "sampling_params": LONG}, timeout=300)
            timer.join()
            return kind, out["meta_info"]["finish_reason"]["type"]
        try:  # disconnect: the client gives up after 0.5 s
            requests.post(server.url + "/generate", json={"text": text, "rid": rid, "sampling_params": LONG}, timeout=0.5)
        except requests.Timeout:
            return kind, "timeout"
        return kind, "finished"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(200)))
    for kind, value in results:
        if kind == "plain":
            j, text = value
            greedy.setdefault(j, text)
            assert greedy[j] == text  # the same prompt, the same answer, however batched
        elif kind == "abort":
            assert value == "abort"
        elif kind == "short":
            n = value["meta_info"]["completion_tokens"]
            assert value["meta_info"]["finish_reason"]["type"] in ("length", "stop") and n >= 1
    idle_and_clean(server)
    for j, text in list(greedy.items())[:4]:
        assert generate(server.url, {"text": prompts[j], "sampling_params": {"max_new_tokens": 120}})["text"] == text
