"""Folded final check of the editing decoders (`llada2_edit`, `llada2_levenshtein`) under `fold_store`.

Why this exists: an editing decoder ends a block only after a step that changes nothing (or the
step that runs out of its post-edit budget): that step reads a forward that saw the block's final
tokens, so the KV cache holds them (base.py). Once a block has no mask left, every further step of
it is such a check, and checks usually change nothing: the block's last forward is then spent on
a step that writes nothing. With `fold_store` (on by default on our CPU platform, as for the
mask-to-token decoders) that forward is shared with the request's next block:

* hold back: a block with no mask left (after any step) whose request would not finish with it is
  accepted at once (`done`) -- the scheduler appends it to the request's output but sends none of
  it (output/streaming.py) and keeps it out of the radix tree (its KV is stale) -- and its step
  state, budgets and trajectory included, goes with it (`HeldBlock`, kept on the request by
  scheduler/folded_store.py);
* the request's next run folds the held block into each of its forwards (`_FoldingRunner`,
  models/folded_blocks.py `folded_forward`): the block is re-encoded at its own positions, its KV
  stored, and its logits -- exactly those of a forward of its own: it sees its prefix and itself --
  run its next step, with the batch row's sampling parameters, knobs, seeds and its own positions
  (the noise counters of that step are those the unfolded decoder would use);
* settled: that step changes nothing (the block is final; its KV, written by this forward, is
  final): the next block's step of the same forward attended to exactly these tokens and stands.
  One forward per block fewer;
* rolled back: the step changed the held block (an edit, or a DELETE / SPLIT that reopens masks):
  the next block's step read a forward that saw the block before that change, so it is discarded --
  the row's block and state go back to their start (`_reset`; its forward numbering goes on) -- and
  the next forward folds the held block again, with its new tokens. While the held block is being
  rolled back, its steps are exactly those of the unfolded decoder (masks reopened by Levenshtein
  included: the block is decoded on its own, the next block contributing nothing), one per forward,
  until one changes nothing; the scheduler then writes the final tokens, logprobs and trajectory
  over the held ones (`Settled`) before anything of the block is sent. If those final tokens end the
  request (an edit wrote EOS or a stop string), the request finishes with that block and the next
  block is dropped, as the unfolded decoder would never have started it.

What is never held back, so that the output is the unfolded decoder's: a block with which the
request would finish (EOS, stop token or string, `max_new_tokens`, the context length: asked of
the scheduler through `FoldPlan.may_hold`, which runs SGLang's own finish check on a copy of the
output), and the blocks of requests with frequency / presence / repetition penalties (the penalties
count the output so far, which a held block makes tentative). Their checks run as plain forwards.

Two host reads per forward with held blocks (the held blocks' step: done flags and tokens; the
batch's step: done flags, "no mask left" and the block, to ask `may_hold`); nothing else changes
in the steps themselves. Without a fold plan (no scheduler, or the knob `off`) SGLang's own loops
run, unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from types import SimpleNamespace
from typing import Any, Iterator, List, Optional, Sequence

import torch

from sglang_llada.algorithms import FoldPlan, HeldBlock, Settled
from sglang_llada.algorithms.knobs import BatchKnobs
from sglang_llada.algorithms.rows import RowKnobCache, RowState
from sglang_llada.algorithms.sampling import LogitAdjuster, SeedCache, batch_requests
from sglang_llada.state import attach, peek

Tensor = torch.Tensor

logger = logging.getLogger(__name__)

# the per-request sampling tensors of SGLang's SamplingBatchInfo a step reads, [B, ...] each
_ROW_TENSORS = ("temperatures", "top_ps", "top_ks", "min_ps", "logit_bias", "sampling_seed")
_FLAGS = ("is_all_greedy", "need_top_p_sampling", "need_top_k_sampling", "need_min_p_sampling")


def clone_rows(rows: Any, index: Optional[int] = None) -> Any:
    """A copy of a `Rows` (all rows, or the one-row `Rows` of row `index`)."""
    cut = (lambda t: t.clone()) if index is None else (lambda t: t[index : index + 1].clone())
    return type(rows)(**{f.name: cut(getattr(rows, f.name)) for f in dataclasses.fields(rows)})


def shadow_sampling_info(info: Any, rows: Sequence[int], batch_size: int) -> Any:
    """The batch's sampling info cut to `rows` (what a batch of those requests alone would carry),
    for the held blocks' step: sampling tensors, flags, per-request knobs (`BatchKnobs`), the requests
    (min_new_tokens)."""
    if info is None:
        return None
    out = SimpleNamespace(acc_additive_penalties=None, acc_scaling_penalties=None)
    for name in _ROW_TENSORS:
        if hasattr(info, name):
            value = getattr(info, name)
            if isinstance(value, Tensor):
                value = value[torch.tensor(list(rows), dtype=torch.long, device=value.device)]
            setattr(out, name, value)
    for name in _FLAGS:
        if hasattr(info, name):
            setattr(out, name, getattr(info, name))
    knobs = peek(info, BatchKnobs)
    if knobs is not None and len(knobs.rows) == batch_size:
        attach(out, BatchKnobs(tuple(knobs.rows[r] for r in rows)))
    reqs = batch_requests(info)
    orchestrator = getattr(info, "penalizer_orchestrator", None)
    if reqs is not None and len(reqs) == batch_size and orchestrator is not None:
        mine = [reqs[r] for r in rows]
        out.penalizer_orchestrator = SimpleNamespace(
            is_required=getattr(orchestrator, "is_required", False), reqs=lambda: mine
        )
    else:
        out.penalizer_orchestrator = None
    return out


class FoldedCheck:
    """The folded-check loop of the shared run loop: a base of `LladaAlgorithm` (base.py) whose
    `_run_sync` / `_run_fdfo` run it instead of SGLang's loops when the decoder declares
    `FOLDS_CHECKS` and the run has a fold plan that may hold blocks back (see the module docstring).
    What it needs of such a decoder: its `step` ends with `self.step_done(finished)`, and its `Rows`
    have `prompt` and `finished` (edit.py, levenshtein.py)."""

    # -- SGLang's two loops, or ours -----------------------------------------------------------

    def _run_sync(self, model_runner: Any, forward_batch: Any) -> Any:
        if self._folds_checks(forward_batch):
            return self._run_folded(model_runner, forward_batch, None)
        return super()._run_sync(model_runner, forward_batch)  # type: ignore[misc]

    def _run_fdfo(self, model_runner: Any, forward_batch: Any, algo_states: Optional[List[Any]]) -> Any:
        if self._folds_checks(forward_batch):
            return self._run_folded(model_runner, forward_batch, algo_states)
        return super()._run_fdfo(model_runner, forward_batch, algo_states)  # type: ignore[misc]

    def _folds_checks(self, forward_batch: Any) -> bool:
        plan: Optional[FoldPlan] = self._plan  # type: ignore[attr-defined]
        return (
            bool(getattr(self, "FOLDS_CHECKS", False))
            and self._folder is not None  # type: ignore[attr-defined]
            and plan is not None
            and forward_batch.forward_mode.is_dllm_extend()
            and (plan.may_hold is not None or any(h is not None for h in plan.held or ()))
        )

    def _run_folded(self, model_runner: Any, fb: Any, algo_states: Optional[List[Any]]) -> Any:
        algo: Any = self
        b, s = fb.batch_size, algo.block_size
        plan: FoldPlan = algo._plan
        folder = algo._folder
        fdfo = bool(algo.fdfo)
        device = fb.input_ids.device
        start_list = [] if fdfo else algo._block_start_list(fb)  # SGLang's: the block's prompt positions per row

        init_ids = fb.input_ids.clone()
        fresh_states = algo.init_step_state(fb)
        fresh = clone_rows(fresh_states[0].rows)  # what a reset row goes back to
        if fdfo:
            carried = algo_states if algo_states is not None else [None] * b
            states = [c if c is not None else fresh_states[i] for i, c in enumerate(carried)]
        else:
            states = fresh_states

        held_in: dict[int, HeldBlock] = {}
        plain_rows: list[int] = []
        plain_tokens: list[list[int]] = []
        for i, r in enumerate(plan.rows):
            h = plan.held[i] if plan.held is not None else None
            if h is None:
                plain_rows.append(r)
                plain_tokens.append(list(plan.token_ids[i]))
            else:
                held_in[r] = h
        prefix = fb.extend_prefix_lens_cpu
        starts = [int(p) for p in (prefix if prefix is not None else fb.extend_prefix_lens.tolist())]

        pending = dict(held_in)  # held blocks not yet settled
        settled: dict[int, Settled] = {}
        closing: set[int] = set()  # rows whose settled block ends the request
        frozen: set[int] = set()
        hold: dict[int, list[int]] = {}  # rows accepted before their check: their block (host)
        done = [False] * b
        out: Any = None
        if not fdfo and all(n == s for n in start_list) and not pending:
            out = model_runner.forward(fb, pp_proxy_tensors=None)  # nothing to denoise (as SGLang)
            return out.logits_output, [], None, None, out.can_run_graph

        for it in range(2 * algo.max_steps(s) + 2):
            # -- the forward: the batch's blocks, the stale blocks (first forward) and the held ones
            checking = sorted(pending)
            plain = plain_rows if it == 0 else []
            if plain or checking:
                parts = [torch.tensor(plain_tokens, dtype=torch.long, device=device).reshape(-1)] if plain else []
                parts += [pending[r].tokens.reshape(-1) for r in checking]
                folder.fold_next(plain + checking, torch.cat(parts), logits=bool(checking))
            algo.prepare_inputs(model_runner, fb, states)
            out = model_runner.forward(fb, pp_proxy_tensors=None)

            # -- the held blocks' step, on their folded logits
            reset: list[int] = []
            if checking:
                assert folder.folded_logits is not None
                logits = folder.folded_logits[len(plain) * s :]
                finished, tokens, rows = self._check_held(fb, checking, [pending[r] for r in checking], logits)
                for j, r in enumerate(checking):
                    if not finished[j]:
                        reset.append(r)  # changed: its next block waits
                        continue
                    h = pending.pop(r)
                    ends = (
                        tokens[j] != h.accepted
                        and plan.finishes is not None
                        and plan.finishes(r, [(h.start, tokens[j])])
                    )
                    settled[r] = Settled(
                        tokens[j], rows.logprobs[j].clone(), rows.first_at[j].clone(), rows.last_at[j].clone(), ends
                    )
                    if ends:
                        closing.add(r)
                if reset:  # one line per forward that discards steps (bench/folded_check_bench.py counts them)
                    n = len(reset)
                    logger.info("fold_store: %d held block%s changed by %s check, checked again", n, "" if n == 1 else "s", "its" if n == 1 else "their")

            # -- the batch's step
            with self._deferred():
                algo.step(fb, out.logits_output.full_logits, states)
            finished_now = algo._step_out
            rows = algo._last_rows
            freeze = sorted(closing - frozen)
            if reset or freeze:
                self._reset(fb, rows, reset + freeze, init_ids, fresh)
                if freeze:
                    rows.finished[torch.tensor(freeze, dtype=torch.long, device=device)] = True
                    frozen.update(freeze)
            ids = fb.input_ids.view(b, s)
            open_ = ((ids == algo.mask_id) & ~rows.prompt).any(dim=1)
            host = torch.cat([finished_now.view(b, 1).long(), open_.view(b, 1).long(), ids], dim=1).tolist()

            for i in range(b):
                hold.pop(i, None)
                if i in closing:
                    done[i] = True
                elif i in pending:
                    done[i] = False  # reset: waits for its previous block
                elif host[i][0]:
                    done[i] = True  # checked final by this forward
                elif not host[i][1] and self._may_hold(plan, i, starts[i], host[i][2:], held_in.get(i), settled.get(i)):
                    done[i] = True
                    hold[i] = host[i][2:]
                else:
                    done[i] = False
            if fdfo or all(done):
                break

        held_out = {
            i: HeldBlock(RowState(clone_rows(rows, i), 0), fb.input_ids.view(b, s)[i].clone(), starts[i], tokens_i)
            for i, tokens_i in hold.items()
        }
        algo._fold_out = (held_out, dict(pending), settled, plain_rows, b)
        if not fdfo:
            ids = fb.input_ids.view(b, s)
            return out.logits_output, [ids[i, start_list[i] :] for i in range(b)], None, None, out.can_run_graph
        accept = [s if done[i] and i not in closing else 0 for i in range(b)]
        states_out = [None if (done[i] or i in closing) else states[i] for i in range(b)]
        return out.logits_output, fb.input_ids.view(b, s).tolist(), accept, states_out, out.can_run_graph

    def fold_result(self) -> dict[str, Any]:
        """The `ForwardRecord` fields of a run of this loop (base.py `_result`); {} for other runs."""
        fold = self._fold_out  # type: ignore[attr-defined]
        if fold is None:
            return {}
        held_out, still, settled, plain_rows, b = fold
        return {
            "held": held_out or None,
            "still_held": still or None,
            "settled": settled or None,
            "folded_rows": sorted(set(plain_rows) | set(settled)),  # their KV is final now
            "stale": [i in held_out for i in range(b)],
        }

    # -- the pieces -----------------------------------------------------------------------------

    @staticmethod
    def _may_hold(
        plan: FoldPlan, row: int, start: int, block: list[int], held: Optional[HeldBlock], settled: Optional[Settled]
    ) -> bool:
        if plan.may_hold is None:
            return False
        blocks = [] if held is None or settled is None else [(held.start, settled.tokens)]
        return plan.may_hold(row, [*blocks, (start, block)])

    def _check_held(
        self, fb: Any, rows: list[int], held: list[HeldBlock], logits: Tensor
    ) -> tuple[list[bool], list[list[int]], Any]:
        """One step of the held blocks of batch rows `rows`, on their folded logits [F * S, V]:
        (finished flags, their tokens now (host), their gathered `Rows`). One host read."""
        algo: Any = self
        f, s = len(rows), algo.block_size
        ids = torch.cat([h.tokens.reshape(-1) for h in held]).to(fb.input_ids.dtype)
        positions = getattr(fb, "positions", None)
        pos_dtype = positions.dtype if positions is not None else torch.int64
        pos = torch.cat([torch.arange(h.start, h.start + s, dtype=pos_dtype, device=ids.device) for h in held])
        rids = getattr(fb, "rids", None)
        shadow = SimpleNamespace(
            input_ids=ids,
            batch_size=f,
            positions=pos,
            dllm_prompt_mask=None,
            rids=[rids[r] for r in rows] if rids is not None else None,
            sampling_info=shadow_sampling_info(getattr(fb, "sampling_info", None), rows, fb.batch_size),
            forward_mode=fb.forward_mode,
        )
        states = [h.state for h in held]
        with self._shadow(), self._deferred():
            algo.step(shadow, logits, states)
            finished = algo._step_out
            gathered = states[0].rows
        host = torch.cat([finished.view(f, 1).long(), ids.view(f, s)], dim=1).tolist()
        for j, h in enumerate(held):
            h.tokens = ids.view(f, s)[j]
        return [bool(r[0]) for r in host], [r[1:] for r in host], gathered

    def _reset(self, fb: Any, rows: Any, reset: list[int], init_ids: Tensor, fresh: Any) -> None:
        """Rows `reset` of the batch back to their block's start (tokens and step state; the forward
        numbering goes on: the trajectory counts every forward of the block)."""
        algo: Any = self
        b, s = fb.batch_size, algo.block_size
        idx = torch.tensor(reset, dtype=torch.long, device=fb.input_ids.device)
        ids = fb.input_ids.view(b, s)
        ids[idx] = init_ids.view(b, s)[idx]
        for field in dataclasses.fields(rows):
            if field.name != "forward_no":
                getattr(rows, field.name)[idx] = getattr(fresh, field.name)[idx]

    @contextlib.contextmanager
    def _deferred(self) -> Iterator[None]:
        algo: Any = self
        algo._defer_done, algo._step_out = True, None
        try:
            yield
        finally:
            algo._defer_done = False

    @contextlib.contextmanager
    def _shadow(self) -> Iterator[None]:
        """The held blocks' step has caches of its own (seeds, knobs, logit adjustments), so the
        batch's stay warm, and leaves the batch's rows as the run's last."""
        algo: Any = self
        if not hasattr(algo, "_shadow_caches"):
            algo._shadow_caches = (SeedCache(), LogitAdjuster(), RowKnobCache())
        mine = (algo._seed_cache, algo._adjuster, algo._knob_cache, algo._last_rows)
        algo._seed_cache, algo._adjuster, algo._knob_cache = algo._shadow_caches
        try:
            yield
        finally:
            algo._seed_cache, algo._adjuster, algo._knob_cache, algo._last_rows = mine
