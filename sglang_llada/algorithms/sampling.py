"""Per-request sampling arguments of the `confidence` kernel, and the requests' logit adjustments,
built from SGLang's ForwardBatch.

Why this exists: the kernel samples per row (Gumbel-max with a counter-based hash, no host sync) and
needs, for each of the N = B * S block positions, a temperature, optional top-k / top-p / min-p, a
seed and a noise counter ("offset"). SGLang 0.5.23 keeps the per-request parameters on
`forward_batch.sampling_info` (a `SamplingBatchInfo`), built by `SamplingBatchInfo.from_schedule_batch`:

    temperatures [B, 1] fp32   top_ps [B] fp32   top_ks [B] int32 (TOP_K_ALL = 2**30: no filter)
    min_ps [B] fp32            logit_bias [B, V] fp32 or None (dense, zeros where a request sets none)
    sampling_seed [B] int64 or None (only set under --enable-deterministic-inference)
    is_all_greedy, need_top_p_sampling, need_top_k_sampling, need_min_p_sampling: host bools
    penalizer_orchestrator: the batch's penalizers (frequency / presence / repetition / min_new_tokens)

A request with temperature 0 reaches the batch as temperature 1.0 with top_k = 1
(`SamplingParams.normalize`), so "greedy" here means top_k <= 1, as in SGLang's own sampler.

Seeds: `sampling_seed` [B] when the batch carries it (SGLang sets it under
`--enable-deterministic-inference`; our scheduler/batch_policy.py hook sets it for diffusion batches with a
seeded request), otherwise a stable 64-bit hash of the request id (the same blake2b hash SGLang uses
for `rids_int`), computed on the host once per batch composition and copied to the device without
blocking.

Offsets (the noise counter): absolute position * 2**16 + a per-block step salt given by the caller,
so a position draws fresh noise at every step of its block and the draws do not depend on which
other requests share the batch.

min_p (`sampling_kwargs`): handed to the kernel per position when `need_min_p_sampling`; it keeps
the tokens with p >= min_p * p_max, in sampled rows only -- as SGLang's sampler, whose greedy rows
take the argmax (which always passes min-p anyway).

min_new_tokens (`LogitAdjuster`): as SGLang's BatchedMinNewTokensPenalizer for autoregressive
decoding, a request's stop tokens (its stop_token_ids, the model's EOS ids, the tokenizer's) get
-inf at its first min_new_tokens output positions, so no stop token ends it earlier; stop strings
are not affected (nor are they in SGLang). A block is decoded in any order, so the ban is by output
position (absolute position - prompt length), not by how many tokens were written so far.

Logit adjustments (`LogitAdjuster`, called by every algorithm on the step's logits before the
kernel, whatever the `sampling` knob): `logit_bias` and the frequency / presence / repetition
penalties, applied in place by kernels/logit_adjust.py with SGLang's formulas and order (see that
module). The token chosen, its confidence (which decides what is committed) and its logprob then
all come from the adjusted distribution.

* Which tokens are "seen" -- SGLang's semantics: the penalties count the request's OUTPUT tokens
  (SGLang's penalizers start from zero counts and accumulate only sampled tokens,
  `cumulate_output_tokens`; the prompt is not counted -- as OpenAI's frequency / presence
  penalties, unlike vLLM / HF's repetition penalty). For a diffusion step that is: the tokens the
  request committed in earlier blocks (`req.output_ids`) plus the tokens already written at the
  other output positions of the current block, wherever they are (later positions included: a
  block is decoded in any order). The position's own current token is not counted for itself (a
  re-decoded position of `llada2_edit` would otherwise be pushed away from the token it holds).
  Prompt positions of the block (the prompt tail of a request's first block) do not count.
* Where the counts live: `counts` [B, V] int32 on the device, one row per request of the batch,
  built from the scheduler's `Req` objects, which the batch's `sampling_info.penalizer_orchestrator`
  reaches (`orchestrator.reqs()`: the ScheduleBatch's requests, in row order; SGLang's dLLM path
  runs without the overlap scheduler, so the forward batch carries the scheduler's own
  SamplingBatchInfo). Host data only: the requests' output ids, concatenated, plus their prompt
  lengths and penalties, go to the device in two non-blocking copies (pinned on CUDA) and are
  scattered into a zeroed [B, V] (no device->host sync). SGLang builds a fresh batch for every
  diffusion round, so there is nothing to keep up to date and nothing to evict: the counts are
  rebuilt when the batch's (request, output length, penalties) key changes -- once per block in
  synchronous mode (every step of a run sees the same batch), and in FDFO mode whenever a request
  of the batch finished a block. Each step then adds the block's written output tokens to a copy
  (`scatter_add` of the B x S block into a [B, V] clone) and passes each position's own token so
  that the kernel leaves it out.
* Cost, only when some request of the batch sets a penalty: memory 2 x B x V int32 (the counts and
  the step's copy: 40 MB at B = 32, V = 157,184); per rebuild, O(total output tokens) host work and
  one B x V fill; per step, one B x V copy + scatter and the adjust kernel's read + write of the
  scored rows of the requests that use a parameter (plus their request's counts / bias rows, which
  the S rows of a request share): about twice the logits traffic of the `confidence` kernel, for
  those rows only (the rows of the other requests are skipped). `logit_bias` costs only the
  kernel: SGLang already holds it as a dense [B, V] tensor. A batch in which no request sets any of
  them takes the fast path: a few attribute reads on the host, no device work.
  bench/logit_adjust_bench.py times each part (bench/results/logit_adjust_bench.md).

The mask id needs nothing here: every algorithm scores with the mask column at -inf (base.py
`scored`), so neither a `logit_bias` on it nor a negative penalty can make a step write it.

Not applied here: grammars and custom logit processors (the request front end refuses both). If a batch sets penalties but carries no penalizer
orchestrator (an SGLang that ran the dLLM path under the overlap scheduler, which hands the forward
a copy without it), the penalties cannot be reached and are skipped with a warning, once.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from sglang_llada.kernels.logit_adjust import Penalties, logit_adjust

Tensor = torch.Tensor

logger = logging.getLogger(__name__)

OFFSET_STRIDE = 1 << 16  # step salts stay below this (block sizes and edit steps are far smaller)


def per_position(values: Tensor, block_size: int) -> Tensor:
    """[B] -> [B * S]: each request's value repeated over its block positions."""
    b = values.shape[0]
    return values.reshape(b, 1).expand(b, block_size).reshape(-1)


def rid_seed(rid: str) -> int:
    digest = hashlib.blake2b(rid.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


class SeedCache:
    """[B] int64 seeds per request on the device, rebuilt only when the batch's request ids change.

    In the synchronous loop every step of a run sees the same requests, so the host hash and the
    host->device copy happen once per run, not once per step.
    """

    def __init__(self) -> None:
        self._key: Optional[tuple[Any, ...]] = None
        self._seeds: Optional[Tensor] = None

    def seeds(self, forward_batch: Any, device: torch.device) -> Tensor:
        info = getattr(forward_batch, "sampling_info", None)
        explicit = getattr(info, "sampling_seed", None)
        b = forward_batch.batch_size
        if explicit is not None:
            return explicit.reshape(-1)[:b].to(device=device, dtype=torch.int64)
        rids = list(getattr(forward_batch, "rids", None) or [str(i) for i in range(b)])[:b]
        key = (tuple(rids), device)
        if key != self._key or self._seeds is None:
            host = torch.tensor([rid_seed(str(r)) for r in rids], dtype=torch.int64)
            if device.type == "cuda":
                host = host.pin_memory()  # a pageable copy would make the host wait for the stream
            self._seeds = host.to(device, non_blocking=True)
            self._key = key
        return self._seeds


def _offsets(forward_batch: Any, n: int, block_size: int, step_salt: Tensor) -> Tensor:
    """[B * S] int64 noise counters: absolute position * OFFSET_STRIDE + the block's step salt."""
    device = step_salt.device
    positions = getattr(forward_batch, "positions", None)
    if positions is None or positions.numel() < n:
        positions = torch.arange(n, device=device)
    return positions[:n].to(torch.int64) * OFFSET_STRIDE + per_position(step_salt.to(torch.int64), block_size)


def sampling_kwargs(
    forward_batch: Any,
    block_size: int,
    step_salt: Tensor,
    seed_cache: SeedCache,
) -> dict[str, Optional[Tensor]]:
    """Keyword arguments of `confidence(...)` for the batch's per-request sampling parameters.

    step_salt [B] int: distinct for each step of a block (see the module docstring). Returns {}
    (greedy for every row) when the batch carries no sampling info or every request is greedy.
    """
    info = getattr(forward_batch, "sampling_info", None)
    if info is None or getattr(info, "is_all_greedy", False):
        return {}
    b = forward_batch.batch_size
    n = b * block_size
    device = step_salt.device
    top_ks = info.top_ks.reshape(-1)[:b]
    temperature = info.temperatures.reshape(-1)[:b].to(torch.float32)
    temperature = torch.where((top_ks <= 1) | (temperature <= 0), 0.0, temperature)  # [B], 0: greedy
    top_k = per_position(top_ks, block_size) if getattr(info, "need_top_k_sampling", True) else None
    top_p = per_position(info.top_ps.reshape(-1)[:b], block_size) if getattr(info, "need_top_p_sampling", True) else None
    min_ps = getattr(info, "min_ps", None)
    min_p = (
        per_position(min_ps.reshape(-1)[:b], block_size)
        if min_ps is not None and getattr(info, "need_min_p_sampling", False)
        else None
    )
    return {
        "temperature": per_position(temperature, block_size),
        "top_k": top_k,
        "top_p": top_p,
        "seeds": per_position(seed_cache.seeds(forward_batch, device), block_size),
        "offsets": _offsets(forward_batch, n, block_size, step_salt),
        "min_p": min_p,
    }


# ----------------------------------------------------------------------------------------------
# logit_bias and penalties (see the module docstring)
# ----------------------------------------------------------------------------------------------


def _to_device(host: Tensor, device: torch.device) -> Tensor:
    if device.type == "cuda":
        host = host.pin_memory()  # a pageable copy would make the host wait for the stream
    return host.to(device, non_blocking=True)


def batch_requests(info: Any) -> Optional[Sequence[Any]]:
    """The scheduler's Req objects of the batch, in row order, through its penalizer orchestrator;
    None when the batch carries none (no orchestrator, or its batch is gone)."""
    orchestrator = getattr(info, "penalizer_orchestrator", None)
    if orchestrator is None:
        return None
    try:
        return orchestrator.reqs()
    except Exception:  # the weakly referenced ScheduleBatch was released
        return None


def request_penalties(req: Any) -> tuple[float, float, float]:
    """(frequency, presence, repetition) of a request; (0, 0, 1) is "none"."""
    sp = req.sampling_params
    return (
        float(getattr(sp, "frequency_penalty", 0.0) or 0.0),
        float(getattr(sp, "presence_penalty", 0.0) or 0.0),
        float(getattr(sp, "repetition_penalty", 1.0) or 1.0),
    )


@dataclass
class _BatchPenalties:
    """A batch's penalty inputs on the device, built once per (requests, output lengths) key."""

    key: Any
    counts: Tensor  # [B, V] int32: each request's output tokens of earlier blocks
    prompt_lens: Tensor  # [B] int64
    frequency: Tensor  # [B] fp32
    presence: Tensor  # [B] fp32
    repetition: Tensor  # [B] fp32
    active: Tensor  # [B] bool: the request sets a penalty


@dataclass
class _BatchMinNew:
    """A batch's `min_new_tokens` inputs on the device, built once per (requests, values) key."""

    key: Any
    prompt_lens: Tensor  # [B] int64
    min_new: Tensor  # [B] int64 (0: none)
    stop_ids: Tensor  # [B, K] int64: the request's stop tokens, padded with its first one (0 if none)
    has_stop: Tensor  # [B] bool: the request has at least one stop token in the vocabulary


def request_stop_ids(req: Any) -> set[int]:
    """The tokens `min_new_tokens` keeps out of a request's first outputs: as SGLang's
    BatchedMinNewTokensPenalizer, its stop_token_ids, the model's EOS ids and the tokenizer's."""
    tok = getattr(req, "tokenizer", None)
    ids = set(getattr(req.sampling_params, "stop_token_ids", None) or ())
    ids |= set(getattr(req, "eos_token_ids", None) or ())
    ids |= set(getattr(tok, "additional_stop_token_ids", None) or ())
    eos = getattr(tok, "eos_token_id", None)
    if eos is not None:
        ids.add(eos)
    return {int(i) for i in ids if i is not None}


class LogitAdjuster:
    """Applies the batch's `logit_bias`, repetition / frequency / presence penalties and
    `min_new_tokens` to a step's logits (in place, live rows only; see the module docstring). One per
    algorithm instance."""

    def __init__(self) -> None:
        self._min_new: Optional[_BatchMinNew] = None
        self._penalties: Optional[_BatchPenalties] = None
        self._bias_src: Optional[Tensor] = None  # the batch's logit_bias the two below come from
        self._bias: Optional[Tensor] = None  # [B, V] fp32, padded / cut to the logits' width
        self._bias_active: Optional[Tensor] = None  # [B] bool: the request's row is not all zero
        self._warned = False

    def __call__(self, forward_batch: Any, logits: Tensor, live: Tensor, mask_id: int, block_size: int) -> Tensor:
        """logits [B*S, V] (adjusted in place, or a copy when they cannot be written), live [B*S]
        bool: the rows the step scores. Returns the logits to score."""
        info = getattr(forward_batch, "sampling_info", None)
        if info is None:
            return logits
        b, v = forward_batch.batch_size, logits.shape[1]
        bias, bias_active = self._batch_bias(info, b, v)
        pens = self._batch_penalties(info, b, v, logits.device)
        if pens is None:
            self._penalties = None  # do not hold an earlier batch's [B, V] counts
        min_new = self._batch_min_new(info, b, v, logits.device)
        if bias is None and pens is None and min_new is None:
            return logits  # the fast path
        if logits.is_inference() and not torch.is_inference_mode_enabled():
            logits = logits.clone()  # an inference tensor cannot be written outside inference mode
        if min_new is not None:
            self._ban_early_stops(forward_batch, logits, live, min_new, block_size)
        if bias is None and pens is None:
            return logits
        active = bias_active if pens is None else (pens.active if bias_active is None else pens.active | bias_active)
        assert active is not None  # bias or penalties are set (else the fast path above)
        rows = live & per_position(active, block_size)
        penalties = self_token = None
        if pens is not None:
            counts, self_token = self._step_counts(forward_batch, pens, mask_id, block_size, v)
            penalties = Penalties(counts, pens.frequency, pens.presence, pens.repetition)
        return logit_adjust(logits, rows, block_size, penalties, self_token, bias)

    # -- min_new_tokens --------------------------------------------------------------------------

    def _batch_min_new(self, info: Any, b: int, v: int, device: torch.device) -> Optional[_BatchMinNew]:
        orchestrator = getattr(info, "penalizer_orchestrator", None)
        if orchestrator is None or not getattr(orchestrator, "is_required", False):
            self._min_new = None
            return None  # SGLang requires its penalizers when a request sets min_new_tokens
        reqs = batch_requests(info)
        mins = [int(getattr(r.sampling_params, "min_new_tokens", 0) or 0) for r in reqs] if reqs is not None else []
        if reqs is None or len(reqs) != b or not any(m > 0 for m in mins):
            self._min_new = None
            return None
        key = (tuple((id(r), str(r.rid), len(r.origin_input_ids)) for r in reqs), tuple(mins), v, device)
        if self._min_new is not None and self._min_new.key == key:
            return self._min_new
        stops = [sorted(i for i in request_stop_ids(r) if 0 <= i < v) if m > 0 else [] for r, m in zip(reqs, mins)]
        k = max(1, max(len(s) for s in stops))
        padded = [s + [s[0]] * (k - len(s)) if s else [0] * k for s in stops]  # duplicates write the same value
        ints = torch.tensor([[len(r.origin_input_ids) for r in reqs], mins, [bool(s) for s in stops]], dtype=torch.int64)
        ints, ids = _to_device(ints, device), _to_device(torch.tensor(padded, dtype=torch.int64), device)
        self._min_new = _BatchMinNew(key, ints[0], ints[1], ids, ints[2].bool())
        return self._min_new

    @staticmethod
    def _ban_early_stops(forward_batch: Any, logits: Tensor, live: Tensor, mn: _BatchMinNew, block_size: int) -> None:
        """Stop tokens at -inf at the live positions whose output index is below the request's
        min_new_tokens (output index = absolute position - prompt length; a block is decoded in any
        order, so the ban is by position, not by how many tokens were written so far)."""
        b, s = mn.min_new.shape[0], block_size
        positions = getattr(forward_batch, "positions", None)
        if positions is None or positions.numel() < b * s:
            raise RuntimeError("min_new_tokens needs the batch's positions, which this forward batch does not carry")
        out_index = positions[: b * s].view(b, s).to(torch.int64) - mn.prompt_lens[:, None]  # [B, S]
        early = (out_index < mn.min_new[:, None]) & mn.has_stop[:, None] & live.view(b, s)  # [B, S]
        cols = mn.stop_ids[:, None, :].expand(b, s, mn.stop_ids.shape[1]).reshape(b * s, -1)  # [N, K]
        current = logits.gather(1, cols)
        logits.scatter_(1, cols, torch.where(early.view(-1, 1), float("-inf"), current))

    # -- logit_bias ------------------------------------------------------------------------------

    def _batch_bias(self, info: Any, b: int, v: int) -> tuple[Optional[Tensor], Optional[Tensor]]:
        src = getattr(info, "logit_bias", None)
        if src is None:
            self._bias_src = self._bias = self._bias_active = None  # nor its [B, V] bias
            return None, None
        if src is not self._bias_src or self._bias is None or self._bias.shape != (b, v):
            bias = src[:b].to(torch.float32)
            if bias.shape[1] < v:  # logits padded past the tokenizer's vocabulary
                bias = torch.nn.functional.pad(bias, (0, v - bias.shape[1]))
            bias = bias[:, :v].contiguous()
            self._bias_src, self._bias, self._bias_active = src, bias, (bias != 0).any(dim=1)
        return self._bias, self._bias_active

    # -- penalties -------------------------------------------------------------------------------

    def _batch_penalties(self, info: Any, b: int, v: int, device: torch.device) -> Optional[_BatchPenalties]:
        orchestrator = getattr(info, "penalizer_orchestrator", None)
        if orchestrator is None:
            if not self._warned and (
                getattr(info, "acc_additive_penalties", None) is not None
                or getattr(info, "acc_scaling_penalties", None) is not None
            ):
                self._warned = True
                logger.warning(
                    "dLLM decoding: the batch sets frequency / presence / repetition penalties but carries no "
                    "penalizer orchestrator (overlap scheduler?); the penalties are NOT applied"
                )
            return None
        if not getattr(orchestrator, "is_required", False):
            return None  # no request sets a penalty: nothing on the host to look at
        reqs = batch_requests(info)
        if reqs is None or len(reqs) != b:
            if not self._warned:
                self._warned = True
                logger.warning(
                    "dLLM decoding: cannot read the batch's requests (%s for %d rows); penalties NOT applied",
                    None if reqs is None else len(reqs), b,
                )
            return None
        params = [request_penalties(r) for r in reqs]
        if all(p == (0.0, 0.0, 1.0) for p in params):
            return None  # e.g. only min_new_tokens
        key = (
            tuple((id(r), str(r.rid), len(r.origin_input_ids), len(r.output_ids)) for r in reqs),
            tuple(params), v, device,
        )
        cached = self._penalties
        if cached is not None and cached.key == key:
            return cached
        lens = [len(r.output_ids) for r in reqs]
        flat = [t for r in reqs for t in r.output_ids]
        ints = torch.tensor([len(r.origin_input_ids) for r in reqs] + lens + flat, dtype=torch.int64)
        floats = torch.tensor([list(col) for col in zip(*params)], dtype=torch.float32)  # [3, B]
        ints, floats = _to_device(ints, device), _to_device(floats, device)
        counts = torch.zeros(b * v, dtype=torch.int32, device=device)
        if flat:  # host-known: the batch has output tokens
            ids = ints[2 * b :]
            row = torch.repeat_interleave(
                torch.arange(b, device=device), ints[b : 2 * b], output_size=len(flat)
            )
            ok = (ids >= 0) & (ids < v)
            counts.index_add_(0, torch.where(ok, row * v + ids, 0), ok.to(torch.int32))
        frequency, presence, repetition = floats[0], floats[1], floats[2]
        self._penalties = _BatchPenalties(
            key=key,
            counts=counts.view(b, v),
            prompt_lens=ints[:b],
            frequency=frequency,
            presence=presence,
            repetition=repetition,
            active=(frequency != 0) | (presence != 0) | (repetition != 1),
        )
        return self._penalties

    @staticmethod
    def _step_counts(
        forward_batch: Any, pens: _BatchPenalties, mask_id: int, block_size: int, v: int
    ) -> tuple[Tensor, Tensor]:
        """The counts of this step ([B, V] int32: earlier blocks + the block's written output
        tokens) and each position's own token ([B*S] int64, -1 where it holds none)."""
        b, s = pens.counts.shape[0], block_size
        ids = forward_batch.input_ids.view(b, s)
        positions = getattr(forward_batch, "positions", None)
        if positions is None or positions.numel() < b * s:
            out = torch.zeros(b, s, dtype=torch.bool, device=ids.device)  # unknown: count none
        else:
            out = positions[: b * s].view(b, s).to(torch.int64) >= pens.prompt_lens[:, None]
        written = out & (ids != mask_id) & (ids >= 0) & (ids < v)  # [B, S]
        counts = pens.counts.clone()
        counts.scatter_add_(1, torch.where(written, ids, 0), written.to(torch.int32))
        return counts, torch.where(written, ids, -1).reshape(-1)
