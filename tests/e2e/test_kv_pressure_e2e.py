"""A KV pool far smaller than the requests in flight (CPU, real servers): requests wait for memory
instead of killing the scheduler, answers equal those given alone, aborts under pressure free
everything, and the pool is back to idle with SGLang's strict leak check silent.

SGLang 0.5.23's dLLM scheduler dies here with "Prefill out of memory", for our algorithm and its
own `LowConfidence` alike; `sglang_llada/scheduler/admission.py` says why and what the plugin does.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from sglang_llada.server_process import Server, generate
from sglang_llada.testing.server_checks import idle_and_clean, strict_server
from sglang_llada.toy import TRAINED_TOY_DIR

POOL = 1536  # KV tokens: two of the requests below at a time, at most
MAX_NEW = 96


@pytest.fixture(scope="module", params=["ours", "in-tree LowConfidence"])
def server(request, tmp_path_factory, neutral_dir: Path) -> Iterator[Server]:
    extra = ["--dllm-algorithm", "LowConfidence"] if request.param != "ours" else []
    log = tmp_path_factory.mktemp("logs") / "kv_pressure.log"
    args = ["--dtype", "float32", "--max-total-tokens", str(POOL), *extra]
    yield from strict_server(TRAINED_TOY_DIR, args, neutral_dir, log)


def _one(url: str, ids: list[int], rid: str | None = None, max_new: int = MAX_NEW) -> dict[str, Any]:
    payload: dict[str, Any] = {"input_ids": ids, "sampling_params": {"max_new_tokens": max_new, "ignore_eos": True}}
    if rid is not None:
        payload["rid"] = rid
    return generate(url, payload, timeout=600)


def test_requests_wait_for_memory_and_answer_as_alone(server: Server) -> None:
    rng = random.Random(0)
    prompts = [[rng.randrange(0, 256) for _ in range(rng.randrange(300, 600))] for _ in range(8)]
    demand = sum(len(p) + MAX_NEW for p in prompts)
    assert demand > 2.5 * POOL  # the pool holds at most two of them at a time
    alone = [_one(server.url, p)["output_ids"] for p in prompts[:3]]

    # 8 at once, plus two longer ones aborted while they wait for memory (or run): the aborts are
    # sent from 0.3 s on, every 0.1 s until both answered (an abort that arrives before its request
    # does nothing, and 640 tokens take longer than the first aborts)
    aborted = [f"pressure-abort-{i}" for i in range(2)]
    answered = threading.Event()

    def abort_until_answered() -> None:
        answered.wait(0.3)
        while not answered.is_set():
            for r in aborted:
                requests.post(server.url + "/abort_request", json={"rid": r}, timeout=30)
            answered.wait(0.1)

    aborter = threading.Thread(target=abort_until_answered)
    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(_one, server.url, p) for p in prompts]
        late = [pool.submit(_one, server.url, prompts[i][:-7], rid, 640) for i, rid in enumerate(aborted)]
        aborter.start()
        outs = [f.result() for f in futures] + [f.result() for f in late]
        answered.set()
    aborter.join()

    assert server.proc.poll() is None, server.log()[-4000:]
    for out in outs[:8]:
        assert out["meta_info"]["finish_reason"]["type"] == "length"
        assert len(out["output_ids"]) == MAX_NEW
    assert [o["output_ids"] for o in outs[:3]] == alone  # batched under pressure == alone
    assert [o["meta_info"]["finish_reason"]["type"] for o in outs[8:]] == ["abort", "abort"]
    assert "out of memory" not in server.log()
    idle_and_clean(server)
