"""One denoising step under constraints: the logits of a constrained row's masked positions limited to
the tokens that keep its output completable, and the step's commits admitted only while they do.

Per row (`RowConstraint`, built by the scheduler for each block: sglang_llada/scheduler/batch_policy.py):
the automaton of its regex / JSON schema, the state the output so far left it in, where the output
starts in the block (the first block holds the prompt's tail), how many of the block's positions
are within `max_new_tokens`, and how many tokens may follow the block. Positions past
`max_new_tokens` are generated but never returned, so they are not constrained.

Cost per step for a batch with constrained rows: two host reads (the rows' block ids before the step,
the commits after it), the block dynamic program per constrained row (automaton.py: over states,
not tokens), one [V] bool mask per distinct allowed set of the step (positions and rows that share
a set share it), and a [masked positions, V] bool mask gathered on the device. A batch with no
constrained row takes none of this (the algorithm checks for the record first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from sglang_llada.constrained.automaton import MaskCache, TokenAutomaton, admit, allowed_masks

Tensor = torch.Tensor

NEG_INF = float("-inf")


@dataclass(frozen=True)
class RowConstraint:
    """What one row's block must satisfy (see the module docstring)."""

    fsm: TokenAutomaton
    state: int  # the automaton's state after the output before this block
    offset: int  # block positions before the output starts (the prompt's tail in the first block)
    length: int  # output positions of the block within max_new_tokens (offset + length <= S)
    budget_after: int  # tokens the output may still take after this block

    def block(self, ids: Sequence[int], mask_id: int) -> list[int | None]:
        """The constrained part of a block's ids, None where masked."""
        return [None if t == mask_id else t for t in ids[self.offset : self.offset + self.length]]


@dataclass
class BlockConstraints:
    """A batch's constrained rows (`rows[i]` None: row i is free), in batch row order; the record the
    scheduler pins on the batch's SamplingBatchInfo."""

    rows: list[Optional[RowConstraint]] = field(default_factory=list)

    def any(self) -> bool:
        return any(r is not None for r in self.rows)


def constrain_logits(
    logits: Tensor, ids: Sequence[Sequence[int]], rows: Sequence[Optional[RowConstraint]], mask_id: int
) -> Tensor:
    """logits [N, V] (N = B * S), ids [B][S] the rows' block ids on the host: the logits with every
    token a constrained masked position may not take at -inf (written in place when the tensor
    allows it). A position whose block cannot be completed at all (not expected: every commit is
    admitted only while it can) may take only the end tokens, which ends the output."""
    s = len(ids[0]) if ids else 0
    v = logits.shape[1]
    positions: list[int] = []
    which: list[int] = []  # per position: its row of `distinct`
    distinct: dict[int, int] = {}  # id(mask array) -> row of `masks`
    masks: list[np.ndarray] = []
    cache: MaskCache = {}
    for i, row in enumerate(rows):
        if row is None:
            continue
        per_pos = allowed_masks(row.fsm, row.state, row.block(ids[i], mask_id), row.budget_after, v, cache)
        masked = [m for m in per_pos if m is not None]
        if masked and not any(m.any() for m in {id(m): m for m in masked}.values()):
            only_eos = np.zeros(v, dtype=bool)
            only_eos[row.fsm.eos_ids[row.fsm.eos_ids < v]] = True
            per_pos = [None if m is None else only_eos for m in per_pos]
        for p, mask in enumerate(per_pos):
            if mask is None:
                continue
            positions.append(i * s + row.offset + p)
            which.append(distinct.setdefault(id(mask), len(distinct)))
            if len(masks) < len(distinct):
                masks.append(mask)
    if not positions:
        return logits
    # [K, V] distinct masks, inverted (the tokens to drop), to the device once; [P, V] gathered there
    drop_distinct = torch.from_numpy(~np.stack(masks))
    index, rows_of = torch.tensor(positions, dtype=torch.int64), torch.tensor(which, dtype=torch.int64)
    if logits.device.type != "cpu":
        drop_distinct = drop_distinct.to(logits.device, non_blocking=True)
        index, rows_of = index.to(logits.device, non_blocking=True), rows_of.to(logits.device, non_blocking=True)
    drop = drop_distinct.index_select(0, rows_of)
    if logits.is_inference() and not torch.is_inference_mode_enabled():
        logits = logits.clone()
    if len(positions) == logits.shape[0]:  # every position of the batch: no gather, in place
        return logits.masked_fill_(drop, NEG_INF)
    picked = logits.index_select(0, index).masked_fill_(drop, NEG_INF)
    logits.index_copy_(0, index, picked)
    return logits


def admit_commits(
    input_ids: Tensor,
    committed: Tensor,
    prob: Tensor,
    ids_before: Sequence[Sequence[int]],
    rows: Sequence[Optional[RowConstraint]],
    mask_id: int,
) -> Tensor:
    """After the step's commit (input_ids [N] written in place, committed [N] bool, prob [N]): keep a
    constrained row's commits most confident first while its block stays completable, and put the
    mask back at the others. -> committed [N] bool without the reverted positions. The most
    confident commit of a row is always kept (it was drawn from the allowed tokens), so every step
    still commits at least one position."""
    b = len(rows)
    s = input_ids.shape[0] // max(b, 1)
    picked = [i for i, r in enumerate(rows) if r is not None]
    sel = torch.tensor(picked, dtype=torch.int64, device=input_ids.device)
    # one host read: the constrained rows' new ids, commit flags and probabilities
    new_ids, flags, probs = (t.view(b, s).index_select(0, sel).tolist() for t in (input_ids, committed, prob))
    revert: list[int] = []
    for j, i in enumerate(picked):
        row = rows[i]
        assert row is not None
        lo, hi = row.offset, row.offset + row.length
        proposals = sorted(
            ((p - lo, new_ids[j][p]) for p in range(lo, hi) if flags[j][p]), key=lambda pt: -probs[j][pt[0] + lo]
        )
        if not proposals:
            continue
        kept = {p for p, _ in admit(row.fsm, row.state, row.block(ids_before[i], mask_id), proposals, row.budget_after)}
        revert.extend(i * s + lo + p for p, _ in proposals if p not in kept)
    if not revert:
        return committed
    index = torch.tensor(revert, dtype=torch.int64, device=input_ids.device)
    input_ids.index_fill_(0, index, mask_id)
    return committed.index_fill(0, index, False)
