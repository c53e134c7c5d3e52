"""What each row of a diffusion batch carries for the algorithms: its decoding knobs, its seed and its
output constraint.

One AFTER hook on `SamplingBatchInfo.from_schedule_batch` (`from_schedule_batch_after`) puts them on
the batch, in that order.

Per-request decoding knobs: SGLang 0.5.23 copies the requests' custom_params onto the batch
(`SamplingBatchInfo.custom_params`) only for custom logit processors, and a diffusion server refuses
those. Each request's knobs (`custom_params.dllm`) were validated once, by the scheduler's check
(`LladaAlgorithm.validate_request`), into a frozen `RequestKnobs` on the request; the hook pins the
rows' records on diffusion batches in which some request sets knobs, as one `BatchKnobs` in row order
(SGLang builds every diffusion batch afresh each round, never merges them).

Seeds: SGLang 0.5.23 puts the requests' `sampling_seed` on the batch (`SamplingBatchInfo.sampling_seed`,
[B] int64) only under `--enable-deterministic-inference`; otherwise the field is None and a seed
in the request has no effect. Our algorithms sample with a counter-based hash keyed by that seed
(algorithms/sampling.py), so this AFTER hook on `SamplingBatchInfo.from_schedule_batch` fills the
field for diffusion batches in which some request carries a seed: the request's seed, or, for a
request without one, the same hash of its request id the algorithms use by default (so unseeded
requests keep drawing different noise). The same seed and prompt then give the same output,
whatever else is in the batch (the noise also depends only on the position and the step).

Constraints: a request with `regex` / `json_schema` carries one regex in `custom_params`
(constrained/request.py, put there by the tokenizer process). For each block, the hook compiles it
into a token automaton over the request's tokenizer (constrained/grammar.py, cached per pattern),
walks the request's output so far from where it last stopped (`ConstraintProgress` on the Req: a
block's worth of dict lookups per round), and pins a `RowConstraint` per row on the batch
(`BlockConstraints`), which the mask-to-token algorithms apply at every step. The first block of a
new pattern compiles it here, in the scheduler: outlines' index over the vocabulary (timed in
bench/constrained_bench.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from sglang_llada.algorithms.knobs import BatchKnobs, RequestKnobs
from sglang_llada.constrained.block import BlockConstraints, RowConstraint
from sglang_llada.constrained.request import constraint_regex
from sglang_llada.state import attach, peek

if TYPE_CHECKING:
    from sglang.srt.managers.schedule_batch import ScheduleBatch
    from sglang.srt.sampling.sampling_batch_info import SamplingBatchInfo

logger = logging.getLogger(__name__)


def from_schedule_batch_after(
    result: Optional[SamplingBatchInfo], cls: type, batch: ScheduleBatch, *args: Any, **kwargs: Any
) -> Optional[SamplingBatchInfo]:
    """AFTER `SamplingBatchInfo.from_schedule_batch`: what the diffusion algorithms read per row,
    put on the batch in this order: the requests' decoding knobs, their seeds, then their output
    constraints."""
    if result is None or not batch.is_dllm():
        return None
    knobs_onto_batch(result, batch)
    seeds_onto_batch(result, batch)
    constraints_onto_batch(result, batch)
    return result


def knobs_onto_batch(result: SamplingBatchInfo, batch: ScheduleBatch) -> None:
    """The requests' knobs (each one's `RequestKnobs`, validated once by the scheduler's check,
    algorithms/base.py `validate_request`) on a diffusion batch in which some request sets any, as
    one `BatchKnobs` in row order."""
    rows = tuple(peek(r, RequestKnobs) for r in batch.reqs)
    if any(rows):
        attach(result, BatchKnobs(rows))


def seeds_onto_batch(result: SamplingBatchInfo, batch: ScheduleBatch) -> None:
    """The requests' sampling seeds ([B] int64 on the device) when some request carries one."""
    if result.sampling_seed is not None:
        return
    seeds = [r.sampling_params.sampling_seed for r in batch.reqs]
    if all(s is None for s in seeds):
        return
    import torch

    from sglang_llada.algorithms.sampling import rid_seed

    values = [s if s is not None else rid_seed(str(r.rid)) for s, r in zip(seeds, batch.reqs)]
    host = torch.tensor(values, dtype=torch.int64)
    if torch.device(batch.device).type == "cuda":  # pageable copies would block the host
        host = host.pin_memory()
    result.sampling_seed = host.to(batch.device, non_blocking=True)


@dataclass
class ConstraintProgress:
    """A constrained request's automaton state after its first `walked` output tokens (on the Req)."""

    regex: str
    state: Optional[int]
    walked: int = 0


NO_LIMIT = 1 << 30  # max_new_tokens None: the context length bounds the output instead


def constraints_onto_batch(result: SamplingBatchInfo, batch: ScheduleBatch) -> None:
    """Each constrained request's `RowConstraint` for the block it denoises now (see the docstring)."""
    regexes = [constraint_regex(r.sampling_params.custom_params) for r in batch.reqs]
    if all(x is None for x in regexes):
        return
    from sglang_llada.constrained.grammar import automaton_from_regex

    block = batch.dllm_config.block_size
    rows: list[Optional[RowConstraint]] = []
    for req, regex in zip(batch.reqs, regexes):
        if regex is None:
            rows.append(None)
            continue
        try:
            fsm = automaton_from_regex(regex, req.tokenizer)
        except Exception as exc:  # noqa: BLE001 - outlines' index fails in several ways
            _abort(req, f"the constraint cannot be compiled over this tokenizer: {exc}", 400)
            rows.append(None)
            continue
        progress = peek(req, ConstraintProgress)
        if progress is None or progress.regex != regex:
            progress = attach(req, ConstraintProgress(regex, fsm.initial))
        out = req.output_ids
        if progress.state is not None and progress.walked < len(out):
            progress.state = fsm.walk(progress.state, list(out[progress.walked :]))
            progress.walked = len(out)
        if progress.state is None:  # not expected: every commit was admitted only while completable
            _abort(req, "internal error: the output left the language of its constraint", 500)
            rows.append(None)
            continue
        limit = req.sampling_params.max_new_tokens
        remaining = (NO_LIMIT if limit is None else limit) - len(out)
        need = fsm.distance(progress.state)
        if need is None or need > remaining:  # the first block: max_new_tokens too small for any word
            _abort(req, f"max_new_tokens={limit} is too few for the constraint: its shortest output takes "
                   f"{need} tokens from here", 400)
            rows.append(None)
            continue
        offset = (len(req.origin_input_ids) + len(out)) % block
        length = max(0, min(block - offset, remaining))
        rows.append(RowConstraint(fsm, progress.state, offset, length, max(0, remaining - length)))
    attach(result, BlockConstraints(rows))


def _abort(req: Any, message: str, status: int) -> None:
    """Finish `req` with an error after this round (SGLang's `to_finish`): the client gets `message`."""
    from sglang.srt.managers.schedule_batch import FINISH_ABORT

    logger.error("request %s aborted: %s", req.rid, message)
    req.to_finish = FINISH_ABORT(message, status, "BadRequestError" if status < 500 else "InternalServerError")
