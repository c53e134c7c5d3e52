"""`llada2_levenshtein`: LLaDA2.2 decoding -- LLaDA2.1 editing plus DELETE / SPLIT (Levenshtein edits).

Why this exists: LLaDA2.2 checkpoints keep LLaDA2.1's joint M2T + T2T decoding (`llada2_edit`) and
add two control tokens the model may predict at a generated position: DELETE (`delete_token_id`)
removes the position, and SPLIT (`split_token_id`) inserts a new mask before the position's current
token. The block keeps its length S: a DELETE shifts the rest of the block left and pads the tail
with masks, a SPLIT turns the position into [MASK, old token] and pushes the tail out.

One step, batched over [B, S] on the device (no host sync but the done list, base.py):

1. Score: the `confidence` kernel on the live positions (non-prompt positions of unfinished rows),
   with the MASK logit excluded everywhere (a written position never becomes a mask again: an M2T
   commit must resolve its mask, and T2T never re-masks) and the DELETE / SPLIT logits excluded
   where they may not take effect (below). Exclusion is done in place on three columns of the
   logits, which are restored right after the kernel (no [N, V] copy).
2. M2T: masked positions are "original" (masked when the block started) or "introduced" (the tail
   padding of a DELETE, the mask of a SPLIT); the flags move with their tokens. While original
   masks remain, at least 1 + (introduced masks) positions are committed: those with confidence
   >= `threshold` if there are that many, else the 1 + introduced most confident ones (so every
   step resolves an original mask unless it spends a DELETE / SPLIT). Once no original mask is
   left, all masks are committed at once. Both are one `select_commit` call with a per-block
   threshold (`threshold`, +inf or -inf) and count.
3. T2T: as `llada2_edit`: written non-prompt positions whose prediction differs with probability
   > `edit_threshold` (strict) are overwritten.
4. DELETE / SPLIT take effect only at positions written this step (an M2T commit or a T2T edit of
   a control token), and are consumed in the same step: count[i] = 0 (DELETE), 2 (SPLIT), 1
   (otherwise); destination = exclusive cumsum of count; every kept token (and its original-mask
   flag and logprob) is scattered to its destination in a fresh [B, S] row filled with masks,
   destinations >= S are dropped (`apply_indel`). A control token therefore never stays in the
   block. Prompt positions never move and are never edited: DELETE / SPLIT are excluded at every
   position up to the block's last prompt position, so nothing before it shifts.

Budgets and termination (every bound is per block and per row, on the device):

* post-edit steps, as `llada2_edit`: a step that starts with no original mask left bumps
  `edit_steps`; the step that takes it to `max_edit_steps` is the block's final round (with
  `max_edit_steps: 0`, the first post-edit step if it finds masks), and a step past it with no
  mask left finishes without writing;
* a final round excludes DELETE / SPLIT and commits every remaining mask (never MASK itself), so
  the block it leaves is clean; the next step reports done (its forward saw that block);
* SPLIT can re-introduce masks forever, so DELETE / SPLIT are honoured in at most
  `max_indel_steps` steps of a block (default 32): after that, their logits are excluded and the
  row decodes like `llada2_edit`;
* a row is done, as in `llada2_edit`, after a step that changed nothing with no mask left;
* a hard cap: a row that has taken S + `max_indel_steps` + `max_edit_steps` steps is forced into
  a final round. The bound argument: a step before the post-edit phase resolves an original mask
  unless it spends one of the `max_indel_steps` (original masks never come back: MASK is never
  written), so the post-edit phase starts within S + `max_indel_steps` steps and lasts at most
  `max_edit_steps` + 1 more. `max_steps(S)` = S + `max_indel_steps` + `max_edit_steps` + 2 covers
  the forced final round and the done step, so SGLang's synchronous loop never cuts a block
  short, and FDFO rounds (which have no cap of their own) end too.

Per-request knobs (`custom_params: {"dllm": {...}}`, base.py): `mode`, `threshold`,
`edit_threshold`, `max_edit_steps`, `max_indel_steps` (the two budgets at most
`REQUEST_STEP_CAP`), resolved as in `llada2_edit` (request keys > request mode preset > server
values); each row's hard cap uses its own budgets, and `max_steps` uses max(server value,
`REQUEST_STEP_CAP`) for both, so the bound
above holds for every request.

Knobs: `mode` (`Q` default, or `S`: LLaDA2.1's presets, which LLaDA2.2 keeps: `LEVENSHTEIN_MODES`
below, README's mode table), explicit `threshold`, `edit_threshold`, `max_edit_steps` override the
mode's values, `max_indel_steps` (defaults and ranges: `KNOBS`, README's algorithm table),
`sampling` (base.py), `fold_store` (auto / on / off, as `llada2_edit`'s: the block's final check
rides in the next block's first forward, folded_check.py; a check whose DELETE / SPLIT reopens masks
sends the block back to being decoded on its own, the next block's steps discarded until it is
final). The DELETE / SPLIT ids come from SGLang's `DllmConfig.delete_token_id` / `split_token_id`,
read from the checkpoint's config.json (ValueError at construction when absent).

Logprobs: positions written with an ordinary token record the log of their write probability
(`record_logprobs`); a SPLIT's restored old token keeps the logprob it had, the inserted mask and
the tail padding get 0; everything moves with its token.

Differences from SGLang 0.5.23's in-tree `JointThresholdInDel` (joint_threshold_indel.py), and why:

* it loops over the batch rows in Python with several host syncs per row and step (`.tolist()`
  of counts, `.item()`, `nonzero`, the block copied to the host and the edited one back); here one
  batched device program per step and a single `.tolist()` of the done flags, so the step costs
  the same for 1 or 64 requests and does not stall the GPU queue;
* its anti-loop guard is a per-row set of every block state seen (host tuples) plus a resample of
  the lowest-confidence changed position excluding tokens sampled there before; that needs the
  block on the host every step and still relies on its step cap to stop. Here a fixed budget of
  steps that may apply DELETE / SPLIT (`max_indel_steps`) after which they are excluded, with a
  termination bound (above), O(1) state and no host work; a model that keeps splitting decodes
  like `llada2_edit` once the budget is spent, instead of being nudged to another state;
* it compares with `>` for both thresholds; here M2T uses `>=` (the `select_commit` contract, as
  every algorithm of this plugin) and T2T `>` (as it and the LLaDA2.1 / 2.2 references);
* its post-edit budget is cumulative (never reset when an original mask reappears; the released
  reference resets it). Here it is cumulative too, and the question does not arise: MASK is never
  written, so an original mask cannot reappear;
* it replaces a MASK prediction only at unresolved original masks (T2T may still re-mask); here
  MASK is excluded at every position (T2T never re-masks);
* its final cleanup (when the post-edit budget runs out or after block_size + max_post_edit_steps
  updates) writes every mask with MASK / DELETE / SPLIT scrubbed from the chosen tokens, then needs
  one more forward to persist the block (max_steps = S + max_post_edit_steps + 2). Here the final
  round is the last budgeted post-edit step itself (or the forced one at the hard cap), with the
  control logits excluded before the kernel, so its confidences are those of the allowed tokens,
  and the next step is the done step -- no separate cleanup forward on top of the budget;
* it decodes greedily only; here `sampling: request` honours each request's temperature / top-k /
  top-p / seed, like the other algorithms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, List, Mapping, Sequence

import torch
from sglang.srt.dllm.config import DllmConfig

from sglang_llada.algorithms.base import LladaAlgorithm, confidence_excluding
from sglang_llada.algorithms.edit import request_knobs, resolve_mode, resolve_request_mode, with_request_mode
from sglang_llada.algorithms.knobs import FOLD_STORE, REQUEST_STEP_CAP, Knob, Value
from sglang_llada.algorithms.rows import Rows, RowState
from sglang_llada.kernels.select_commit import select_commit

Tensor = torch.Tensor

NEG_INF = float("-inf")
POS_INF = float("inf")

# mode -> (threshold, edit_threshold, max_edit_steps): LLaDA2.1's presets, kept by LLaDA2.2.
LEVENSHTEIN_MODES: dict[str, tuple[float, float, int]] = {
    "Q": (0.7, 0.5, 16),
    "S": (0.5, 0.0, 16),
}

# The override SGLang itself suggests for JointThresholdInDel (LLaDA2.2's ids).
OVERRIDE_EXAMPLE = '{"delete_token_id": 156930, "split_token_id": 156931}'


@dataclass
class LevenshteinRows(Rows):
    """Batched per-request state on the device (plus the base's logprobs)."""

    prompt: Tensor  # [B, S] bool: prompt positions of the block (they never move)
    orig: Tensor  # [B, S] bool: the token here descends from a mask of the block's start
    steps: Tensor  # [B] int32: writing steps taken in this block
    edit_steps: Tensor  # [B] int32: steps that started with no original mask left
    indel_steps: Tensor  # [B] int32: steps in which a DELETE / SPLIT took effect
    last: Tensor  # [B] bool: the previous step was the final round
    finished: Tensor  # [B] bool


def indel_destinations(is_del: Tensor, is_split: Tensor) -> tuple[Tensor, Tensor]:
    """[B, S] bool, [B, S] bool -> (first, second) [B, S] int64 destination columns.

    first[i]: where position i's token goes (its SPLIT mask for a SPLIT); second[i]: where a SPLIT's
    old token goes. Dropped entries (DELETE, no SPLIT, or a destination >= S) point at column S, a
    sink the caller discards.
    """
    s = is_del.shape[1]
    count = torch.where(is_del, 0, torch.where(is_split, 2, 1))  # [B, S] int64
    dest = torch.cumsum(count, dim=1) - count  # exclusive cumsum
    first = torch.where(~is_del & (dest < s), dest, s)
    second = torch.where(is_split & (dest + 1 < s), dest + 1, s)
    return first, second


def scatter_moved(first: Tensor, second: Tensor, primary: Tensor, secondary: Tensor, fill: Any) -> Tensor:
    """A fresh [B, S] row: `primary` scattered to `first`, `secondary` to `second`, `fill` elsewhere."""
    b, s = primary.shape
    buf = torch.full((b, s + 1), fill, dtype=primary.dtype, device=primary.device)
    buf.scatter_(1, first, primary)
    buf.scatter_(1, second, secondary.to(primary.dtype))  # non-sink destinations never collide
    return buf[:, :s]


def apply_indel(
    written: Tensor, old: Tensor, is_del: Tensor, is_split: Tensor, mask_id: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The block after this step's DELETE / SPLIT, on the device.

    written [B, S] int64: the block with this step's writes; old [B, S]: the block before them;
    is_del / is_split [B, S] bool: where a DELETE / SPLIT was written. -> (tokens [B, S],
    first, second) -- the destinations, to move per-position state the same way.
    """
    first, second = indel_destinations(is_del, is_split)
    primary = torch.where(is_split, mask_id, written)
    return scatter_moved(first, second, primary, old, mask_id), first, second


def check_control_ids(config: DllmConfig, name: str) -> tuple[int, int]:
    """(delete_token_id, split_token_id) from SGLang's DllmConfig, or a ValueError saying how to set them."""
    delete_id = getattr(config, "delete_token_id", None)
    split_id = getattr(config, "split_token_id", None)
    if delete_id is None or split_id is None:
        raise ValueError(
            f"dLLM algorithm {name} needs the checkpoint's DELETE and SPLIT token ids, got "
            f"delete_token_id={delete_id!r}, split_token_id={split_id!r}: declare `delete_token_id` and "
            "`split_token_id` in the checkpoint's config.json (LLaDA2.2 checkpoints do), or pass them with "
            f"--json-model-override-args '{OVERRIDE_EXAMPLE}' (LLaDA2.2's ids; use your checkpoint's)"
        )
    for key, value in (("delete_token_id", delete_id), ("split_token_id", split_id)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"dLLM algorithm {name}: {key} must be a non-negative token id, got {value!r}")
    if len({config.mask_id, delete_id, split_id}) != 3:
        raise ValueError(
            f"dLLM algorithm {name}: mask, DELETE and SPLIT token ids must differ, got mask_id={config.mask_id}, "
            f"delete_token_id={delete_id}, split_token_id={split_id}"
        )
    return delete_id, split_id


class LevenshteinAlgorithm(LladaAlgorithm):
    """LLaDA2.2 M2T + T2T + DELETE / SPLIT decoding (see the module docstring)."""

    NAME: ClassVar[str] = "llada2_levenshtein"
    SUMMARY: ClassVar[str] = (
        "LLaDA2.2: `llada2_edit` plus DELETE (remove a position, shift left) and SPLIT (insert a mask)"
    )
    MODES: ClassVar[Mapping[str, tuple[float, float, int]]] = LEVENSHTEIN_MODES
    KNOBS: ClassVar[Sequence[Knob]] = (
        Knob("mode", "Q", str, choices=tuple(LEVENSHTEIN_MODES)),
        # static defaults = the Q preset; `resolve_mode` applies the chosen mode to absent keys
        Knob("threshold", 0.7, float, 0.0, 1.0),
        Knob("edit_threshold", 0.5, float, 0.0, 1.0),
        Knob("max_edit_steps", 16, int, 0, None),
        Knob("max_indel_steps", 32, int, 0, None),
        FOLD_STORE,  # the final check folded into the next block's first forward (folded_check.py)
    )
    REQUEST_KNOBS: ClassVar[Sequence[Knob]] = request_knobs(KNOBS)
    # a block's final check rides in the next block's forwards under fold_store (folded_check.py)
    FOLDS_CHECKS: ClassVar[bool] = True

    def __init__(self, config: DllmConfig):
        super().__init__(config)
        self.delete_id, self.split_id = check_control_ids(config, self.NAME)
        self.knobs = resolve_mode(self.knobs, config.algorithm_config, self.MODES)
        self.mode = str(self.knobs["mode"])
        self.threshold = float(self.knobs["threshold"])
        self.edit_threshold = float(self.knobs["edit_threshold"])
        self.max_edit_steps = int(self.knobs["max_edit_steps"])
        self.max_indel_steps = int(self.knobs["max_indel_steps"])
        # the server's forced-final-round step (a row's own: `step`, from its knobs)
        self.final_step = self.block_size + self.max_indel_steps + self.max_edit_steps
        self.control_ids = ()  # DELETE / SPLIT are this algorithm's to interpret (`_scored`)

    def max_steps(self, block_size: int) -> int:
        # the bound of the module docstring (forced final round, then the done step), for the
        # largest budgets a request may ask for
        indel = max(self.max_indel_steps, REQUEST_STEP_CAP)
        return block_size + indel + max(self.max_edit_steps, REQUEST_STEP_CAP) + 2

    @classmethod
    def request_preset(cls, checked: Mapping[str, Value]) -> dict[str, Value]:
        return with_request_mode(checked, cls.MODES)

    def resolve_request(self, overrides: Mapping[str, Value]) -> dict[str, Value]:
        return resolve_request_mode(self.knobs, overrides, self.MODES)

    def init_step_state(self, forward_batch: Any) -> List[Any]:
        b, s = forward_batch.batch_size, self.block_size
        device = forward_batch.input_ids.device
        prompt = self._prompt_mask(forward_batch).reshape(b, s).to(torch.bool).clone()
        ids = forward_batch.input_ids.view(b, s)

        def zeros(dtype: torch.dtype) -> Tensor:
            return torch.zeros(b, dtype=dtype, device=device)

        rows = LevenshteinRows(
            **self.base_row_fields(forward_batch),
            prompt=prompt,
            orig=(ids == self.mask_id) & ~prompt,
            steps=zeros(torch.int32),
            edit_steps=zeros(torch.int32),
            indel_steps=zeros(torch.int32),
            last=zeros(torch.bool),
            finished=zeros(torch.bool),
        )
        return [RowState(rows, i) for i in range(b)]

    def step(self, forward_batch: Any, full_logits: Tensor, states: List[Any]) -> List[bool]:
        b, s = forward_batch.batch_size, self.block_size
        rows = self.rows_of(forward_batch, states)
        ids = forward_batch.input_ids.view(b, s)  # shares storage: the result is copied into it
        old = ids.clone()
        prompt = rows.prompt
        masked = (old == self.mask_id) & ~prompt  # [B, S]
        n_masked = masked.sum(dim=1)  # [B]
        n_orig = (masked & rows.orig).sum(dim=1)

        # -- the knobs: one value per row ([B]; requests' custom_params.dllm over the server's)
        knobs = self.step_knobs(forward_batch)
        threshold, edit_threshold = knobs["threshold"], knobs["edit_threshold"]
        max_edit, max_indel = knobs["max_edit_steps"], knobs["max_indel_steps"]
        # a row that has taken this many writing steps is forced into its final round; int64: a
        # server's budgets may reach 2**31 - 1 (int32 on the device), their sum may not
        final_step = s + max_indel.to(torch.int64) + max_edit.to(torch.int64)  # [B]
        row_threshold = threshold[:, None]

        # -- budgets: which rows stop now, which write, which play their final round
        active = ~rows.finished
        idle = active & (n_orig == 0)  # a post-edit step
        rows.edit_steps += idle.to(torch.int32)
        over = rows.edit_steps > max_edit
        stop = active & (rows.last | (idle & over & (n_masked == 0)))  # this forward saw the final block
        rows.finished |= stop
        work = active & ~stop  # [B] rows that write this step
        final = work & ((idle & (rows.edit_steps >= max_edit)) | (rows.steps >= final_step))
        commit_all = idle | final  # commit every mask (introduced ones only, unless forced)
        no_indel = final | (rows.indel_steps >= max_indel)  # [B]
        # everything up to the block's last prompt position stays put (the prompt is a prefix in practice)
        frozen = torch.cumsum(prompt.flip(1).to(torch.int32), dim=1).flip(1) > 0
        no_ctrl = no_indel[:, None] | frozen  # [B, S] positions where DELETE / SPLIT may not be written
        live = ~prompt & work[:, None]

        # -- score: MASK never, DELETE / SPLIT only where they may take effect
        kwargs = self.sampling(forward_batch, rows.steps.to(torch.int64))
        logits = self.adjusted(forward_batch, full_logits, live.reshape(-1))  # logit_bias, penalties
        token, prob = self._scored(logits, live.reshape(-1), no_ctrl.reshape(-1), kwargs)
        token2, prob2 = token.view(b, s), prob.view(b, s)

        # -- M2T: >= 1 + introduced masks while original masks remain, all of them afterwards
        m2t = masked & work[:, None]
        need = (1 + n_masked - n_orig).to(torch.int32)  # [B]
        n_pass = (m2t & (prob2 >= row_threshold)).sum(dim=1)
        block_threshold = torch.where(
            commit_all,
            NEG_INF,
            torch.where(n_pass >= need, threshold, POS_INF),
        ).to(torch.float32)
        written_ids = forward_batch.input_ids.clone()  # select_commit writes in place
        committed, _, _ = select_commit(written_ids, token, prob, m2t.reshape(-1), block_threshold, need, s)
        committed2 = committed.view(b, s)

        # -- T2T (strict), disjoint from the M2T positions
        row_edit = edit_threshold[:, None]
        edit = live & ~masked & (prob2 > row_edit) & (token2 != old)
        written = committed2 | edit
        new = torch.where(edit, token2, written_ids.view(b, s))

        # -- DELETE / SPLIT, consumed now; state and logprobs move with their tokens
        is_del = written & (new == self.delete_id) & ~no_ctrl
        is_split = written & (new == self.split_id) & ~no_ctrl
        before = {f: getattr(rows, f).clone() for f in ("logprobs", "first_at", "last_at")}
        self.record_logprobs(rows, (written & ~is_del & ~is_split).reshape(-1), prob)
        tokens, first, second = apply_indel(new, old, is_del, is_split, self.mask_id)
        orig = scatter_moved(first, second, rows.orig & ~is_split, rows.orig, False)
        ids.copy_(tokens)
        rows.orig.copy_(orig)
        for f, old_values in before.items():  # logprobs and trajectory move with their tokens
            now = getattr(rows, f)
            now.copy_(scatter_moved(first, second, torch.where(is_split, 0, now), old_values, 0))

        # -- bookkeeping and done flags
        changed = (tokens != old).any(dim=1)
        rows.indel_steps += (is_del | is_split).any(dim=1).to(torch.int32)
        rows.steps += work.to(torch.int32)
        rows.last |= final
        rows.finished |= work & ~changed & (n_masked == 0)  # nothing to do and nothing done
        return self.step_done(rows.finished)

    def _scored(self, logits: Tensor, live: Tensor, no_ctrl: Tensor, kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """`confidence` with the MASK logit at -inf everywhere and DELETE / SPLIT at -inf where `no_ctrl`
        (in place, restored after the kernel: base.py `confidence_excluding`)."""
        banned = [(self.mask_id, None), (self.delete_id, no_ctrl), (self.split_id, no_ctrl)]
        return confidence_excluding(logits, live, banned, **kwargs)
