"""Checkpoint tensor names of LLaDA2 in the HF layout, normalised for our model class.

Two expert layouts exist in the wild: one tensor per expert
(`mlp.experts.{e}.gate_proj.weight` [Im, H]) and fused 3-D tensors
(`mlp.experts.gate_proj` [E, Im, H], `mlp.experts.down_proj` [E, H, Im]). Both are
yielded here as per-expert tensors, so the loader has one path.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch

EXPERT_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def iter_hf_weights(
    weights: Iterable[tuple[str, torch.Tensor]], *, num_experts: int
) -> Iterator[tuple[str, torch.Tensor]]:
    for name, tensor in weights:
        # Multimodal wrappers nest the language model one level deeper.
        if name.startswith("model.language_model."):
            name = "model." + name.removeprefix("model.language_model.")
        prefix, _, leaf = name.rpartition(".")
        if prefix.endswith(".mlp.experts") and leaf in EXPERT_PROJECTIONS:
            if tensor.ndim != 3 or tensor.shape[0] != num_experts:
                raise ValueError(
                    f"Fused expert tensor {name!r} has shape {tuple(tensor.shape)}; "
                    f"expected [{num_experts}, out, in]"
                )
            for e in range(num_experts):
                yield f"{prefix}.{e}.{leaf}.weight", tensor[e]
            continue
        yield name, tensor
