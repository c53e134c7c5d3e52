"""A decoder in one file, served by the stock server: docs/examples/one_file_decoder/llada2_fraction.py
installed as a package would install it (an entry point in `sglang_llada.decoders`), then
`python -m sglang.launch_server --model <tiny> --dllm-algorithm llada2_fraction`.

The random-weight toy is never confident, so the forward counts follow the rule alone: a block of
32 masks takes the steps 8, 6, 5, 4, 3, 2, 1, 1, 1, 1 at the default fraction 0.25, one step at
fraction 1 -- and fraction 1 commits exactly what `llada2_threshold` at threshold 0 commits (every
mask from one forward), so its tokens are checked against the plugin's default server."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import pytest
import requests

from sglang_llada.server_process import Server, generate
from sglang_llada.testing.decoder_package import install_decoder
from sglang_llada.testing.server_checks import served

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "one_file_decoder" / "llada2_fraction.py"
PROMPT = "Copy: abc de"
MAX_NEW = 40


@pytest.fixture(scope="module")
def fraction_server(tmp_path_factory: pytest.TempPathFactory, neutral_dir: Path, tiny_checkpoint: Path) -> Iterator[Server]:
    site = tmp_path_factory.mktemp("site")
    install_decoder(site, "llada2_fraction", EXAMPLE.read_text(), "llada2_fraction = llada2_fraction:FractionAlgorithm")
    args = ["--dtype", "float32", "--dllm-algorithm", "llada2_fraction"]
    log = tmp_path_factory.mktemp("logs") / "fraction.log"
    yield from served(tiny_checkpoint, args, neutral_dir, log, {"PYTHONPATH": str(site)})


def _run(server: Server, dllm: dict | None = None) -> dict:
    params: dict = {"max_new_tokens": MAX_NEW, "temperature": 0, "ignore_eos": True}
    if dllm is not None:
        params["custom_params"] = {"dllm": dllm}
    return generate(server.url, {"text": PROMPT, "sampling_params": params})


def _steps(masks: int, fraction: float) -> int:
    n = 0
    while masks:
        masks -= max(1, math.ceil(fraction * masks))
        n += 1
    return n


def test_the_one_file_decoder_is_served_by_its_rule(fraction_server: Server, fp32_server: Server) -> None:
    assert "decoding algorithm llada2_fraction" in fraction_server.log()
    out = _run(fraction_server)
    meta = out["meta_info"]
    P = meta["prompt_tokens"]
    blocks = -(-(P + MAX_NEW) // 32) - P // 32
    # each block accepted in the step that commits its last mask (fold_store: auto, on here)
    assert meta["dllm_forwards"] == _steps(32 - P % 32, 0.25) + (blocks - 1) * _steps(32, 0.25)
    assert meta["completion_tokens"] == MAX_NEW

    whole = _run(fraction_server, {"fraction": 1.0})  # a request's own knob
    assert whole["meta_info"]["dllm_forwards"] == blocks
    same = _run(fp32_server, {"threshold": 0.0})  # the default decoder, every mask at once
    assert whole["output_ids"] == same["output_ids"]


def test_its_knob_is_refused_with_a_400_and_the_server_goes_on(fraction_server: Server) -> None:
    params = {"max_new_tokens": 8, "custom_params": {"dllm": {"fraction": 0}}}
    r = requests.post(fraction_server.url + "/generate", json={"text": PROMPT, "sampling_params": params}, timeout=60)
    assert r.status_code == 400
    assert "custom_params.dllm.fraction must be a number in (0, 1]" in r.text and "llada2_fraction" in r.text
    params["custom_params"] = {"dllm": {"threshold": 0.5}}
    r = requests.post(fraction_server.url + "/generate", json={"text": PROMPT, "sampling_params": params}, timeout=60)
    assert r.status_code == 400 and "a request may set: fraction" in r.text
    assert _run(fraction_server)["meta_info"]["completion_tokens"] == MAX_NEW
