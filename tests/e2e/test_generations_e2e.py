"""End-to-end: each LLaDA2.X generation's tiny checkpoint served by the stock
`python -m sglang.launch_server --model DIR` with no flags is decoded its own way, says so in
one log line, and a 2.2 server never emits its DELETE / SPLIT control tokens.

The 2.2 checkpoint here is the tiny one with its lm_head rows of DELETE and SPLIT scaled up, so
that the model predicts them at many positions: a decoder that committed them as text would show
them in the output (the control server below, SGLang's in-tree LowConfidence, does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
import requests

from sglang_llada.server_process import Server, generate
from sglang_llada.testing.server_checks import served

PROMPTS = ["Hello there, how are you?", "Upper: abc def", "12+34=", "x" * 70]


def _control_heavy(path: Path) -> Path:
    """Scale the DELETE / SPLIT rows of lm_head so they win the argmax at many positions."""
    from safetensors.torch import load_file, save_file

    config = json.loads((path / "config.json").read_text())
    weights = load_file(str(path / "model.safetensors"))
    head = weights["lm_head.weight"].clone()
    for key in ("delete_token_id", "split_token_id"):
        head[config[key]] *= 6.0
    weights["lm_head.weight"] = head
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sglang_llada.toy.checkpoint import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("gen-e2e")
    out = {g: write_tiny_checkpoint(root / g, seed=0, generation=g) for g in ("2.0", "2.1", "2.2")}
    out["2.2"] = _control_heavy(out["2.2"])
    return out


def _serve(tmp_path_factory: pytest.TempPathFactory, neutral_dir: Path, model: Path, args: list[str], name: str) -> Iterator[Server]:
    yield from served(model, args, neutral_dir, tmp_path_factory.mktemp("logs") / f"{name}.log")


@pytest.fixture(scope="module")
def server22(tmp_path_factory, neutral_dir, checkpoints) -> Iterator[Server]:
    yield from _serve(tmp_path_factory, neutral_dir, checkpoints["2.2"], [], "gen22")


def _control_ids(path: Path) -> set[int]:
    config = json.loads((path / "config.json").read_text())
    return {config["delete_token_id"], config["split_token_id"]}


def _outputs(url: str, extra: dict | None = None) -> list[dict]:
    """Every prompt, greedy and sampled, with logprobs and special tokens kept in the text."""
    outs = []
    for i, prompt in enumerate(PROMPTS):
        for params in ({}, {"temperature": 0.8, "sampling_seed": i}):
            sp = {"max_new_tokens": 70, "ignore_eos": True, "skip_special_tokens": False, **params}
            outs.append(
                generate(url, {"text": prompt, "sampling_params": sp, "return_logprob": True, **(extra or {})})
            )
    return outs


def _stream_text(url: str, prompt: str) -> list[dict]:
    chunks = []
    payload = {
        "text": prompt,
        "stream": True,
        "sampling_params": {"max_new_tokens": 70, "ignore_eos": True, "skip_special_tokens": False},
    }
    with requests.post(url + "/generate", json=payload, stream=True, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                chunks.append(json.loads(line[len(b"data: "):]))
    return chunks


def test_22_server_logs_its_generation_and_hides_control_tokens(server22: Server, checkpoints) -> None:
    log = server22.log()
    assert "LLaDA2.2 (config.json declares delete_token_id / split_token_id)" in log
    assert "decoding algorithm llada2_levenshtein (the generation's default" in log
    controls = _control_ids(checkpoints["2.2"])
    for out in _outputs(server22.url):
        ids = out["output_ids"]
        assert len(ids) == 70
        assert not controls & set(ids), ids
        assert not controls & {t[1] for t in out["meta_info"]["output_token_logprobs"]}
        assert "<|delete|>" not in out["text"] and "<|split|>" not in out["text"]
    for prompt in PROMPTS[:2]:
        chunks = _stream_text(server22.url, prompt)
        assert chunks and all("<|delete|>" not in c["text"] and "<|split|>" not in c["text"] for c in chunks)
        assert not controls & set(chunks[-1]["output_ids"])


def test_control_tokens_are_predicted_by_this_checkpoint(
    tmp_path_factory, neutral_dir, checkpoints
) -> None:
    """The control: SGLang's in-tree LowConfidence (no editing) commits them as text here, and
    our llada2_threshold on the same 2.2 checkpoint keeps them out."""
    controls = _control_ids(checkpoints["2.2"])
    for srv in _serve(tmp_path_factory, neutral_dir, checkpoints["2.2"], ["--dllm-algorithm", "LowConfidence"], "lowconf22"):
        seen = set().union(*(set(o["output_ids"]) for o in _outputs(srv.url)))
        assert controls & seen
    for srv in _serve(tmp_path_factory, neutral_dir, checkpoints["2.2"], ["--dllm-algorithm", "llada2_threshold"], "thr22"):
        for out in _outputs(srv.url):
            assert not controls & set(out["output_ids"])


@pytest.mark.parametrize(
    "generation,line",
    [
        ("2.0", "LLaDA2.0 (no editing fields in the checkpoint): default decoding llada2_threshold"),
        ("2.1", "LLaDA2.1 (generation_config.json carries editing_threshold / max_post_steps): "
                "default decoding llada2_edit (mode Q)"),
    ],
)
def test_20_and_21_servers_log_their_default(
    generation: str, line: str, tmp_path_factory, neutral_dir, checkpoints
) -> None:
    for srv in _serve(tmp_path_factory, neutral_dir, checkpoints[generation], [], f"gen{generation}"):
        assert line in srv.log()
        out = generate(srv.url, {"text": PROMPTS[0], "sampling_params": {"max_new_tokens": 40, "ignore_eos": True}})
        assert len(out["output_ids"]) == 40
