"""Our decoding algorithms through the stock server: `--dllm-algorithm NAME` (CPU, fp32 tiny toy).

The random-weight toy is never confident, so threshold decoding commits one token per forward
(the top-1 fallback): exactly what SGLang's in-tree LowConfidence does, which makes its output
a token-for-token yardstick. Schedules that commit several tokens per step are checked by their
forward counts (`meta_info["dllm_forwards"]`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from sglang_llada.server_process import Server, generate
from sglang_llada.testing.server_checks import served

PROMPTS = ["Copy: abc de", "Add: 12+34", "Lower: XY Z"]
MAX_NEW = 40  # 2 blocks for these prompts


def _serve(tmp_path_factory: pytest.TempPathFactory, neutral_dir: Path, model: Path, args: list[str], name: str) -> Iterator[Server]:
    yield from served(model, ["--dtype", "float32", *args], neutral_dir, tmp_path_factory.mktemp("logs") / f"{name}.log")


def _yaml(tmp_path_factory, text: str) -> str:
    path = tmp_path_factory.mktemp("algo") / "algorithm.yaml"
    path.write_text(text)
    return str(path)


def _run(server: Server, prompt: str) -> dict:
    params = {"max_new_tokens": MAX_NEW, "temperature": 0, "ignore_eos": True}
    return generate(server.url, {"text": prompt, "sampling_params": params})


def test_default_threshold_equals_in_tree_low_confidence(
    fp32_server: Server, tmp_path_factory, neutral_dir, tiny_checkpoint
) -> None:
    """fp32_server runs the plugin's default, llada2_threshold."""
    assert "decoding algorithm llada2_threshold" in fp32_server.log()
    for in_tree_server in _serve(tmp_path_factory, neutral_dir, tiny_checkpoint, ["--dllm-algorithm", "LowConfidence"], "in-tree"):
        _compare(fp32_server, in_tree_server)


def _compare(fp32_server: Server, in_tree_server: Server) -> None:
    for prompt in PROMPTS:
        ours, theirs = _run(fp32_server, prompt), _run(in_tree_server, prompt)
        assert ours["output_ids"] == theirs["output_ids"], prompt
        meta = ours["meta_info"]
        # Never confident: one committed token per forward, plus (SGLang) the KV-storing forward per
        # block; ours folds that store into the next block's first forward (fold_store: auto is on
        # on the CPU platform) and drops the last block's (its KV is freed, not published)
        P = meta["prompt_tokens"]
        blocks = -(-(P + MAX_NEW) // 32) - P // 32
        assert theirs["meta_info"]["dllm_forwards"] == (32 - P % 32) + 1 + (blocks - 1) * 33
        assert meta["dllm_forwards"] == theirs["meta_info"]["dllm_forwards"] - blocks


def test_unknown_algorithm_lists_the_available_ones(tmp_path_factory, neutral_dir, tiny_checkpoint) -> None:
    with pytest.raises(RuntimeError) as err:
        for _ in _serve(tmp_path_factory, neutral_dir, tiny_checkpoint, ["--dllm-algorithm", "llada2_nope"], "nope"):
            pass
    assert "llada2_nope" in str(err.value) and "llada2_static" in str(err.value) and "LowConfidence" in str(err.value)


def test_static_schedule_commits_n_per_forward(tmp_path_factory, neutral_dir, tiny_checkpoint) -> None:
    cfg = _yaml(tmp_path_factory, "tokens_per_step: 4\n")
    args = ["--dllm-algorithm", "llada2_static", "--dllm-algorithm-config", cfg]
    for server in _serve(tmp_path_factory, neutral_dir, tiny_checkpoint, args, "static"):
        out = _run(server, PROMPTS[0])
        meta = out["meta_info"]
        P = meta["prompt_tokens"]
        n_blocks = -(-(P + meta["completion_tokens"]) // 32) - P // 32
        # Each block: its masked positions 4 at a time; the block is accepted in the step that
        # commits its last mask (fold_store: auto is on on the CPU platform; without it, one
        # more forward per block stores the block's KV)
        first = 32 - P % 32  # masked positions of the first (partial) block
        expect = -(-first // 4) + (n_blocks - 1) * (32 // 4)
        assert meta["dllm_forwards"] == expect
        assert meta["completion_tokens"] == MAX_NEW


def test_factor_and_edit_serve(tmp_path_factory, neutral_dir, tiny_checkpoint) -> None:
    for name, knobs in (("llada2_factor", "factor: 1.0\n"), ("llada2_edit", "edit_threshold: 0.9\nmax_edit_steps: 2\n")):
        args = ["--dllm-algorithm", name, "--dllm-algorithm-config", _yaml(tmp_path_factory, knobs)]
        for server in _serve(tmp_path_factory, neutral_dir, tiny_checkpoint, args, name):
            out = _run(server, PROMPTS[1])
            assert out["meta_info"]["completion_tokens"] == MAX_NEW
            assert out["meta_info"]["dllm_forwards"] >= 2


def test_bad_knob_fails_at_startup_with_its_name(tmp_path_factory, neutral_dir, tiny_checkpoint) -> None:
    cfg = _yaml(tmp_path_factory, "treshold: 0.9\n")
    with pytest.raises(RuntimeError) as err:
        for _ in _serve(tmp_path_factory, neutral_dir, tiny_checkpoint,
                        ["--dllm-algorithm", "llada2_threshold", "--dllm-algorithm-config", cfg], "bad"):
            pass
    assert "treshold" in str(err.value)
