"""Per-request `sampling_seed` for diffusion sampling, without `--enable-deterministic-inference`.

SGLang 0.5.23 puts the requests' `sampling_seed` on the batch (`SamplingBatchInfo.sampling_seed`,
[B] int64) only under `--enable-deterministic-inference`; otherwise the field is None and a seed
in the request has no effect. Our algorithms sample with a counter-based hash keyed by that seed
(algorithms/sampling.py), so this AFTER hook on `SamplingBatchInfo.from_schedule_batch` fills the
field for diffusion batches in which some request carries a seed: the request's seed, or, for a
request without one, the same hash of its request id the algorithms use by default (so unseeded
requests keep drawing different noise). The same seed and prompt then give the same output,
whatever else is in the batch (the noise also depends only on the position and the step).
"""

from __future__ import annotations

from typing import Any


def register_hooks() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(
        "sglang.srt.sampling.sampling_batch_info.SamplingBatchInfo.from_schedule_batch",
        _seeds_after,
        HookType.AFTER,
    )


def _seeds_after(result: Any, cls: Any, batch: Any, *args: Any, **kwargs: Any) -> Any:
    if result is None or result.sampling_seed is not None or not batch.is_dllm():
        return None
    seeds = [r.sampling_params.sampling_seed for r in batch.reqs]
    if all(s is None for s in seeds):
        return None
    import torch

    from sglang_llada.algorithms.sampling import rid_seed

    values = [s if s is not None else rid_seed(str(r.rid)) for s, r in zip(seeds, batch.reqs)]
    host = torch.tensor(values, dtype=torch.int64)
    if torch.device(batch.device).type == "cuda":  # pageable copies would block the host
        host = host.pin_memory()
    result.sampling_seed = host.to(batch.device, non_blocking=True)
    return result
