"""`--dllm-algorithm llada2_exact` through the stock server on the shipped trained toy: token for
token the output of `llada2_static` with `tokens_per_step: 1` on the held-out splits, alone, batched
and from the radix cache, in SGLang's default FDFO loop and its synchronous one, in fewer forwards;
what it cannot honour is a 400 and the server keeps serving."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
import requests

from sglang_llada.eval import render_prompts
from sglang_llada.server_process import Server, generate
from sglang_llada.testing.server_checks import idle_and_clean, served, strict_server
from sglang_llada.toy import TRAINED_TOY_DIR
from sglang_llada.toy.tasks import heldout_split

EXAMPLES = heldout_split()[:15]  # 3 of each task
PROMPTS = render_prompts(EXAMPLES)
MAX_NEW = 96


def _params(**extra: object) -> dict:
    return {"max_new_tokens": MAX_NEW, "temperature": 0, **extra}


def _run(server: Server, prompt: str, **extra: object) -> dict:
    return generate(server.url, {"text": prompt, "sampling_params": _params(**extra)})


def _yaml(tmp_path_factory: pytest.TempPathFactory, text: str) -> str:
    path = tmp_path_factory.mktemp("algo") / "algorithm.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def one_per_step(tmp_path_factory: pytest.TempPathFactory, neutral_dir: Path) -> Iterator[list[dict]]:
    """The yardstick: llada2_static, one token per step, each held-out prompt alone."""
    args = ["--dllm-algorithm", "llada2_static", "--dllm-algorithm-config", _yaml(tmp_path_factory, "tokens_per_step: 1\n")]
    for server in served(TRAINED_TOY_DIR, args, neutral_dir, tmp_path_factory.mktemp("logs") / "static1.log"):
        yield [_run(server, p) for p in PROMPTS]


@pytest.fixture(scope="module")
def exact_server(tmp_path_factory: pytest.TempPathFactory, neutral_dir: Path) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("logs") / "exact.log"
    yield from strict_server(TRAINED_TOY_DIR, ["--dllm-algorithm", "llada2_exact"], neutral_dir, log)


def test_exact_equals_one_per_step_alone_batched_and_cached(exact_server: Server, one_per_step: list[dict]) -> None:
    alone = [_run(exact_server, p) for p in PROMPTS]
    for ex, got, want in zip(EXAMPLES, alone, one_per_step):
        assert got["output_ids"] == want["output_ids"], (ex.task, ex.prompt)
    with ThreadPoolExecutor(max_workers=len(PROMPTS)) as pool:  # batched, and the prompts are now cached
        batched = list(pool.map(lambda p: _run(exact_server, p), PROMPTS))
    assert [b["output_ids"] for b in batched] == [w["output_ids"] for w in one_per_step]
    assert sum(b["meta_info"]["cached_tokens"] for b in batched) > 0  # radix reuse happened
    ours = sum(o["meta_info"]["dllm_forwards"] for o in alone)
    theirs = sum(o["meta_info"]["dllm_forwards"] for o in one_per_step)
    assert ours * 2 <= theirs, (ours, theirs)  # (bench/results/forwards.md has the measured ratio)
    idle_and_clean(exact_server)


def test_request_draft_depth_and_logprobs(exact_server: Server, one_per_step: list[dict]) -> None:
    shallow = _run(exact_server, PROMPTS[0], custom_params={"dllm": {"draft_depth": 1}})
    assert shallow["output_ids"] == one_per_step[0]["output_ids"]
    deep = _run(exact_server, PROMPTS[0])
    assert deep["meta_info"]["dllm_forwards"] < shallow["meta_info"]["dllm_forwards"]
    # positions: one block per forward at depth 1; the verification copies on top at depth 8
    assert shallow["meta_info"]["dllm_positions"] == 32 * shallow["meta_info"]["dllm_forwards"]
    assert deep["meta_info"]["dllm_positions"] > 32 * deep["meta_info"]["dllm_forwards"]
    r = generate(exact_server.url, {"text": PROMPTS[1], "sampling_params": _params(), "return_logprob": True})
    lps = [lp for lp, _, _ in r["meta_info"]["output_token_logprobs"]]
    assert len(lps) == len(r["output_ids"]) and all(lp <= 0 for lp in lps)
    traced = _run(exact_server, PROMPTS[2], custom_params={"dllm_trace": True})
    at = traced["meta_info"]["dllm_committed_at"]
    assert len(at) == len(traced["output_ids"]) and max(at) <= traced["meta_info"]["dllm_forwards"]
    assert max(at.count(a) for a in set(at)) >= 2  # a verification forward confirmed several commits
    bad = requests.post(exact_server.url + "/generate",
                        json={"text": PROMPTS[0], "sampling_params": _params(custom_params={"dllm": {"draft_depth": 99}})}, timeout=60)
    assert bad.status_code == 400 and "draft_depth" in bad.text


@pytest.mark.parametrize(
    "extra, word",
    [({"temperature": 0.8}, "temperature"), ({"logit_bias": {"5": 2.0}}, "logit_bias"),
     ({"frequency_penalty": 0.5}, "frequency_penalty"), ({"min_new_tokens": 4}, "min_new_tokens")],
)
def test_refused_parameters_are_400s(exact_server: Server, extra: dict, word: str) -> None:
    r = requests.post(exact_server.url + "/generate", json={"text": PROMPTS[0], "sampling_params": _params(**extra)}, timeout=60)
    assert r.status_code == 400 and word in r.text and "llada2_exact" in r.text
    chat = requests.post(exact_server.url + "/v1/chat/completions", timeout=60,
                         json={"messages": [{"role": "user", "content": EXAMPLES[0].prompt}], "temperature": 0.9, "max_tokens": 8})
    assert chat.status_code == 400 and "temperature" in chat.text
    assert _run(exact_server, PROMPTS[0])["meta_info"]["completion_tokens"] > 0  # still serving


def test_exact_in_synchronous_mode(tmp_path_factory: pytest.TempPathFactory, neutral_dir: Path, one_per_step: list[dict]) -> None:
    args = ["--dllm-algorithm", "llada2_exact", "--no-dllm-fdfo"]
    for server in served(TRAINED_TOY_DIR, args, neutral_dir, tmp_path_factory.mktemp("logs") / "exact-sync.log"):
        with ThreadPoolExecutor(max_workers=5) as pool:
            got = list(pool.map(lambda p: _run(server, p), PROMPTS))
        assert [g["output_ids"] for g in got] == [w["output_ids"] for w in one_per_step]


def test_exact_under_tensor_parallelism(tmp_path_factory: pytest.TempPathFactory, neutral_dir: Path, one_per_step: list[dict]) -> None:
    """`--tp 2` (gloo on CPU): every rank runs the same verification rounds on its head shard."""
    args = ["--dllm-algorithm", "llada2_exact", "--tp", "2"]
    for server in served(TRAINED_TOY_DIR, args, neutral_dir, tmp_path_factory.mktemp("logs") / "exact-tp2.log"):
        with ThreadPoolExecutor(max_workers=5) as pool:
            got = list(pool.map(lambda p: _run(server, p), PROMPTS))
        assert [g["output_ids"] for g in got] == [w["output_ids"] for w in one_per_step]
