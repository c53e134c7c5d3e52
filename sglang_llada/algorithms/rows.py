"""Per-request step state of a batch's blocks, and the knobs a step reads (what a decoder's step sees
besides the logits).

`Rows`: the batched state of B requests' blocks on the device (a decoder's subclass adds fields);
`RowState`: one request's row of it, what SGLang carries per request between FDFO runs
(`req.dllm_algo_state`); `gather_rows` regroups the states of a new batch. `StepKnobs`: every
numeric knob of the decoder as one [B] tensor, each row resolved once (base.py `step_knobs`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch

Tensor = torch.Tensor


@dataclass
class Rows:
    """Per-request step state of a batch, batched on the device (subclasses add fields)."""

    logprobs: Tensor  # [B, S] fp32: log-prob of each position's last write in this block
    # the decoding trajectory (output/trace.py): forwards are numbered from 1 within the block
    forward_no: Tensor  # [B] int32: the number of the forward whose logits the current step reads
    first_at: Tensor  # [B, S] int32: the forward whose logits chose a position's first write (0: none)
    last_at: Tensor  # [B, S] int32: ... its last write (differs from first_at once an edit rewrote it)


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


@dataclass(frozen=True)
class StepKnobs:
    """What a step's commit rule reads of the knobs: every numeric knob of the algorithm as one [B]
    device tensor (fp32, int32 for integer knobs), each row resolved once -- request keys > the
    request's `mode` preset > the server's values -- and read-only (`LladaAlgorithm.step_knobs`)."""

    values: Mapping[str, Tensor]

    def __getitem__(self, name: str) -> Tensor:
        return self.values[name]


@dataclass
class RowKnobCache:
    """The last batch's per-row knob tensors (see base.py `LladaAlgorithm.row_knobs`)."""

    batch: Any = None  # the batch's knobs.BatchKnobs (kept alive: identity is the fast check)
    key: Any = None  # the rows' validated knobs, as a hashable tuple
    device: Any = None
    values: Optional[dict[str, Tensor]] = None
