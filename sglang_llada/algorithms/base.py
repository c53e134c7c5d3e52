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

Per-request state: `init_step_state` gives each request a `RowState`, a row of a batched `Rows`
on the device; SGLang keeps it for the request between FDFO rounds (`req.dllm_algo_state`) and
drops it when the block is done or the request leaves, so nothing is owned elsewhere.

Logprobs: every step records, for the positions it writes, the log of the probability the
position was committed with (the `confidence` kernel's prob: the softmax at temperature 1 when
greedy, the request's tempered / top-k / top-p distribution when sampling) in `Rows.logprobs`
[B, S]; `run` pins the batch's rows on its logits output (attribute `LOGPROBS_ATTR`), and the
scheduler side (`sglang_llada/logprobs.py`) copies them to the host once per round, only for
batches with a `return_logprob` request. A token re-written by an edit step gets the logprob of
its last write.

Shapes: B requests, S = block_size, N = B * S positions, V vocabulary. `fb.input_ids` is [N] int64
and `full_logits` [N, V]; both are row-major by request.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, List, Optional, Sequence

import torch
from sglang.srt.dllm.algorithm.base import DllmAlgorithm
from sglang.srt.dllm.config import DllmConfig

from sglang_llada.algorithms import LOGPROBS_ATTR
from sglang_llada.algorithms.knobs import SAMPLING, Knob, Value, read_knobs
from sglang_llada.algorithms.sampling import SeedCache, sampling_kwargs

Tensor = torch.Tensor


@dataclass
class Rows:
    """Per-request step state of a batch, batched on the device (subclasses add fields)."""

    logprobs: Tensor  # [B, S] fp32: log-prob of each position's last write in this block


@dataclass
class RowState:
    """One request's state: row `index` of a shared `Rows` (what SGLang carries per request)."""

    rows: Any
    index: int


def gather_rows(states: Sequence[RowState]) -> Any:
    """The states' rows as one batch, in order; re-points the states at it.

    Synchronous mode: the rows `init_step_state` built, already in batch order (no copy). FDFO
    mode mixes requests whose states come from different rounds: each field is stacked from the
    states' rows (B small device copies, no host sync).
    """
    first = states[0].rows
    if first.logprobs.shape[0] == len(states) and all(
        st.rows is first and st.index == i for i, st in enumerate(states)
    ):
        return first
    cls = type(first)
    rows = cls(**{
        f.name: torch.stack([getattr(st.rows, f.name)[st.index] for st in states])
        for f in dataclasses.fields(cls)
    })
    for i, st in enumerate(states):
        st.rows, st.index = rows, i
    return rows


class LladaAlgorithm(DllmAlgorithm):
    """Base of our algorithms: reads and validates the knobs, builds the per-step kernel inputs."""

    NAME: ClassVar[str] = "llada2"
    KNOBS: ClassVar[Sequence[Knob]] = ()
    # The scheduler may hand us EXTEND batches of many prompt blocks (sglang_llada/prefill.py).
    whole_prompt_prefill: ClassVar[bool] = True

    def __init__(self, config: DllmConfig):
        super().__init__(config)
        self.knobs: dict[str, Value] = read_knobs(config.algorithm_config, (*self.KNOBS, SAMPLING), self.NAME)
        self.sample_requests = self.knobs["sampling"] == "request"
        self._seed_cache = SeedCache()

    def init_step_state(self, forward_batch: Any) -> List[Any]:
        """One `RowState` per request, all rows of one fresh `Rows` (logprobs zeroed)."""
        b = forward_batch.batch_size
        rows = Rows(logprobs=self.zero_logprobs(forward_batch))
        return [RowState(rows, i) for i in range(b)]

    def zero_logprobs(self, forward_batch: Any) -> Tensor:
        b, device = forward_batch.batch_size, forward_batch.input_ids.device
        return torch.zeros(b, self.block_size, dtype=torch.float32, device=device)

    def rows_of(self, forward_batch: Any, states: List[Any]) -> Any:
        """The batch's per-request rows, in batch order (`gather_rows`); remembered for `run`."""
        if any(st is None for st in states):  # a caller without SGLang's states (unit tests)
            states[:] = self.init_step_state(forward_batch)
        self._last_rows = gather_rows(states)
        return self._last_rows

    def run(self, model_runner: Any, forward_batch: Any, algo_states: Optional[List[Any]] = None) -> Any:
        """SGLang's run loop; then the block's [B, S] logprobs go on the logits output."""
        self._last_rows = None
        out = super().run(model_runner, forward_batch, algo_states)
        if out[0] is not None and self._last_rows is not None:
            setattr(out[0], LOGPROBS_ATTR, self._last_rows.logprobs)
        return out

    def _run_sync(self, model_runner: Any, forward_batch: Any) -> Any:
        if not forward_batch.forward_mode.is_dllm_extend():
            return self._run_prompt_blocks(model_runner, forward_batch)
        return super()._run_sync(model_runner, forward_batch)

    def _run_fdfo(self, model_runner: Any, forward_batch: Any, algo_states: Optional[List[Any]]) -> Any:
        if not forward_batch.forward_mode.is_dllm_extend():
            return self._run_prompt_blocks(model_runner, forward_batch)
        return super()._run_fdfo(model_runner, forward_batch, algo_states)

    def _run_prompt_blocks(self, model_runner: Any, forward_batch: Any) -> Any:
        """An EXTEND batch: full prompt blocks only (many per request), nothing to denoise.

        One forward stores their KV. SGLang's result handling then wants, in FDFO mode, each
        request's last block and an accept length of one block (it re-writes those committed ids
        and emits nothing, the block being prompt); in sync mode, nothing. Prompt logprobs are
        refused at the door (request_policy.py), so the logits processor computes none here.
        """
        forward_batch.return_logprob = False
        out = model_runner.forward(forward_batch, pp_proxy_tensors=None)
        b, s = forward_batch.batch_size, self.block_size
        if not self.fdfo:
            return out.logits_output, [], None, None, out.can_run_graph
        ends, total = [], 0
        for n in forward_batch.extend_seq_lens_cpu:
            total += n
            ends.append(total)
        last = torch.tensor([e - s + j for e in ends for j in range(s)], device=forward_batch.input_ids.device)
        ids = forward_batch.input_ids[last].view(b, s).tolist()  # B * S prompt ids: one small read
        return out.logits_output, ids, [s] * b, [None] * b, out.can_run_graph

    @staticmethod
    def record_logprobs(rows: Any, written: Tensor, prob: Tensor) -> None:
        """written [N] bool, prob [N] fp32: keep log(prob) where this step wrote a token."""
        buf = rows.logprobs  # [B, S]
        lp = torch.log(prob.to(torch.float32).clamp(min=1e-30)).view_as(buf)
        buf.copy_(torch.where(written.view_as(buf), lp, buf))

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
