"""A batch's per-request knobs as the scheduler pins them, for unit tests that build a batch by hand."""

from __future__ import annotations

from typing import Any, Sequence

from sglang_llada.algorithms.knobs import BatchKnobs, RequestKnobs, request_knobs_of
from sglang_llada.state import attach


def with_request_knobs(info: Any, custom_params: Sequence[Any]) -> Any:
    """`info` (a SamplingBatchInfo stand-in) carrying the rows' knobs as scheduler/batch_policy.py
    pins them: each row's `custom_params.dllm` as its `RequestKnobs`, taken as already validated (the
    scheduler's check, `LladaAlgorithm.validate_request`, is tested on its own), in one `BatchKnobs`
    when some row sets any."""
    rows = tuple(RequestKnobs.of(request_knobs_of(c) or {}) for c in custom_params)
    if any(rows):
        attach(info, BatchKnobs(rows))
    return info
