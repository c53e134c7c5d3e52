"""Shared fixtures. Tests live in three folders: `kernels/` (each op against its pure-torch
reference, Triton under the interpreter), `units/` (in-process: algorithms, model parity, hooks,
toys) and `e2e/` (real servers started with the stock `sglang.launch_server`, marked `server`:
`pytest -m "not server"` runs everything else in a few minutes)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from sglang_llada.server_process import Server
from sglang_llada.testing.server_checks import served

SERVER_FIXTURES = {"default_server", "fp32_server"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    e2e = Path(__file__).resolve().parent / "e2e"
    for item in items:
        if e2e in Path(str(item.fspath)).resolve().parents or SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)


@pytest.fixture(scope="module")
def few_threads() -> Iterator[None]:
    """At most 2 torch threads for a module's in-process forwards (the machine has 2 cores), restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sglang_llada.toy.checkpoint import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-llada2"), seed=0)


@pytest.fixture(scope="session")
def neutral_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cwd")


def _server(tmp_path_factory: pytest.TempPathFactory, neutral_dir: Path, model: Path, args: list[str], name: str) -> Iterator[Server]:
    yield from served(model, args, neutral_dir, tmp_path_factory.mktemp("logs") / f"{name}.log")


@pytest.fixture(scope="session")
def default_server(tmp_path_factory: pytest.TempPathFactory, neutral_dir: Path, tiny_checkpoint: Path) -> Iterator[Server]:
    """`python -m sglang.launch_server --model <tiny dir>` and nothing else."""
    yield from _server(tmp_path_factory, neutral_dir, tiny_checkpoint, [], "default")


@pytest.fixture(scope="session")
def fp32_server(tmp_path_factory: pytest.TempPathFactory, neutral_dir: Path, tiny_checkpoint: Path) -> Iterator[Server]:
    yield from _server(tmp_path_factory, neutral_dir, tiny_checkpoint, ["--dtype", "float32"], "fp32")
