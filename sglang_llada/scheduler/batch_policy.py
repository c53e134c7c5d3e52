"""What each row of a diffusion batch carries for the algorithms: its decoding knobs and its seed.

One AFTER hook on `SamplingBatchInfo.from_schedule_batch` (`from_schedule_batch_after`) puts both on
the batch, knobs first.

Per-request decoding knobs: SGLang 0.5.23 copies the requests' custom_params onto the batch
(`SamplingBatchInfo.custom_params`, a host list in row order) only for custom logit processors; the
hook fills it for diffusion batches in which a request carries knobs (`custom_params.dllm`, checked in
the tokenizer process by sglang_llada/tokenizer/request_checks.py; SGLang builds every diffusion batch
afresh each round, never merges them).

Seeds: SGLang 0.5.23 puts the requests' `sampling_seed` on the batch (`SamplingBatchInfo.sampling_seed`,
[B] int64) only under `--enable-deterministic-inference`; otherwise the field is None and a seed
in the request has no effect. Our algorithms sample with a counter-based hash keyed by that seed
(algorithms/sampling.py), so this AFTER hook on `SamplingBatchInfo.from_schedule_batch` fills the
field for diffusion batches in which some request carries a seed: the request's seed, or, for a
request without one, the same hash of its request id the algorithms use by default (so unseeded
requests keep drawing different noise). The same seed and prompt then give the same output,
whatever else is in the batch (the noise also depends only on the position and the step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from sglang_llada.algorithms.knobs import request_knobs_of

if TYPE_CHECKING:
    from sglang.srt.managers.schedule_batch import ScheduleBatch
    from sglang.srt.sampling.sampling_batch_info import SamplingBatchInfo


def from_schedule_batch_after(
    result: Optional[SamplingBatchInfo], cls: type, batch: ScheduleBatch, *args: Any, **kwargs: Any
) -> Optional[SamplingBatchInfo]:
    """AFTER `SamplingBatchInfo.from_schedule_batch`: what the diffusion algorithms read per row,
    put on the batch in this order: the requests' decoding knobs, then their seeds."""
    if result is None or not batch.is_dllm():
        return None
    knobs_onto_batch(result, batch)
    seeds_onto_batch(result, batch)
    return result


def knobs_onto_batch(result: SamplingBatchInfo, batch: ScheduleBatch) -> None:
    """The requests' custom_params (one entry per row, None for none) on a diffusion batch in which
    some request sets decoding knobs (`custom_params.dllm`)."""
    if getattr(result, "custom_params", None) is not None:
        return
    params = [r.sampling_params.custom_params for r in batch.reqs]
    if any(request_knobs_of(p) for p in params):
        result.custom_params = params


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
