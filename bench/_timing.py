"""What the kernel benches share: their common arguments, the timing loop, the machine description and
the results files. Used by bench/step_bench.py, bench/block_routing_bench.py, bench/logit_adjust_bench.py and
bench/block_causal_attention_bench.py (imported as a sibling module: a script's own folder is sys.path[0]
when it runs as `python bench/x.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

RESULTS = Path(__file__).resolve().parent / "results"
# How every results file says the bench was run (single-threaded torch, low priority on a shared machine).
COMMAND_PREFIX = "nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python "


def parser(doc: Optional[str], name: str, reps: int) -> argparse.ArgumentParser:
    """An argument parser described by the script docstring's first line, with --reps, --warmup and
    --out (default bench/results/<name>, written as <out>.json and <out>.md); scripts add their own."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    p.add_argument("--reps", type=int, default=reps)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS / name)
    return p


def devices() -> list[torch.device]:
    """The CPU, then CUDA when available (Triton rows are timed only there)."""
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_ms(
    run: Callable[..., Any],
    device: torch.device,
    reps: int,
    warmup: int,
    *,
    digits: int = 2,
    fresh: Optional[Callable[[], Any]] = None,
) -> tuple[float, list[float]]:
    """Median wall time of `reps` calls of run() after `warmup` untimed ones, in ms, and the timed samples
    rounded to `digits`. With `fresh`, each call is run(fresh()), the argument made outside the timing."""
    times = []
    for i in range(warmup + reps):
        arg = () if fresh is None else (fresh(),)
        sync(device)
        t0 = time.perf_counter()
        run(*arg)
        sync(device)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), [round(t, digits) for t in times]


def machine_meta() -> dict[str, Any]:
    """The command line as run, the machine, torch and its thread count, the GPU (or "none")."""
    return {
        "command": COMMAND_PREFIX + " ".join([sys.argv[0], *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
    }


def md_header(title: str, meta: dict[str, Any]) -> list[str]:
    """The first lines of a results .md: the title and the command."""
    return ["# " + title, "", "Command:", "", "```bash", meta["command"], "```", ""]


def machine_sentence(meta: dict[str, Any]) -> str:
    """The start of the results' machine sentence (machine, torch, threads, GPU); the caller goes on with the workload."""
    return (
        f"Machine: {meta['machine']}; torch {meta['torch']}; torch threads: {meta['torch_threads']}; "
        f"CUDA: {meta['cuda']}. "
    )


def write_results(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]], md_lines: list[str]) -> None:
    """<out>.json ({"meta", "rows"}) and <out>.md (the lines), then says where they went."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(md_lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
