"""Per-request sampling arguments of the `confidence` kernel, built from SGLang's ForwardBatch.

Why this exists: the kernel samples per row (Gumbel-max with a counter-based hash, no host sync) and
needs, for each of the N = B * S block positions, a temperature, optional top-k / top-p, a seed and
a noise counter ("offset"). SGLang 0.5.23 keeps the per-request parameters on
`forward_batch.sampling_info` (a `SamplingBatchInfo`), built by `SamplingBatchInfo.from_schedule_batch`:

    temperatures [B, 1] fp32   top_ps [B] fp32   top_ks [B] int32 (TOP_K_ALL = 2**30: no filter)
    sampling_seed [B] int64 or None (only set under --enable-deterministic-inference)
    is_all_greedy, need_top_p_sampling, need_top_k_sampling: host bools

A request with temperature 0 reaches the batch as temperature 1.0 with top_k = 1
(`SamplingParams.normalize`), so "greedy" here means top_k <= 1, as in SGLang's own sampler.

Seeds: `sampling_seed` [B] when the batch carries it (SGLang sets it under
`--enable-deterministic-inference`; our request_seeds.py hook sets it for diffusion batches with a
seeded request), otherwise a stable 64-bit hash of the request id (the same blake2b hash SGLang uses
for `rids_int`), computed on the host once per batch composition and copied to the device without
blocking.

Offsets (the noise counter): absolute position * 2**16 + a per-block step salt given by the caller,
so a position draws fresh noise at every step of its block and the draws do not depend on which
other requests share the batch.

Not supported (ignored, as by SGLang's in-tree LowConfidence, which ignores sampling entirely):
min_p, frequency/presence/repetition penalties, logit_bias, grammars, custom logit processors.
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional

import torch

Tensor = torch.Tensor

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
    return {
        "temperature": per_position(temperature, block_size),
        "top_k": top_k,
        "top_p": top_p,
        "seeds": per_position(seed_cache.seeds(forward_batch, device), block_size),
        "offsets": _offsets(forward_batch, n, block_size, step_salt),
    }
