"""`llada2_edit`: LLaDA2.1 token editing (mask-to-token plus token-to-token re-decoding).

Why this exists: LLaDA2.1 checkpoints are trained to revise tokens they already wrote. Each step:

* M2T (mask to token): as `llada2_threshold` -- masked positions with confidence >= `threshold`,
  else the most confident one;
* T2T (token to token): every already-written, non-prompt position of the block whose predicted
  token differs from the current one with probability > `edit_threshold` (strictly) is overwritten
  by it, in the same step;
* once no mask is left, up to `max_edit_steps` further steps are spent on T2T only; the block is
  done at the first step that changes nothing, or when that budget is exhausted.
  `max_edit_steps: 0` makes the algorithm end blocks exactly when `llada2_threshold` does.

Knobs and modes: `mode` picks a named preset of the three values (`EDIT_MODES` below: `none`, the
default, `Q` quality and `S` speedy; README's mode table is rendered from it); an explicit
`threshold`, `edit_threshold` or `max_edit_steps` key overrides the preset's value (a partial
override keeps the preset's other values).

Why `none` and not `Q` is the default: the README, bench/algorithm_table.py's "defaults" row (and
its recorded result) and the end-to-end tests were written for `none`'s values; a silent change of
the default decoding would make them describe something else. A LLaDA2.1 checkpoint is served in
mode Q all the same: its generation's preset (`mode: Q`, startup/generation.py) goes under the
user's `--dllm-algorithm-config` YAML keys when the server decodes with `llada2_edit`
(startup/dllm_config.py); `mode: S` or `mode: none` in the YAML picks another.

Comparisons: M2T keeps `llada2_threshold`'s `>=` (the `select_commit` kernel's contract); T2T is
strict (`prob > edit_threshold`), as in the LLaDA2.1 reference loop, SGLang's `JointThreshold` and
the LLaDA2.2 reference. This matters for S mode: with `edit_threshold: 0.0` every written position
whose prediction differs is edited (the argmax's probability is at least 1 / V > 0), exactly as
with SGLang's `p > 0`; `>=` would additionally accept a sampled token whose probability underflowed
to 0. And `edit_threshold: 1.0` now disables editing (no probability exceeds 1), where `>=` would
still edit at a saturated probability of exactly 1.

Per-request knobs (`custom_params: {"dllm": {...}}`, base.py): `mode`, `threshold`,
`edit_threshold`, `max_edit_steps` (at most `REQUEST_STEP_CAP`). A request's `mode` applies its
preset to the three keys the request does not set: request keys > request mode preset > the
server's resolved values. `max_steps` covers max(server `max_edit_steps`, `REQUEST_STEP_CAP`), so SGLang's
synchronous loop never cuts such a request's block short.

Control tokens: with a LLaDA2.2 checkpoint's DELETE / SPLIT ids in the DllmConfig, their logits are
excluded (base.py `scored`): neither M2T nor T2T writes them.

Reference semantics: the LLaDA2.1 `generate` loop (mirrored by the `dllm` package's
`LLaDA21Sampler`: editing_threshold, max_post_steps) and SGLang 0.5.23's in-tree `JointThreshold`
(sglang/srt/dllm/algorithm/joint_threshold.py), whose bookkeeping this follows step for step:
`post_edit_steps` is bumped on each step that starts with no mask, and the step that takes it past
the cap finishes the block without writing. Differences: M2T compares with `>=` (the kernels'
contract; JointThreshold and the reference use `>`; T2T is strict, see above), the default mode is
`none` (JointThreshold's defaults are S mode: 0.5 / 0 / 16), no repetition penalty
(`penalty_lambda`), and the step runs on our kernels without a host sync except the done list. As in
both references, T2T uses the same draw as M2T (the argmax when greedy, the sampled token with
`sampling: request`) and may write any token id, the mask id included.

`done` is reported only after a forward that saw the block's final tokens (a step that changed
nothing, or the one that hits the cap), so the KV cache holds the final block (see base.py).

Folded final check (knob `fold_store`: auto / on / off, as the mask-to-token decoders'; `auto`, the
default, is on where denoising forwards run eagerly, i.e. our CPU platform; `off` restores the
behaviour above): a block with no mask left whose request would not finish with it is accepted at
once, held back from the output, and its remaining steps -- the check, and any edits it finds -- run
on the logits of the request's next forwards, which fold the block beside the next one
(folded_check.py). Same tokens, logprobs and trajectory as `off`, one forward fewer per block.

Per-request state, and what SGLang 0.5.23 offers for it: `init_step_state(fb)` is the only hook;
SGLang calls it once per `run` in synchronous mode (before the first forward, when `fb.input_ids`
still holds the prompt tail and masks -- that is where the prompt positions of the block are
recorded) and, in FDFO mode, uses its i-th entry for rows that carry no state. This is enough:

* synchronous mode: one `EditRows` (batched [B] / [B, S] device tensors) shared by the B states,
  advanced in place, no per-step gathering;
* FDFO mode: a batch mixes requests whose states come from different rounds; the step gathers their
  rows into a fresh `EditRows` (B small device copies, no host sync) and re-points the states at it.

What the 0.5.23 hook surface does NOT give (so not done here):

* no hook when a request leaves the batch (retraction, abort): a carried FDFO state simply goes
  away with the request, which is fine because it owns nothing else;
* the prompt positions come from `dllm_prompt_mask` when SGLang sets it (literal mask ids among
  committed tokens), else from "not a mask when the state is created" (`DllmAlgorithm._prompt_mask`);
  a request whose FDFO state were lost mid-block (state dropped, block kept) would get a fresh
  state from its partly decoded block, count the tokens it already committed as prompt and never
  edit them (a quality loss, not an error);
* edits of tokens of EARLIER blocks are impossible: their KV is already cached and their text
  already streamed; LLaDA2.1 only edits inside the current block, so nothing is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, List, Mapping, Optional, Sequence

import torch
from sglang.srt.dllm.config import DllmConfig

from sglang_llada.algorithms.base import LladaAlgorithm
from sglang_llada.algorithms.knobs import FOLD_STORE, REQUEST_STEP_CAP, Knob, Value
from sglang_llada.algorithms.rows import Rows, RowState
from sglang_llada.kernels.select_commit import select_commit

Tensor = torch.Tensor


@dataclass
class EditRows(Rows):
    """Batched per-request state on the device (plus the base's logprobs)."""

    prompt: Tensor  # [B, S] bool: prompt positions of the block, never edited
    edit_steps: Tensor  # [B] int32: steps that started with no mask left
    finished: Tensor  # [B] bool


# One request's state: row `index` of a shared EditRows (base.RowState; gather_rows regroups).
EditState = RowState

# The knobs a mode sets, in this order.
MODE_KNOBS = ("threshold", "edit_threshold", "max_edit_steps")
# mode -> (threshold, edit_threshold, max_edit_steps); see the module docstring.
EDIT_MODES: dict[str, tuple[float, float, int]] = {
    "none": (0.95, 0.9, 4),
    "Q": (0.7, 0.5, 16),
    "S": (0.5, 0.0, 16),
}
# Where each mode's values come from (README's mode table, rendered by sglang_llada/doc_tables.py).
MODE_SOURCES: dict[str, str] = {
    "none": "this plugin's values before modes",
    "Q": "LLaDA2.1 model card, Quality Mode",
    "S": "LLaDA2.1 model card, Speedy Mode",
}


def resolve_mode(
    knobs: dict[str, Value], given: Optional[Mapping[str, Any]], modes: Mapping[str, tuple[float, float, int]]
) -> dict[str, Value]:
    """The validated knobs with the mode's preset filled in where the YAML did not set the key.

    `knobs` comes from `read_knobs` (already validated, with each knob's static default for absent
    keys); `given` is the raw `algorithm_config` mapping, which tells the explicit keys apart.
    """
    given = {} if given is None else given
    preset = dict(zip(MODE_KNOBS, modes[str(knobs["mode"])]))
    return {**knobs, **{k: v for k, v in preset.items() if k not in given}}


def with_request_mode(overrides: Mapping[str, Value], modes: Mapping[str, tuple[float, float, int]]) -> dict[str, Value]:
    """A request's keys with its `mode` preset filled in where it did not set the key (nothing to fill
    without a `mode`): what the scheduler keeps of the request (`RequestKnobs`)."""
    preset: dict[str, Value] = {}
    if "mode" in overrides:
        preset = {k: v for k, v in zip(MODE_KNOBS, modes[str(overrides["mode"])]) if k not in overrides}
    return {**preset, **overrides}


def resolve_request_mode(
    server: Mapping[str, Value], overrides: Mapping[str, Value], modes: Mapping[str, tuple[float, float, int]]
) -> dict[str, Value]:
    """A row's knobs: request keys > the request's `mode` preset > the server's resolved values."""
    return {**server, **with_request_mode(overrides, modes)}


# The step budgets a request may raise, up to REQUEST_STEP_CAP (max_steps covers the cap).
STEP_BUDGETS = ("max_edit_steps", "max_indel_steps")


def request_knobs(knobs: Sequence[Knob]) -> tuple[Knob, ...]:
    """An editing algorithm's REQUEST_KNOBS: its KNOBS but `fold_store` (a server's choice), the step
    budgets capped at REQUEST_STEP_CAP."""
    return tuple(
        k.capped(REQUEST_STEP_CAP) if k.name in STEP_BUDGETS else k for k in knobs if k.name != FOLD_STORE.name
    )


class EditAlgorithm(LladaAlgorithm):
    """LLaDA2.1 M2T + T2T editing (see the module docstring)."""

    NAME: ClassVar[str] = "llada2_edit"
    SUMMARY: ClassVar[str] = "LLaDA2.1: threshold mask-to-token plus token-to-token edits of written positions"
    MODES: ClassVar[Mapping[str, tuple[float, float, int]]] = EDIT_MODES
    KNOBS: ClassVar[Sequence[Knob]] = (
        Knob("mode", "none", str, choices=tuple(EDIT_MODES)),
        # the static defaults below are the `none` preset; `resolve_mode` applies the chosen mode
        Knob("threshold", 0.95, float, 0.0, 1.0),
        Knob("edit_threshold", 0.9, float, 0.0, 1.0),
        Knob("max_edit_steps", 4, int, 0, None),
        FOLD_STORE,  # the final check folded into the next block's first forward (folded_check.py)
    )
    REQUEST_KNOBS: ClassVar[Sequence[Knob]] = request_knobs(KNOBS)
    # a block's final check rides in the next block's forwards under fold_store (folded_check.py)
    FOLDS_CHECKS: ClassVar[bool] = True

    def __init__(self, config: DllmConfig):
        super().__init__(config)
        self.knobs = resolve_mode(self.knobs, config.algorithm_config, self.MODES)
        self.mode = str(self.knobs["mode"])
        self.threshold = float(self.knobs["threshold"])
        self.edit_threshold = float(self.knobs["edit_threshold"])
        self.max_edit_steps = int(self.knobs["max_edit_steps"])

    def max_steps(self, block_size: int) -> int:
        # block_size M2T steps at most, the edit budget (a request's may be larger, up to the cap),
        # and the step that reports done
        return block_size + max(self.max_edit_steps, REQUEST_STEP_CAP) + 1

    @classmethod
    def request_preset(cls, checked: Mapping[str, Value]) -> dict[str, Value]:
        return with_request_mode(checked, cls.MODES)

    def resolve_request(self, overrides: Mapping[str, Value]) -> dict[str, Value]:
        return resolve_request_mode(self.knobs, overrides, self.MODES)

    def init_step_state(self, forward_batch: Any) -> List[Any]:
        b = forward_batch.batch_size
        device = forward_batch.input_ids.device
        rows = EditRows(
            **self.base_row_fields(forward_batch),
            prompt=self._prompt_mask(forward_batch).reshape(b, self.block_size).clone(),
            edit_steps=torch.zeros(b, dtype=torch.int32, device=device),
            finished=torch.zeros(b, dtype=torch.bool, device=device),
        )
        return [EditState(rows, i) for i in range(b)]

    def step(self, forward_batch: Any, full_logits: Tensor, states: List[Any]) -> List[bool]:
        b, s = forward_batch.batch_size, self.block_size
        rows = self.rows_of(forward_batch, states)
        ids = forward_batch.input_ids.view(b, s)  # shares storage: writes go to input_ids
        masked = (ids == self.mask_id) & ~rows.prompt  # [B, S]
        n_masked = masked.sum(dim=1)  # [B]
        knobs = self.step_knobs(forward_batch)  # [B] each: every row's own values
        edit_threshold, max_edit_steps = knobs["edit_threshold"][:, None], knobs["max_edit_steps"]
        eligible = self._advance_budget(rows, n_masked, max_edit_steps)  # [B]
        live = ~rows.prompt & eligible[:, None]  # [B, S]: positions scored this step

        salt = n_masked + (s + 1) * rows.edit_steps.to(torch.int64)  # distinct per step of a block
        logits = self.adjusted(forward_batch, full_logits, live.reshape(-1))  # logit_bias, penalties
        token, prob = self.scored(logits, live.reshape(-1), **self.sampling(forward_batch, salt))
        token2, prob2 = token.view(b, s), prob.view(b, s)

        edit = live & ~masked & (prob2 > edit_threshold) & (token2 != ids)  # T2T [B, S], strict
        m2t = (masked & eligible[:, None]).reshape(-1)
        committed, n_commit, _ = select_commit(
            forward_batch.input_ids,
            token,
            prob,
            m2t,
            knobs["threshold"],
            self.block_vector(forward_batch, 1, torch.int32),
            s,
        )
        ids.copy_(torch.where(edit, token2, ids))  # T2T positions are disjoint from M2T ones
        self.record_logprobs(rows, committed | edit.reshape(-1), prob)
        changed = (n_commit > 0) | edit.any(dim=1)
        rows.finished |= eligible & ~changed  # this forward saw the final block
        return self.step_done(rows.finished)

    def _advance_budget(self, rows: EditRows, n_masked: Tensor, max_edit_steps: Any) -> Tensor:
        """Counts the edit-only steps; finishes blocks over budget (max_edit_steps: an int, or [B]
        int32 per row). -> [B] bool rows still working."""
        active = ~rows.finished
        idle = active & (n_masked == 0)  # no mask left: an edit-only step
        rows.edit_steps += idle.to(torch.int32)
        exhausted = idle & (rows.edit_steps > max_edit_steps)
        rows.finished |= exhausted
        return active & ~exhausted
