"""What our decoding algorithms share: knobs, the masked positions, sampling, the done flags.

How SGLang 0.5.23 calls an algorithm (sglang/srt/dllm/algorithm/base.py, `DllmAlgorithm.run`):

* synchronous mode (default): one `run` per block; `states = init_step_state(fb)` once, then
  forward, `done = step(fb, full_logits, states)`, `if all(done): break`, forward, step, ... at most
  `max_steps(block_size)` times. The block's tokens are then read from `fb.input_ids`.
* FDFO mode (`--dllm-fdfo`): one forward and ONE `step` per `run`; per-request states are carried
  between runs (`req.dllm_algo_state`) until that request's `done` is True, and fresh rows get
  `init_step_state(fb)[i]`. `done[i]` decides `accept_length = block_size if done[i] else 0`.

So `step` must return a python sequence of B bools that the caller iterates on the host (`all(done)`,
`done[i]`): one device->host copy per step is unavoidable. Every algorithm here computes `done` as a
[B] bool tensor and converts it with a single `.tolist()` as the very last operation of `step`
(after the commit kernels are queued); nothing else in a step reads device data on the host.

`done[i]` means "the forward that produced these logits already saw block i in its final state",
i.e. no masked position was left BEFORE this step's commit (LowConfidence's semantics). It must
not mean "no masked position left after the commit" -- the `done` that `select_commit` returns: the
KV cache keeps the K/V of the last forward, which were computed with mask tokens at the positions
committed by this step, and the next block would attend to them. Hence the extra forward per block
(counted in `dllm_forwards`), as in SGLang.

Shapes: B requests, S = block_size, N = B * S positions, V vocabulary. `fb.input_ids` is [N] int64
and `full_logits` [N, V]; both are row-major by request.
"""

from __future__ import annotations

from typing import Any, ClassVar, List, Sequence

import torch
from sglang.srt.dllm.algorithm.base import DllmAlgorithm
from sglang.srt.dllm.config import DllmConfig

from sglang_llada.algorithms.knobs import SAMPLING, Knob, Value, read_knobs
from sglang_llada.algorithms.sampling import SeedCache, sampling_kwargs

Tensor = torch.Tensor


class LladaAlgorithm(DllmAlgorithm):
    """Base of our algorithms: reads and validates the knobs, builds the per-step kernel inputs."""

    NAME: ClassVar[str] = "llada2"
    KNOBS: ClassVar[Sequence[Knob]] = ()

    def __init__(self, config: DllmConfig):
        super().__init__(config)
        self.knobs: dict[str, Value] = read_knobs(config.algorithm_config, (*self.KNOBS, SAMPLING), self.NAME)
        self.sample_requests = self.knobs["sampling"] == "request"
        self._seed_cache = SeedCache()

    def masked_positions(self, forward_batch: Any) -> Tensor:
        """[N] bool: positions holding the mask token that are not prompt (as LowConfidence.step).

        `dllm_prompt_mask` [B, S] is set by SGLang only when a committed token is a literal mask id.
        """
        masked = forward_batch.input_ids == self.mask_id
        prompt = getattr(forward_batch, "dllm_prompt_mask", None)
        if prompt is not None:
            masked = masked & ~prompt.reshape(-1)
        return masked

    def sampling(self, forward_batch: Any, step_salt: Tensor) -> dict[str, Any]:
        """`confidence(...)` keyword arguments: {} (greedy) unless `sampling: request`."""
        if not self.sample_requests:
            return {}
        return sampling_kwargs(forward_batch, self.block_size, step_salt, self._seed_cache)

    def block_vector(self, forward_batch: Any, value: float, dtype: torch.dtype) -> Tensor:
        """[B] tensor filled with `value` on the batch's device (a device fill, no transfer)."""
        return torch.full((forward_batch.batch_size,), value, dtype=dtype, device=forward_batch.input_ids.device)


def done_list(done: Tensor) -> List[bool]:
    """[B] bool -> list: the step's single device->host copy (see the module docstring)."""
    return done.tolist()
