"""Mask-to-token algorithms: `llada2_threshold`, `llada2_static`, `llada2_factor`.

Why these exist: SGLang 0.5.23's `LowConfidence.step` materialises softmax over [N, V], does a dozen
small ops and ends with a host sync. These three run every step as two kernels with no host sync
(`confidence`: token and probability per masked position; `select_commit`: per-block choice and
in-place write) plus one `.tolist()` of the [B] done flags, which SGLang's loop needs on the host
(see base.py). They differ only in the per-block `(threshold, k)` handed to `select_commit`, which
commits the masked positions with prob >= threshold, or, when none passes, the k most confident
(ties: lower position first); knob defaults and ranges: README's algorithm table (rendered from
`KNOBS` below):

* `llada2_threshold` (LLaDA2's default; knob `threshold`): threshold, k = 1. Same
  commits as LowConfidence except at prob == threshold exactly (LowConfidence uses `>`).
* `llada2_static` (low-confidence schedule with a fixed count; knob `tokens_per_step`):
  no threshold (+inf), k = tokens_per_step: the n most confident masked positions each step.
* `llada2_factor` (knob `factor`): with c_1 >= c_2 >= ... the sorted confidences of the
  block's masked positions, commit the top n for the largest n with (n + 1) * (1 - c_n) < factor,
  and at least 1. This is the factor-based parallel decoding rule of Fast-dLLM (Wu et al. 2025,
  "Fast-dLLM: Training-free Acceleration of Diffusion LLM by Enabling KV Cache and Parallel
  Decoding", arXiv:2505.22618), which dInfer (github.com/inclusionAI/dInfer) ships as
  `get_transfer_index_dynamic` in python/dinfer/decoding/parallel_strategy.py: per-rank thresholds
  1 - factor / (n + 1), the first one forced. Two deliberate differences from that code: the
  comparison is strict (that code stops at c_n < 1 - f / (n + 1), so it also keeps
  (n + 1)(1 - c_n) == f); and when only the LAST candidate fails, that code still commits it (its
  `top_i == len - 1` branch) -- here it is not. Since c_n falls and 1 - f / (n + 1) rises with n,
  "largest n" is the same as "longest passing prefix".

Per-request knobs (`custom_params: {"dllm": {...}}`, base.py): `threshold`, `tokens_per_step` and
`factor` respectively; each row of a batch commits by its own value.

Folded store (server knob `fold_store`: auto / on / off, base.py and models/folded_blocks.py): a
block is accepted in the step that commits its last mask, and its KV is re-encoded by the request's
next denoising forward instead of a forward of its own. `auto` (the default) folds where denoising
forwards run eagerly, i.e. on our CPU platform; on GPUs SGLang replays CUDA graphs of the plain
denoising forward, which cannot carry the extra blocks, so folding there is opt-in (`on`, and the
folded forwards run eagerly: measure before choosing it).

Control tokens: with a LLaDA2.2 checkpoint's DELETE / SPLIT ids in the DllmConfig, their logits are
excluded (base.py `scored`), so these algorithms never write them.

Sampling: greedy by default; with `sampling: request` each request's temperature / top-k / top-p /
min-p from `forward_batch.sampling_info` (see sampling.py). Each request's `logit_bias` and
repetition / frequency / presence penalties adjust the logits first, in either mode (base.py
`adjusted`). The noise salt of a step is the block's count
of masked positions, which falls at every step (each step commits >= 1 position; only a commit of
the mask id itself, which LowConfidence allows too, would repeat a salt).
"""

from __future__ import annotations

from typing import Any, ClassVar, List, Sequence, Union

import torch

from sglang_llada.algorithms.base import LladaAlgorithm
from sglang_llada.algorithms.knobs import FOLD_STORE, Knob
from sglang_llada.algorithms.rows import StepKnobs
from sglang_llada.constrained.block import admit_commits, constrain_logits
from sglang_llada.kernels.select_commit import select_commit

Tensor = torch.Tensor

NEVER = float("inf")  # a threshold no probability reaches: select_commit falls back to top-k


class UnmaskAlgorithm(LladaAlgorithm):
    """One mask-to-token step; a subclass is its commit rule (`rule`) and its knobs.

    A new mask-to-token decoder is one small class (docs/examples/one_file_decoder/): NAME, SUMMARY,
    KNOBS / REQUEST_KNOBS and `rule`. Everything else -- knob parsing and per-request resolution,
    logit adjustments, constraints, sampling, logprobs and trajectory, the done flags, folding --
    is this step's and base.py's."""

    CONSTRAINS: ClassVar[bool] = True

    def step(self, forward_batch: Any, full_logits: Tensor, states: List[Any]) -> List[bool]:
        b, s = forward_batch.batch_size, self.block_size
        rows = self.rows_of(forward_batch, states)
        masked = self.masked_positions(forward_batch)  # [N]
        n_masked = masked.view(b, s).sum(dim=1)  # [B]
        done = n_masked == 0  # [B], before the commit (base.py: the KV of this forward is final)
        logits = self.adjusted(forward_batch, full_logits, masked)  # logit_bias, penalties
        cons = self.block_constraints(forward_batch)
        if cons is not None:  # regex / json_schema rows: only tokens that keep the output completable
            ids_before = forward_batch.input_ids.view(b, s).tolist()  # host read, constrained batches only
            logits = constrain_logits(logits, ids_before, cons.rows, self.mask_id)
        token, prob = self.scored(logits, masked, **self.sampling(forward_batch, n_masked))
        threshold, k = self.rule(prob.view(b, s), masked.view(b, s), self.step_knobs(forward_batch))
        if not isinstance(threshold, Tensor):
            threshold = self.block_vector(forward_batch, float(threshold), torch.float32)
        if not isinstance(k, Tensor):
            k = self.block_vector(forward_batch, int(k), torch.int32)
        committed, _, written = select_commit(forward_batch.input_ids, token, prob, masked, threshold, k, s)
        if cons is not None:  # commits that are each allowed may not be together: admit them in turn
            committed = admit_commits(forward_batch.input_ids, committed, prob, ids_before, cons.rows, self.mask_id)
            written = ~(masked & ~committed).view(b, s).any(dim=1)
        self.record_logprobs(rows, committed, prob)
        return self.fold_done(done, written)

    def rule(self, prob: Tensor, masked: Tensor, knobs: StepKnobs) -> tuple[Union[Tensor, float], Union[Tensor, int]]:
        """The commit rule, pure: prob [B, S] fp32 (-inf where not masked), masked [B, S] bool, and
        the rows' knobs ([B] each, every row resolved) -> threshold ([B] fp32 or one float) and
        k ([B] int32 or one int): `select_commit` commits the masked positions with prob >=
        threshold, or, where none passes, the k most confident."""
        raise NotImplementedError


class ThresholdAlgorithm(UnmaskAlgorithm):
    """Commit masked positions with confidence >= `threshold`, else the most confident one."""

    NAME: ClassVar[str] = "llada2_threshold"
    SUMMARY: ClassVar[str] = "masked positions with confidence >= `threshold`, else the most confident one"
    REQUEST_KNOBS: ClassVar[Sequence[Knob]] = (Knob("threshold", 0.95, float, 0.0, 1.0),)
    KNOBS: ClassVar[Sequence[Knob]] = (*REQUEST_KNOBS, FOLD_STORE)

    def rule(self, prob: Tensor, masked: Tensor, knobs: StepKnobs) -> tuple[Union[Tensor, float], Union[Tensor, int]]:
        return knobs["threshold"], 1


class StaticAlgorithm(UnmaskAlgorithm):
    """Commit the `tokens_per_step` most confident masked positions (all that remain if fewer)."""

    NAME: ClassVar[str] = "llada2_static"
    SUMMARY: ClassVar[str] = "the `tokens_per_step` most confident masked positions"
    REQUEST_KNOBS: ClassVar[Sequence[Knob]] = (Knob("tokens_per_step", 2, int, 1, None),)
    KNOBS: ClassVar[Sequence[Knob]] = (*REQUEST_KNOBS, FOLD_STORE)

    def rule(self, prob: Tensor, masked: Tensor, knobs: StepKnobs) -> tuple[Union[Tensor, float], Union[Tensor, int]]:
        return NEVER, knobs["tokens_per_step"]


def factor_count(prob: Tensor, masked: Tensor, factor: Union[float, Tensor]) -> Tensor:
    """prob [B, S], masked [B, S] -> [B] int32: the largest n with (n + 1) * (1 - c_n) < factor, >= 1.

    c_n is the n-th highest confidence among the block's masked positions; factor is one number or
    [B] fp32 (one per row). On device, no sync.
    """
    if isinstance(factor, Tensor):
        factor = factor.to(torch.float32).view(-1, 1)
    c = torch.where(masked, prob.to(torch.float32), float("-inf"))
    c_sorted = torch.sort(c, dim=1, descending=True).values  # [B, S], -inf (unmasked) last
    n = torch.arange(1, c.shape[1] + 1, device=c.device, dtype=torch.float32)  # [S]
    ok = (n + 1.0) * (1.0 - c_sorted) < factor  # [B, S]; False on -inf (the product is +inf)
    prefix = torch.cumprod(ok.to(torch.int32), dim=1).sum(dim=1)  # longest passing prefix
    return prefix.clamp(min=1).to(torch.int32)


class FactorAlgorithm(UnmaskAlgorithm):
    """Fast-dLLM / dInfer factor-based parallel decoding (see the module docstring)."""

    NAME: ClassVar[str] = "llada2_factor"
    SUMMARY: ClassVar[str] = (
        "factor-based parallel decoding (Fast-dLLM / dInfer): the n most confident masked positions, "
        "n the largest with (n+1)(1-c_n) < `factor`"
    )
    REQUEST_KNOBS: ClassVar[Sequence[Knob]] = (Knob("factor", 1.0, float, 0.0, None, low_open=True),)
    KNOBS: ClassVar[Sequence[Knob]] = (*REQUEST_KNOBS, FOLD_STORE)

    def rule(self, prob: Tensor, masked: Tensor, knobs: StepKnobs) -> tuple[Union[Tensor, float], Union[Tensor, int]]:
        return NEVER, factor_count(prob, masked, knobs["factor"])
