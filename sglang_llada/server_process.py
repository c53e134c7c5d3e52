"""Start and stop real `python -m sglang.launch_server` subprocesses (tests and bench scripts)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

STARTUP_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            # The server is its own process-group leader: signal the whole group so the
            # scheduler/detokenizer children go too.
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        deadline = time.time() + 30
        while time.time() < deadline and _group_alive(self.proc.pid):
            time.sleep(0.2)
        if _group_alive(self.proc.pid):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def launch(
    model: Path | None,
    extra_args: list[str],
    workdir: Path,
    log_path: Path,
    *,
    via_cli: bool = False,
    env_overrides: dict[str, str] | None = None,
) -> Server:
    """Launch the stock server from a neutral working directory (so no source tree shadows
    the installed package) and wait until SGLang reports it ready (`/ready`: its warmup request
    has finished, so no request of the caller shares a batch with it).

    via_cli: start it as `sglang-llada serve [--model M] ...` instead (model None: the embedded
    default), which exec's the same stock server.
    env_overrides: extra environment variables for the server process.
    """
    for attempt in range(BIND_RETRIES):
        try:
            return _launch_once(model, extra_args, workdir, log_path, via_cli, env_overrides)
        except PortTaken:
            if attempt == BIND_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


class PortTaken(RuntimeError):
    """The free port picked for the server was taken by another process before it bound it."""


# free_port() only finds a port that was free a moment ago: SGLang's own processes (its ZMQ and
# NCCL ports are random) or another server may take it before uvicorn binds, and uvicorn then
# logs the error and hangs in shutdown instead of exiting. Such a start is retried on a new port.
BIND_RETRIES = 3
_BIND_ERROR = "error while attempting to bind on address"


def _spawn(cmd: list[str], port: int, workdir: Path, log_path: Path, env_overrides: dict[str, str] | None = None) -> Server:
    """`cmd` in its own process group (so `stop` takes its children too), output to `log_path`, without
    PYTHONPATH (so no source tree shadows the installed package)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(env_overrides or {})
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return Server(url=f"http://127.0.0.1:{port}", proc=proc, log_path=log_path)


def _launch_once(
    model: Path | None,
    extra_args: list[str],
    workdir: Path,
    log_path: Path,
    via_cli: bool,
    env_overrides: dict[str, str] | None,
) -> Server:
    port = free_port()
    if via_cli:
        model_args = [] if model is None else ["--model", str(model)]
        cmd = [sys.executable, "-m", "sglang_llada", "serve", *model_args, "--port", str(port), *extra_args]
    else:
        cmd = [
            sys.executable, "-m", "sglang.launch_server",
            "--model", str(model), "--host", "127.0.0.1", "--port", str(port), *extra_args,
        ]
    server = _spawn(cmd, port, workdir, log_path, env_overrides)
    proc = server.proc
    deadline = time.time() + STARTUP_TIMEOUT_S
    while time.time() < deadline:
        if _BIND_ERROR in server.log():
            server.stop()
            raise PortTaken(f"port {port} was taken before the server bound it")
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()[-6000:]}")
        try:
            # /ready answers 200 once SGLang's own warmup request has finished (status Up), not
            # when the HTTP server first answers (/model_info): a caller's first requests would
            # otherwise share batches with the warmup, and in --no-dllm-fdfo mode each request
            # of a batch is charged the batch's forwards (the flaky forward counts of CI).
            if requests.get(server.url + "/ready", timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(1.0)
    server.stop()
    raise RuntimeError(f"server did not start in {STARTUP_TIMEOUT_S}s:\n{server.log()[-6000:]}")


def launch_gateway(worker_urls: list[str], workdir: Path, log_path: Path, *, policy: str = "cache_aware") -> Server:
    """SGLang's gateway (`smg launch`, the `smg` package) in front of running servers, as README's
    scale-out section runs it: `smg launch --worker-urls URL... --policy cache_aware`. Waits until
    every worker is registered and healthy (`/workers`)."""
    port, metrics_port = free_port(), free_port()
    cmd = [
        sys.executable, "-c", "import sys; from smg.cli import main; sys.exit(main())", "launch",
        "--host", "127.0.0.1", "--port", str(port), "--prometheus-port", str(metrics_port),
        "--worker-urls", *worker_urls, "--policy", policy,
    ]
    gateway = _spawn(cmd, port, workdir, log_path)
    proc = gateway.proc
    deadline = time.time() + 120.0
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{gateway.log()[-6000:]}")
        try:
            r = requests.get(gateway.url + "/workers", timeout=2)
            workers = r.json().get("workers", []) if r.status_code == 200 else []
            if len(workers) == len(worker_urls) and all(w.get("is_healthy", True) for w in workers):
                return gateway
        except (requests.RequestException, ValueError):
            pass
        time.sleep(1.0)
    gateway.stop()
    raise RuntimeError(f"gateway did not register its workers in 120 s:\n{gateway.log()[-6000:]}")


def generate(url: str, payload: dict, timeout: float = 120.0) -> dict:
    r = requests.post(url + "/generate", json=payload, timeout=timeout)
    r.raise_for_status()
    return r.json()
