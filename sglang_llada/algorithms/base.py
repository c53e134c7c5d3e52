"""The shared run loop of our decoders, and what every step shares: knobs, the masked positions,
sampling, logprobs, the done flags.

The run loop (`LladaAlgorithm.run`): SGLang's synchronous / FDFO loop below (or, for a decoder that
folds its final check, folded_check.py's variant of it), with what every decoder gets around it: the
prompt-only forwards (`_run_prompt_blocks`), the folded forwards of fold_store (`_FoldingRunner`),
the count of the run's forwards (`CountingRunner`), and, once the loop ends, the run's one result
for the scheduler: a frozen `ForwardRecord` pinned on the logits output (`_result`), built from the
rows, the runner's count and what the steps reported in the run's `RunTally`. A decoder is its
`step` (a mask-to-token decoder only its commit rule, unmask.py) and its declared knobs.

How SGLang 0.5.23 calls an algorithm (sglang/srt/dllm/algorithm/base.py, `DllmAlgorithm.run`):

* synchronous mode (`--no-dllm-fdfo`): one `run` per block; `states = init_step_state(fb)` once, then
  forward, `done = step(fb, full_logits, states)`, `if all(done): break`, forward, step, ... at most
  `max_steps(block_size)` times. The block's tokens are then read from `fb.input_ids`.
* FDFO mode (`--dllm-fdfo`, SGLang 0.5.23's default): one forward and ONE `step` per `run`; per-request states are carried
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

Folded store (`fold_store`, the mask-to-token algorithms of unmask.py; on by default on our CPU
platform): `done[i]` may then mean "no masked position left after this step's commit". The row's
KV is stale; `run` reports it (`ForwardRecord.stale`, from the last step's two done flags, one host
read: `fold_done`), the scheduler keeps the block out of the radix tree and plans it into the
request's next run (scheduler/folded_store.py), whose first forward re-encodes it beside the new
block (`_FoldingRunner` -> `LLaDA2MoeModelLM.forward_folded`, models/folded_blocks.py). One forward
per block fewer, the same tokens. The editing decoders (edit.py, levenshtein.py) fold their final
check the same way (folded_check.py): a block with no mask left is accepted before its check, which
runs on the logits the next block's forwards compute for it (`FOLDS_CHECKS`: every forward of such a
run may fold); a check that changes the block discards the next block's step and checks again.

Per-request state: `init_step_state` gives each request a `RowState`, a row of a batched `Rows`
on the device; SGLang keeps it for the request between FDFO rounds (`req.dllm_algo_state`) and
drops it when the block is done or the request leaves, so nothing is owned elsewhere.

Trajectory: `Rows` also counts the forwards each row's block has seen (`forward_no`, +1 per step,
in `rows_of`) and, per position, the forward whose logits chose its first and its last write
(`first_at` / `last_at`, in `record_logprobs`); `run` pins both on the logits output beside the
logprobs, and output/trace.py returns them to requests that ask (`custom_params.dllm_trace`).

Logprobs: every step records, for the positions it writes, the log of the probability the
position was committed with (the `confidence` kernel's prob: the softmax at temperature 1 when
greedy, the request's tempered / top-k / top-p distribution when sampling) in `Rows.logprobs`
[B, S]; `run` pins the batch's rows on its logits output (its `ForwardRecord`, sglang_llada.state), and the
scheduler side (`sglang_llada/output/logprobs.py`) copies them to the host once per round, only for
batches with a `return_logprob` request. A token re-written by an edit step gets the logprob of
its last write.

Per-request knobs: a request may override the knobs its algorithm lists in `REQUEST_KNOBS` with
`custom_params: {"dllm": {...}}` (knobs.py; refused with a 400 at the door, in the tokenizer process, by
tokenizer/request_checks.py). `validate_request`, SGLang's scheduler-side check, validates them once
per request into a frozen `RequestKnobs` kept on the request; scheduler/batch_policy.py's hook pins
the rows' records on diffusion batches in which some request sets any (`BatchKnobs`, batch row
order). `row_knobs` turns them into one [B] device tensor per numeric knob (each row: request keys >
the request's `mode` preset > the server's resolved values): host data and one non-blocking
host->device copy, cached while the batch's record is the same (every step of a synchronous run) or
its values are. Rows without knobs get the server's values; a batch in which no
row sets any knob takes the fast path (no host data: the server's values as device fills). A step
reads them all as one frozen `StepKnobs` record (`step_knobs`). Per-row state lives in
`Rows`, so in FDFO mode a row's counters persist between rounds while its knobs are read afresh each
step from the batch's sampling info, which follows the batch's row order.

Request logit adjustments: before scoring, every step passes its logits through `adjusted`, which
applies the requests' `logit_bias` and repetition / frequency / presence penalties in place at the
rows it scores (sampling.py `LogitAdjuster`, kernels/logit_adjust.py); a batch that sets none takes
the fast path (nothing runs). min_p is a sampling filter and travels with `sampling()`.

The mask id is never written: every step scores with its logit column at -inf (`scored`), so the
confidences and logprobs are probabilities among the tokens a step may write.

Control tokens: on a LLaDA2.2 checkpoint (DllmConfig `delete_token_id` / `split_token_id` set) the
DELETE / SPLIT ids are not text; only `llada2_levenshtein` interprets them. The other algorithms score
with those logit columns at -inf (`confidence_excluding`: overwritten in place, restored after the
kernel), so they never write them.

Shapes: B requests, S = block_size, N = B * S positions, V vocabulary. `fb.input_ids` is [N] int64
and `full_logits` [N, V]; both are row-major by request.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, List, Mapping, Optional, Sequence

import torch
from sglang.srt.dllm.algorithm.base import DllmAlgorithm
from sglang.srt.dllm.config import DllmConfig

from sglang_llada.algorithms import FoldPlan, ForwardRecord
from sglang_llada.algorithms.folded_check import FoldedCheck
from sglang_llada.algorithms.knobs import (
    FOLD_STORE,
    SAMPLING,
    BatchKnobs,
    Knob,
    RequestKnobs,
    Value,
    check_request_knobs,
    read_knobs,
    request_knobs_of,
)
from sglang_llada.algorithms.rows import RowKnobCache, Rows, RowState, StepKnobs, gather_rows
from sglang_llada.algorithms.sampling import LogitAdjuster, SeedCache, sampling_kwargs
from sglang_llada.constrained.block import BlockConstraints
from sglang_llada.constrained.request import CONSTRAINT_KEY, constraint_regex
from sglang_llada.kernels.confidence import confidence
from sglang_llada.models.folded_blocks import folded_blocks, folded_forward
from sglang_llada.state import attach, peek

Tensor = torch.Tensor

logger = logging.getLogger(__name__)

NEG_INF = float("-inf")
INT32_MAX = (1 << 31) - 1
FP32_MAX = float(torch.finfo(torch.float32).max)


def confidence_excluding(
    logits: Tensor, live: Tensor, banned: Sequence[tuple[int, Optional[Tensor]]], **kwargs: Any
) -> tuple[Tensor, Tensor]:
    """`confidence(logits, live, **kwargs)` with some logit columns at -inf.

    banned: (column, where) pairs; `where` None bans the column at every position, an [N] bool
    tensor only where it is True. The columns are overwritten in place and restored once the kernel
    is queued (stream order keeps this correct on the GPU); only [N] values are copied, never the
    [N, V] logits. An inference tensor outside inference mode cannot be written, so it is copied
    instead. Columns >= V are ignored.
    """
    v = logits.shape[1]
    banned = [(c, where) for c, where in banned if 0 <= c < v]
    if not banned:
        return confidence(logits, live, **kwargs)
    if logits.is_inference() and not torch.is_inference_mode_enabled():
        logits = logits.clone()
    saved = [logits[:, c].clone() for c, _ in banned]
    try:
        for (c, where), col in zip(banned, saved):
            logits[:, c].copy_(torch.full_like(col, NEG_INF) if where is None else torch.where(where, NEG_INF, col))
        return confidence(logits, live, **kwargs)
    finally:
        for (c, _), col in zip(banned, saved):
            logits[:, c].copy_(col)


def control_token_ids(config: DllmConfig) -> tuple[int, ...]:
    """The DELETE / SPLIT ids of a LLaDA2.2 checkpoint (DllmConfig), other than the mask id; () if none."""
    ids = (getattr(config, "delete_token_id", None), getattr(config, "split_token_id", None))
    return tuple(
        sorted({i for i in ids if isinstance(i, int) and not isinstance(i, bool) and i >= 0 and i != config.mask_id})
    )


@dataclass
class RunTally:
    """What a run's steps report beyond their rows, for its `ForwardRecord` (`LladaAlgorithm._result`):
    llada2_exact's verification forwards, which it runs on the model itself, and the positions they
    computed for each row [B] (host ints)."""

    draft_forwards: int = 0
    extra_positions: Optional[list[int]] = None

    def add_drafts(self, forwards: int, positions: Sequence[int]) -> None:
        self.draft_forwards += forwards
        self.extra_positions = [a + b for a, b in zip(self.extra_positions or [0] * len(positions), positions)]


class CountingRunner:
    """The model runner of a run, counting its `forward` calls; everything else is the runner's."""

    def __init__(self, runner: Any) -> None:
        self._runner = runner
        self.forwards = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.forwards += 1
        return self._runner.forward(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)


class LladaAlgorithm(FoldedCheck, DllmAlgorithm):
    """Base of our algorithms: reads and validates the knobs, builds the per-step kernel inputs."""

    NAME: ClassVar[str] = "llada2"
    # What the algorithm commits per step, in one line of Markdown (README's algorithm table,
    # rendered by sglang_llada/doc_tables.py).
    SUMMARY: ClassVar[str] = ""
    KNOBS: ClassVar[Sequence[Knob]] = ()
    # The knobs a request may set for itself (custom_params.dllm); see the module docstring.
    REQUEST_KNOBS: ClassVar[Sequence[Knob]] = ()
    # The scheduler may hand us EXTEND batches of many prompt blocks (sglang_llada/scheduler/prefill.py).
    whole_prompt_prefill: ClassVar[bool] = True
    # Honours `regex` / `json_schema` (constrained/block.py): the mask-to-token algorithms (unmask.py).
    CONSTRAINS: ClassVar[bool] = False
    # Why a decoder that does not constrain refuses `regex` / `json_schema` (the 400's reason).
    CONSTRAINT_REFUSAL_WHY: ClassVar[str] = "whose edits can rewrite committed tokens"

    # fold_store folds every forward of a run (the editing decoders' checks, folded_check.py), not
    # only the first one (the mask-to-token decoders' stale blocks)
    FOLDS_CHECKS: ClassVar[bool] = False

    def __init__(self, config: DllmConfig):
        super().__init__(config)
        self.knobs: dict[str, Value] = read_knobs(config.algorithm_config, (*self.KNOBS, SAMPLING), self.NAME)
        self.sample_requests = self.knobs["sampling"] == "request"
        self._seed_cache = SeedCache()
        self._adjuster = LogitAdjuster()
        self._knob_cache = RowKnobCache()
        self._warned_knob_rows = False
        # DELETE / SPLIT (LLaDA2.2): never written by this algorithm (levenshtein.py overrides)
        self.control_ids = control_token_ids(config)
        # accept blocks before their KV is final, re-encoded in the next forward (unmask.py,
        # folded_check.py); only for the algorithms whose KNOBS list `fold_store`
        self.fold_store = "fold_store" in self.knobs and resolve_fold(self.knobs["fold_store"])
        self._defer_done = False  # folded_check.py reads a step's flags itself (`step_done`)
        self._step_out: Optional[Tensor] = None
        self._plan: Optional[FoldPlan] = None
        self._folder: Optional[_FoldingRunner] = None
        self._fold_out: Any = None
        self._runner: Any = None  # the run's model runner (`CountingRunner`), while a run lasts
        self._tally = RunTally()

    @classmethod
    def folds(cls, algorithm_config: Any) -> bool:
        """Whether a server with this `--dllm-algorithm-config` folds (its start-up checks)."""
        if not any(k.name == FOLD_STORE.name for k in cls.KNOBS):
            return False
        return resolve_fold(FOLD_STORE.check((algorithm_config or {}).get("fold_store", FOLD_STORE.default), cls.NAME))

    # -- per-request knobs ---------------------------------------------------------------------

    @classmethod
    def check_request_knobs(cls, dllm: Any) -> dict[str, Value]:
        """A request's `custom_params.dllm`, validated (ValueError naming the knob and this algorithm)."""
        return check_request_knobs(dllm, cls.REQUEST_KNOBS, cls.NAME)

    @classmethod
    def request_error(cls, params: Mapping[str, Any]) -> Optional[str]:
        """Why this algorithm cannot honour a request's sampling params (the dict as sent, checked in
        the tokenizer process: a 400), or None. Every algorithm here honours them all but llada2_exact."""
        return None

    @classmethod
    def validate_request(cls, req: Any) -> Optional[str]:
        """SGLang's scheduler-side check, once per request (an error string aborts it with a 400):
        the request's knobs are validated here, whatever the entry point, and kept on it as a frozen
        `RequestKnobs` that every batch it joins carries (scheduler/batch_policy.py); no step parses
        them again."""
        error = super().validate_request(req)
        if error:
            return error
        custom = getattr(req.sampling_params, "custom_params", None)
        try:
            knobs = RequestKnobs.of(cls.request_preset(cls.check_request_knobs(request_knobs_of(custom))))
        except ValueError as exc:
            return str(exc)
        if constraint_regex(custom) is not None and not cls.CONSTRAINS:
            return cls.constraint_refusal()
        if knobs is not None:
            attach(req, knobs)
        return None

    @classmethod
    def constraint_refusal(cls) -> str:
        """The 400 for `regex` / `json_schema` sent to an algorithm that cannot honour them."""
        from sglang_llada.algorithms import algorithm_class, decoder_paths

        able = [name for name in decoder_paths() if algorithm_class(name).CONSTRAINS]
        return (
            f"constrained output (regex / json_schema, custom_params.{CONSTRAINT_KEY}) is decoded by the "
            f"mask-to-token algorithms ({', '.join(able)}); this server decodes with {cls.NAME}, "
            f"{cls.CONSTRAINT_REFUSAL_WHY}: serve with --dllm-algorithm llada2_threshold, or drop the constraint"
        )

    def block_constraints(self, forward_batch: Any) -> Optional[BlockConstraints]:
        """The batch's constrained rows (pinned by scheduler/batch_policy.py), or None when no row
        is constrained (the fast path: the step reads nothing on the host)."""
        cons = peek(getattr(forward_batch, "sampling_info", None), BlockConstraints)
        if cons is None or len(cons.rows) != forward_batch.batch_size or not cons.any():
            return None
        return cons

    @classmethod
    def request_preset(cls, checked: Mapping[str, Value]) -> dict[str, Value]:
        """A request's validated keys as the scheduler keeps them (`validate_request`): the editing
        decoders fill in the request's `mode` preset; the keys themselves here."""
        return dict(checked)

    def resolve_request(self, overrides: Mapping[str, Value]) -> dict[str, Value]:
        """A row's knob values: its validated overrides over the server's resolved knobs."""
        return {**self.knobs, **overrides}

    def row_overrides(self, forward_batch: Any) -> Optional[tuple[Mapping[str, Value], ...]]:
        """Each row's validated knobs ({} for none), from the batch's `BatchKnobs`; None when no row
        sets any, or the record does not match the batch (logged once)."""
        rows = peek(getattr(forward_batch, "sampling_info", None), BatchKnobs)
        if rows is None or not any(rows.rows):
            return None
        if len(rows.rows) != forward_batch.batch_size:
            if not self._warned_knob_rows:
                self._warned_knob_rows = True
                logger.warning(
                    "dLLM algorithm %s: the batch carries knobs for %d requests, it has %d; per-request "
                    "knobs ignored for such batches", self.NAME, len(rows.rows), forward_batch.batch_size,
                )
            return None
        return tuple(r.values if r is not None else {} for r in rows.rows)

    def row_knobs(self, forward_batch: Any) -> Optional[dict[str, Tensor]]:
        """{knob: [B] device tensor (fp32, or int32 for integer knobs)} for every numeric
        REQUEST_KNOB, each row resolved by `resolve_request`; None when no row of the batch sets a
        knob (the fast path). Host data only: no device->host sync."""
        info = getattr(forward_batch, "sampling_info", None)
        batch = peek(info, BatchKnobs)
        if batch is None or not self.REQUEST_KNOBS:
            return None
        device = forward_batch.input_ids.device
        cache = self._knob_cache
        if batch is cache.batch and device == cache.device:
            return cache.values  # the same batch (each diffusion batch gets its record afresh)
        rows = self.row_overrides(forward_batch)
        key = None if rows is None else tuple(tuple(sorted(r.items())) for r in rows)
        if key is None:
            values = None
        elif key == cache.key and device == cache.device:
            values = cache.values
        else:
            values = self._row_tensors(rows or (), device)
        cache.batch, cache.key, cache.device, cache.values = batch, key, device, values
        return values

    def _row_tensors(self, rows: Sequence[Mapping[str, Value]], device: torch.device) -> dict[str, Tensor]:
        knobs = [k for k in self.REQUEST_KNOBS if k.kind is not str]
        resolved = [self.resolve_request(r) for r in rows]

        def number(knob: Knob, value: Value) -> float:
            return float(min(int(value), INT32_MAX)) if knob.kind is int else float(value)

        # one [K, B] fp64 host tensor (exact for int32 and fp32 values), one non-blocking copy
        host = torch.tensor([[number(k, r[k.name]) for r in resolved] for k in knobs], dtype=torch.float64)
        if device.type == "cuda":
            host = host.pin_memory()  # a pageable copy would make the host wait for the stream
        dev = host.to(device, non_blocking=True)
        return {
            k.name: dev[i].to(torch.int32 if k.kind is int else torch.float32) for i, k in enumerate(knobs)
        }

    def step_knobs(self, forward_batch: Any) -> StepKnobs:
        """The batch's knobs for a commit rule: the rows' own (`row_knobs`) where some row sets any,
        the server's values (`block_vector`, a device fill) for every other knob and on the fast path."""
        rows = self.row_knobs(forward_batch)
        numeric = [k.name for k in self.KNOBS if k.kind is not str]
        return StepKnobs(MappingProxyType({
            name: rows[name] if rows is not None and name in rows else self._server_vector(forward_batch, name)
            for name in numeric
        }))

    def _server_vector(self, forward_batch: Any, name: str) -> Tensor:
        """[B]: the server's value of knob `name` for every row (`block_vector`)."""
        value = self.knobs[name]
        if isinstance(value, int):  # int32 on the device: larger budgets / counts mean "all" anyway
            return self.block_vector(forward_batch, min(value, INT32_MAX), torch.int32)
        # fp32 as the row path (`_row_tensors`) converts: a value past fp32's range is +-inf
        v = float(value)
        return self.block_vector(forward_batch, v if abs(v) <= FP32_MAX else math.copysign(math.inf, v), torch.float32)

    def adjusted(self, forward_batch: Any, logits: Tensor, live: Tensor) -> Tensor:
        """The step's logits with the requests' `logit_bias` and repetition / frequency / presence
        penalties applied at the `live` rows ([N] bool: the rows the step scores), in place; the
        logits themselves when no request of the batch sets any (sampling.py `LogitAdjuster`)."""
        return self._adjuster(forward_batch, logits, live, self.mask_id, self.block_size)

    def scored(self, logits: Tensor, live: Tensor, **kwargs: Any) -> tuple[Tensor, Tensor]:
        """`confidence` with the mask id and the control tokens (DELETE / SPLIT, if the checkpoint has
        them) excluded: a committed position must hold a text token. Were the mask id committed, the
        position would still read as masked, and a sampled step that kept drawing it re-ran its block
        without end (seen on the trained toy at temperature 2). The confidence is therefore the
        probability among the tokens a step may write."""
        return confidence_excluding(logits, live, [(c, None) for c in (self.mask_id, *self.control_ids)], **kwargs)

    def init_step_state(self, forward_batch: Any) -> List[Any]:
        """One `RowState` per request, all rows of one fresh `Rows` (logprobs zeroed)."""
        b = forward_batch.batch_size
        rows = Rows(**self.base_row_fields(forward_batch))
        return [RowState(rows, i) for i in range(b)]

    def base_row_fields(self, forward_batch: Any) -> dict[str, Tensor]:
        """The `Rows` fields every algorithm keeps, fresh for a new block (subclasses add theirs)."""
        b, device = forward_batch.batch_size, forward_batch.input_ids.device
        s = self.block_size
        return {
            "logprobs": torch.zeros(b, s, dtype=torch.float32, device=device),
            "forward_no": torch.zeros(b, dtype=torch.int32, device=device),
            "first_at": torch.zeros(b, s, dtype=torch.int32, device=device),
            "last_at": torch.zeros(b, s, dtype=torch.int32, device=device),
        }

    def rows_of(self, forward_batch: Any, states: List[Any]) -> Any:
        """The batch's per-request rows, in batch order (`gather_rows`); remembered for `run`."""
        if any(st is None for st in states):  # a caller without SGLang's states (unit tests)
            states[:] = self.init_step_state(forward_batch)
        self._last_rows = gather_rows(states)
        self._last_rows.forward_no += 1  # every step reads one new forward's logits
        return self._last_rows

    def run(self, model_runner: Any, forward_batch: Any, algo_states: Optional[List[Any]] = None) -> Any:
        """The shared run loop of our decoders: SGLang's synchronous / FDFO loop (or, for the
        editing decoders under fold_store, folded_check.py's), around which this method owns what
        every decoder shares. With `fold_store`, the run's first forward also re-encodes the stale
        blocks the scheduler planned (`_FoldingRunner`), and the rows it accepts early are reported
        stale. It counts the run's forwards (`CountingRunner`) and, once the loop ends, pins the
        run's one result, a frozen `ForwardRecord`, on the logits output (`_result`): the steps only
        report into the run's tally (`RunTally`), never into the record."""
        self._last_rows = None
        self._fold_flags: Optional[list[list[bool]]] = None
        self._fold_out = None
        self._tally = RunTally()
        plan = self._plan = peek(forward_batch, FoldPlan) if self.fold_store else None
        runner = model_runner
        folder: Optional[_FoldingRunner] = None
        if self.fold_store and forward_batch.forward_mode.is_dllm_extend() and (
            self.FOLDS_CHECKS or (plan is not None and plan.rows)
        ):
            runner = folder = _FoldingRunner(model_runner, self.block_size)
            if plan is not None and plan.rows:
                folder.fold_next(plan.rows, plan.token_ids)  # the first forward (folded_check.py may replace it)
        counting = CountingRunner(runner)
        self._folder, self._runner = folder, counting
        try:
            out = super().run(counting, forward_batch, algo_states)
        finally:
            self._plan = self._folder = self._runner = None
        if out[0] is not None:  # LogitsProcessorOutput (or a tensor): both take an attribute
            attach(out[0], self._result(forward_batch, counting.forwards, plan, folder))
        return out

    def _result(
        self, forward_batch: Any, forwards: int, plan: Optional[FoldPlan], folder: Optional[_FoldingRunner]
    ) -> ForwardRecord:
        """The run's `ForwardRecord`, from the runner's count, the tally, the rows and the fold flags."""
        tally, rows, s = self._tally, self._last_rows, self.block_size
        row_positions: Optional[list[int]] = None
        lens = getattr(forward_batch, "extend_seq_lens_cpu", None)
        if lens is not None:  # each row's tokens in each forward, its verification copies, its folded blocks
            extra = tally.extra_positions or [0] * len(lens)
            row_positions = [int(n) * forwards + e for n, e in zip(lens, extra)]
            for r, n in (folder.fold_counts if folder is not None else {}).items():
                row_positions[r] += n * s
        fields: dict[str, Any] = {}
        if plan is not None and folder is not None and folder.fold_counts:
            fields["folded_rows"] = list(plan.rows)
        if self._fold_flags is not None:  # the last step's [before, after] done flags
            before, after = self._fold_flags
            fields["stale"] = [a and not b for b, a in zip(before, after)]
        fields.update(self.fold_result())  # a run that folded checks (folded_check.py): its own fields
        return ForwardRecord(
            logprobs=rows.logprobs if rows is not None else None,
            trace=(rows.first_at, rows.last_at) if rows is not None else None,
            forwards=forwards + tally.draft_forwards,
            row_positions=row_positions,
            **fields,
        )

    def step_done(self, finished: Tensor) -> List[bool]:
        """The end of an editing step: `finished` [B] bool as the done list (one host read), or,
        while folded_check.py runs the step, kept for it to read with the block (`_step_out`)."""
        if self._defer_done:
            self._step_out = finished
            return []
        return done_list(finished)

    def fold_done(self, done_before: Tensor, done_after: Tensor) -> List[bool]:
        """A step's done flags: `done_before` [B] (no mask left before its commit: the forward saw
        the block final), or with `fold_store` `done_after` [B] (none left after it), remembering
        both for `run` (one host read either way)."""
        if not self.fold_store:
            return done_list(done_before)
        flags = torch.stack([done_before, done_after]).tolist()
        self._fold_flags = flags
        return flags[1]

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
        refused at the door (tokenizer/request_checks.py), so the logits processor computes none here.
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
        """written [N] bool, prob [N] fp32: keep log(prob) where this step wrote a token, and the
        number of the forward whose logits chose it (the trajectory, output/trace.py)."""
        buf = rows.logprobs  # [B, S]
        w = written.view_as(buf)
        lp = torch.log(prob.to(torch.float32).clamp(min=1e-30)).view_as(buf)
        buf.copy_(torch.where(w, lp, buf))
        at = rows.forward_no[:, None]  # [B, 1]
        rows.first_at.copy_(torch.where(w & (rows.first_at == 0), at, rows.first_at))
        rows.last_at.copy_(torch.where(w, at, rows.last_at))

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


class _FoldingRunner:
    """The model runner of a run that folds blocks (models/folded_blocks.py): a forward after
    `fold_next(rows, tokens)` is a folded one, whose layout travels on the forward batch (with
    `logits`, the folded blocks' logits are kept in `folded_logits`); every other call is the
    runner's own. `fold_counts`: {batch row: forwards that folded its previous block}."""

    def __init__(self, runner: Any, block_size: int) -> None:
        self._runner = runner
        self._block_size = block_size
        self._next: Optional[tuple[list[int], Any, bool]] = None
        self.folded_logits: Optional[Tensor] = None
        self.fold_counts: dict[int, int] = {}

    def fold_next(self, rows: Sequence[int], token_ids: Any, logits: bool = False) -> None:
        """The next forward folds the block before the current one of each of `rows`, as
        `token_ids` ([F][S] host ints or an [F * S] device tensor)."""
        self._next = (list(rows), token_ids, logits)

    def forward(self, forward_batch: Any, *args: Any, **kwargs: Any) -> Any:
        spec, self._next = self._next, None
        self.folded_logits = None
        if spec is None or not spec[0]:
            return self._runner.forward(forward_batch, *args, **kwargs)
        rows, token_ids, want_logits = spec
        model = self._runner.model
        if not hasattr(model, "forward_folded"):
            raise RuntimeError(
                f"fold_store needs sglang-llada's LLaDA2MoeModelLM (its folded forward); the model is "
                f"{type(model).__name__}: set fold_store: off in --dllm-algorithm-config"
            )
        prefix = forward_batch.extend_prefix_lens_cpu
        layout = folded_blocks(
            self._runner.req_to_token_pool.req_to_token,
            forward_batch.req_pool_indices,
            list(prefix) if prefix is not None else forward_batch.extend_prefix_lens.tolist(),
            rows,
            token_ids,
            self._block_size,
        )
        # called directly, not through ModelRunner.forward: that copies the forward batch (so the
        # layout would not reach the model) and may replay a CUDA graph of a plain forward
        logits, self.folded_logits = in_forward_context(
            self._runner, forward_batch, lambda m: folded_forward(m, forward_batch, layout, want_logits)
        )
        for r in rows:
            self.fold_counts[r] = self.fold_counts.get(r, 0) + 1
        # SGLang logs one line per scheduler forward with the batch's own tokens; these ride along
        # (bench/forwards_bench.py reads it)
        n = len(rows)
        logger.info("fold_store: %d finished block%s re-encoded, %d positions", n, "" if n == 1 else "s", n * self._block_size)
        from sglang.srt.model_executor.model_runner import ModelRunnerOutput

        return ModelRunnerOutput(logits_output=logits, can_run_graph=False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)


def _eager_platform() -> bool:
    from sglang_llada.platform import activate

    return activate() is not None


def resolve_fold(value: Any) -> bool:
    """`fold_store`'s value (knobs.FOLD_STORE) -> whether the algorithm folds."""
    return value == "on" or (value == "auto" and _eager_platform())


def in_forward_context(model_runner: Any, forward_batch: Any, call: Any) -> Any:
    """`call(model)` inside a forward context as `ModelRunner.forward` publishes one (the attention
    layers find the KV pool through it): for the forwards our algorithms run on the model directly."""
    from sglang.srt.model_executor.forward_context import (
        ForwardContext,
        forward_context,
        get_forward_context,
        has_forward_context,
    )

    ctx = get_forward_context() if has_forward_context() else ForwardContext(attn_backend=model_runner.attn_backend)
    with forward_context(ctx, forward_batch=forward_batch):
        return call(model_runner.model)


def done_list(done: Tensor) -> List[bool]:
    """[B] bool -> list: the step's single device->host copy (see the module docstring)."""
    return done.tolist()
