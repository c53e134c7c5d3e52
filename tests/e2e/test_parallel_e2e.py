"""`--tp 2` and `--ep 2` give token-for-token the greedy output of `--tp 1` (gloo on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sglang_llada.server_process import generate, launch

PROMPTS = [
    "The quick brown fox jumps over the lazy dog. " * 2,
    "Diffusion language models unmask several tokens per forward.",
]


def _greedy(url: str) -> list[list[int]]:
    return [
        generate(url, {"text": p, "sampling_params": {"max_new_tokens": 40, "ignore_eos": True}})[
            "output_ids"
        ]
        for p in PROMPTS
    ]


@pytest.fixture(scope="module")
def tp1_outputs(fp32_server) -> list[list[int]]:
    return _greedy(fp32_server.url)


def test_ep2_on_cpu_is_a_clear_startup_error(tmp_path_factory, neutral_dir: Path, tiny_checkpoint: Path) -> None:
    log = tmp_path_factory.mktemp("logs") / "ep2.log"
    with pytest.raises(RuntimeError) as err:
        server = launch(tiny_checkpoint, ["--tp", "2", "--ep", "2"], neutral_dir, log)
        server.stop()
    assert "--ep 2 is not supported on the CPU platform" in str(err.value)


@pytest.mark.parametrize("flags", [["--tp", "2"]], ids=["tp2"])
def test_parallel_matches_tp1(
    flags: list[str], tp1_outputs, tmp_path_factory, neutral_dir: Path, tiny_checkpoint: Path
) -> None:
    log = tmp_path_factory.mktemp("logs") / f"{'-'.join(flags)}.log"
    server = launch(tiny_checkpoint, ["--dtype", "float32", *flags], neutral_dir, log)
    try:
        assert _greedy(server.url) == tp1_outputs
    finally:
        server.stop()
