from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

# Test helpers (the pure-torch reference model) live beside the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sglang_llada.server_process import Server, launch  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sglang_llada.toy.checkpoint import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-llada2"), seed=0)


@pytest.fixture(scope="session")
def neutral_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cwd")


def _server(tmp_path_factory, neutral_dir: Path, model: Path, args: list[str], name: str) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("logs") / f"{name}.log"
    server = launch(model, args, neutral_dir, log)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def default_server(tmp_path_factory, neutral_dir, tiny_checkpoint) -> Iterator[Server]:
    """`python -m sglang.launch_server --model <tiny dir>` and nothing else."""
    yield from _server(tmp_path_factory, neutral_dir, tiny_checkpoint, [], "default")


@pytest.fixture(scope="session")
def fp32_server(tmp_path_factory, neutral_dir, tiny_checkpoint) -> Iterator[Server]:
    yield from _server(tmp_path_factory, neutral_dir, tiny_checkpoint, ["--dtype", "float32"], "fp32")
