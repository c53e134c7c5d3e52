"""The shipped trained toy and its AR twin, through real servers (CPU).

`sglang-llada serve` with no model flag serves the embedded toy; it answers held-out tasks, and
every response reports its forwards (meta_info: dllm_forwards, dllm_prefill_forwards,
dllm_tokens_per_forward). `sglang-llada eval --json` scores any server, the AR twin included.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import requests

from sglang_llada.eval import render_prompts
from sglang_llada.server_process import Server, generate, launch
from sglang_llada.toy import AR_TWIN_DIR, TRAINED_TOY_DIR
from sglang_llada.toy.tasks import heldout_split, is_correct

# Two held-out examples of each task.
HANDFUL = heldout_split()[:12]


@pytest.fixture(scope="module")
def toy_server(tmp_path_factory, neutral_dir: Path) -> Iterator[Server]:
    """README's serve command: `sglang-llada serve` (embedded model, no SGLang flags)."""
    log = tmp_path_factory.mktemp("logs") / "toy.log"
    server = launch(None, [], neutral_dir, log, via_cli=True)
    try:
        yield server
    finally:
        server.stop()


def _eval_json(url: str, *extra: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "sglang_llada", "eval", "--url", url, "--json", *extra],
        check=True, capture_output=True, text=True, timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_serve_prints_url_and_serves_the_embedded_toy(toy_server: Server) -> None:
    log = toy_server.log()
    assert f"serving {TRAINED_TOY_DIR} at http://127.0.0.1:" in log
    assert "/v1/chat/completions" in log  # the example request
    info = requests.get(toy_server.url + "/model_info", timeout=10).json()
    assert Path(info["model_path"]) == TRAINED_TOY_DIR


def test_answers_held_out_tasks(toy_server: Server) -> None:
    prompts = render_prompts(HANDFUL)
    right = 0
    for ex, prompt in zip(HANDFUL, prompts):
        out = generate(toy_server.url, {"text": prompt, "sampling_params": {"max_new_tokens": 160, "temperature": 0}})
        right += is_correct(ex, out["text"])
    assert right >= 11, f"{right}/12 held-out answers right"


def test_chat_completion_answers(toy_server: Server) -> None:
    ex = next(e for e in HANDFUL if e.task == "add")
    r = requests.post(
        toy_server.url + "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": ex.prompt}], "max_tokens": 32, "temperature": 0},
        timeout=120,
    )
    r.raise_for_status()
    assert r.json()["choices"][0]["message"]["content"].strip() == ex.answer


def test_meta_info_reports_forwards(toy_server: Server) -> None:
    ex = next(e for e in HANDFUL if e.task == "copy")
    prompt = render_prompts([ex])[0]
    out = generate(toy_server.url, {"text": prompt, "sampling_params": {"max_new_tokens": 160, "temperature": 0}})
    meta = out["meta_info"]
    n_prompt, n_out = meta["prompt_tokens"], meta["completion_tokens"]
    blocks = -(-(n_prompt + n_out) // 32) - n_prompt // 32  # blocks that were denoised
    # Each denoised block: at least one committing forward and the one that stores its KV.
    assert 2 * blocks <= meta["dllm_forwards"] <= 33 * blocks
    # SGLang 0.5.23 encodes full prompt blocks one forward each, before denoising.
    assert meta["dllm_prefill_forwards"] == n_prompt // 32
    assert meta["dllm_tokens_per_forward"] == pytest.approx(n_out / meta["dllm_forwards"], abs=1e-3)


def test_streaming_chunks_carry_forwards_so_far(toy_server: Server) -> None:
    ex = next(e for e in HANDFUL if e.task == "copy")
    payload = {
        "text": render_prompts([ex])[0], "stream": True,
        "sampling_params": {"max_new_tokens": 160, "temperature": 0},
    }
    counts = []
    with requests.post(toy_server.url + "/generate", json=payload, stream=True, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                counts.append(json.loads(line[6:])["meta_info"]["dllm_forwards"])
    assert len(counts) >= 2 and counts == sorted(counts) and counts[-1] > counts[0]


def test_eval_command_json(toy_server: Server) -> None:
    s = _eval_json(toy_server.url, "--split", "heldout-small", "--concurrency", "2")
    assert s["n"] == 30
    assert {"accuracy", "tpf", "output_tokens_per_s", "n"} <= s.keys()
    assert s["accuracy"] >= 0.8
    assert s["tpf"] > 1.0 and s["output_tokens_per_s"] > 0


def test_ar_twin_serves_autoregressively(tmp_path_factory, neutral_dir: Path) -> None:
    log = tmp_path_factory.mktemp("logs") / "ar.log"
    server = launch(AR_TWIN_DIR, ["--trust-remote-code"], neutral_dir, log)
    try:
        assert "BailingMoeV2ForCausalLM" in server.log()
        s = _eval_json(server.url, "--limit", "12")
        assert s["n"] == 12 and s["tpf"] is None  # an AR server reports no diffusion forwards
        assert s["accuracy"] >= 0.75
    finally:
        server.stop()
