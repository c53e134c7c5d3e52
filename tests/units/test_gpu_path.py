"""The GPU path on CPU: our model class through the branches it takes on CUDA, against its CPU path
and against SGLang's in-tree class through *its* GPU branches (sglang_llada/testing/gpu_path.py).

Both classes run SGLang's `FusedMoE` through its GPU runner (in place, as on CUDA) and every Triton
kernel, ours and SGLang's, in the Triton interpreter, fp16, on tiny 2.0 and 2.2 (block-routed)
checkpoints. The harness runs in a subprocess: it needs an fp16 SGLang ModelRunner, and this test
session's one in-process runner is fp32.

The first assertion is the regression test of the in-place MoE fault: before the shared expert ran
ahead of the routed experts, our GPU path read hidden states `FusedMoE` had already overwritten and
differed from the CPU path by 3.5e-2 (relative to the logits' max, this harness) instead of one fp16 ulp.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

# One fp16 ulp at the logits' scale is 7.4e-4 of their max here; a few ulps of headroom.
FP16_TOL = 4e-3


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from sglang_llada.toy.checkpoint import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("gpu_path")
    paths = [write_tiny_checkpoint(root / g, seed=0, generation=g) for g in ("2.0", "2.2")]
    out = root / "results.json"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    # cwd outside the repository: its sglang_llada/ folder would shadow the installed package.
    proc = subprocess.run(
        [sys.executable, "-m", "sglang_llada.testing.gpu_path", *map(str, paths), "--json", str(out)],
        cwd=root, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    return {Path(k).name: v for k, v in data.items()}


@pytest.mark.parametrize("generation", ["2.0", "2.2"])
def test_gpu_path_matches_cpu_path_and_in_tree(generation: str, results: dict[str, Any]) -> None:
    r = results[generation]
    errors = r["errors"]
    print(generation, json.dumps(r, indent=1))
    assert r["finite"]
    # The in-place MoE fault (shared expert after FusedMoE overwrote its input) fails this one.
    assert errors["ours_gpu_vs_ours_cpu"] <= FP16_TOL
    assert errors["ours_gpu_vs_in_tree_gpu"] <= FP16_TOL
    assert errors["in_tree_gpu_vs_ours_cpu"] <= FP16_TOL
    # Whole-prompt EXTEND forward (our block-causal Triton kernel) and a folded forward.
    assert errors["ours_gpu_extend_vs_ours_cpu"] <= FP16_TOL
    assert errors["ours_gpu_folded_vs_ours_cpu_folded"] <= FP16_TOL
    # fp16 vs the fp32 pure-torch reference: the GPU path is no further from it than the CPU path.
    assert errors["ours_gpu_vs_reference"] <= max(2 * errors["ours_cpu_vs_reference"], FP16_TOL)
    assert r["inputs_mutated"] == []
    # The GPU branches really ran.
    calls = r["gpu_calls"]
    assert calls.get("forward_cuda", 0) > 0 and calls.get("invoke_fused_moe_kernel", 0) > 0
    assert calls.get("block_causal_attention_triton", 0) > 0
    if generation == "2.2":
        assert calls.get("block_route_triton", 0) > 0


def test_moe_align_stand_in_matches_its_contract() -> None:
    """The torch stand-in for sgl_kernel's moe_align_block_size: every (token, k) index once, grouped
    by expert, segments padded to the block with the invalid index, one expert per block."""
    from sglang_llada.testing.gpu_path import torch_moe_align_block_size

    E, block = 6, 4
    topk_ids = torch.tensor([[2, 3], [1, 2], [1, 3], [5, 2], [0, 1]], dtype=torch.int32)
    n = topk_ids.numel()
    cap = n + (E + 1) * (block - 1)
    sorted_ids = torch.empty(cap, dtype=torch.int32)
    expert_ids = torch.empty((cap + block - 1) // block, dtype=torch.int32)
    total = torch.empty(1, dtype=torch.int32)
    torch_moe_align_block_size(topk_ids, E + 1, block, sorted_ids, expert_ids, total, torch.empty(E + 2, dtype=torch.int32), True)
    padded = int(total[0])
    assert padded % block == 0
    body = sorted_ids[:padded]
    real = body[body < n]
    assert sorted(real.tolist()) == list(range(n))
    flat = topk_ids.reshape(-1)
    for b in range(padded // block):
        members = [int(i) for i in body[b * block : (b + 1) * block] if i < n]
        assert all(int(flat[i]) == int(expert_ids[b]) for i in members)
    assert expert_ids[: padded // block].tolist() == sorted(expert_ids[: padded // block].tolist())
