"""bench/gpu_check.py, the one-call GPU check, runs here too: kernels in the Triton interpreter, tiny shapes.
(On a lent GPU machine it runs the same checks at LLaDA2 sizes; see its docstring.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_smoke_run_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check"
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--small", "--no-tests",
           "--no-model", "--reps", "1", "--warmup", "0", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert {r["op"] for r in rows} == {"confidence", "select_commit", "logit_adjust", "block_routing", "block_causal_attention"}
    attention = {r["case"].split(",")[0]: r for r in rows if r["op"] == "block_causal_attention"}
    assert attention["fp16"]["max_rel_err"] <= 4e-3 and "skipped" in attention["bf16"]  # bf16: CUDA only
    assert all(r["ok"] for r in rows), rows
    assert "interpreter" in out.with_suffix(".md").read_text()
