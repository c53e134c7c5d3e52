"""Checks on a live test server, shared by the end-to-end tests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import requests

from sglang_llada.server_process import Server, generate, launch


def served(model: Path | None, args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """`python -m sglang.launch_server --model MODEL ARGS` for the length of a fixture (`yield from`)."""
    srv = launch(model, args, cwd, log, env_overrides=env)
    try:
        yield srv
    finally:
        srv.stop()


def strict_server(model: Path, args: list[str], cwd: Path, log: Path) -> Iterator[Server]:
    """A server with SGLang's strict idle memory check on (a KV or request-slot leak raises in
    the scheduler when it goes idle, and the server dies), stopped when the fixture ends."""
    yield from served(model, args, cwd, log, {"SGLANG_ENABLE_STRICT_MEM_CHECK_DURING_IDLE": "1"})


def idle_and_clean(srv: Server, timeout: float = 120) -> None:
    """Waits until the scheduler is fully idle (SGLang's /flush_cache only succeeds then), then checks
    the strict idle leak check never fired and the server still answers."""
    deadline = time.time() + timeout
    while True:
        r = requests.post(srv.url + "/flush_cache", timeout=30)
        if r.status_code == 200:
            break
        assert time.time() < deadline, f"server not idle after {timeout}s: {r.text}"
        time.sleep(0.5)
    assert srv.proc.poll() is None, srv.log()[-4000:]
    assert "memory leak detected" not in srv.log()
    out = generate(srv.url, {"text": "hi", "sampling_params": {"max_new_tokens": 4}})
    assert out["meta_info"]["completion_tokens"] >= 1
