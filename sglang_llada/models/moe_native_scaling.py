"""SGLang's torch-native MoE forward (the CPU path) drops `routed_scaling_factor`.

On GPUs the Triton runner multiplies the routed experts' sum by the factor (or the top-k step
folds it into the weights, `layer.should_fuse_routed_scaling_factor_in_topk`). SGLang 0.5.23's
`fused_moe_native.moe_forward_native`, which `UnquantizedFusedMoEMethod.forward_cpu` calls on a
machine with no GPU, returns the plain weighted sum: every in-tree MoE class with a factor is
served with its routed experts scaled by 1 / factor. For the Bailing MoE V2 autoregressive twin
(factor 2.5) that cut held-out exact match through the server to 0.204; with this hook it is
0.954, task for task what a pure-torch greedy decode of the same weights scores
(`bench/reference_decode_eval.py ... ar`). Our own `LLaDA2MoeModelLM` folds the factor into its router
weights and passes none to `FusedMoE`, so it never depended on this.

The AROUND hook below (installed from sglang_llada/seams.py) applies the factor to the native forward's output exactly where the GPU
runner does; models without a factor (None or 1.0) are untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def scale_routed_output(
    original_fn: Callable[..., torch.Tensor], layer: torch.nn.Module, x: torch.Tensor, topk_output: Any, moe_runner_config: Any, *args: Any, **kwargs: Any
) -> torch.Tensor:
    out = original_fn(layer, x, topk_output, moe_runner_config, *args, **kwargs)
    factor = getattr(moe_runner_config, "routed_scaling_factor", None)
    if factor is None or factor == 1.0 or getattr(layer, "should_fuse_routed_scaling_factor_in_topk", False):
        return out
    return out * factor
