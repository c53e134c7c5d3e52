"""`llada2_fraction`: a decoder in one file, served by sglang-llada once its package is installed.

Each step commits the ceil(`fraction` x masked positions left) most confident masked positions of
the block (at least one): a fixed share of what remains, so a block takes about log(32) / -log(1 -
fraction) forwards whatever the model's confidence. `fraction: 1` commits the whole block from one
forward.

What this file is: the commit rule (`rule`, a pure function of the step's batched tensors) and the
knob it reads. What it is not: knob parsing and per-request resolution (`custom_params.dllm`),
request checks and their 400s, logit bias and penalties, regex / json_schema constraints, sampling,
logprobs and the trajectory, the done flags and folding -- sglang-llada's mask-to-token step
(sglang_llada/algorithms/unmask.py) and base class do those for every decoder alike.

Served through an entry point of the installing package (pyproject.toml):

    [project.entry-points."sglang_llada.decoders"]
    llada2_fraction = "llada2_fraction:FractionAlgorithm"

then `python -m sglang.launch_server --model DIR --dllm-algorithm llada2_fraction`, and a request may
set `custom_params: {"dllm": {"fraction": 0.5}}`. tests/e2e/test_one_file_decoder_e2e.py installs it
that way and serves it.
"""

from __future__ import annotations

from typing import ClassVar, Sequence, Union

import torch

from sglang_llada.algorithms.base import StepKnobs
from sglang_llada.algorithms.knobs import FOLD_STORE, Knob
from sglang_llada.algorithms.unmask import NEVER, UnmaskAlgorithm

Tensor = torch.Tensor


class FractionAlgorithm(UnmaskAlgorithm):
    """Commit a fixed share of the block's masked positions, most confident first."""

    NAME: ClassVar[str] = "llada2_fraction"
    SUMMARY: ClassVar[str] = "the ceil(`fraction` x masked left) most confident masked positions"
    REQUEST_KNOBS: ClassVar[Sequence[Knob]] = (Knob("fraction", 0.25, float, 0.0, 1.0, low_open=True),)
    KNOBS: ClassVar[Sequence[Knob]] = (*REQUEST_KNOBS, FOLD_STORE)

    def rule(self, prob: Tensor, masked: Tensor, knobs: StepKnobs) -> tuple[Union[Tensor, float], Union[Tensor, int]]:
        # prob [B, S], masked [B, S] bool, knobs["fraction"] [B] fp32 -> no threshold, k [B] int32
        left = masked.sum(dim=1).to(torch.float32)  # [B]
        k = torch.ceil(knobs["fraction"] * left).clamp(min=1).to(torch.int32)
        return NEVER, k
