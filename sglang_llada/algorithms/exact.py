"""`llada2_exact`: one-token-per-step greedy decoding, token for token, in fewer forwards.

What it computes: exactly the output of `llada2_static` with `tokens_per_step: 1` (greedy; each
step commits the most confident masked position of the block, the lower position on equal
confidence), which is LLaDA2's quality ceiling and its slowest schedule (32 forwards per block).

How (self-speculative decoding for diffusion LLMs; the idea of arXiv:2510.04147, linear chain):
the logits of the current state s give the exact next commit c1 (the most confident position) and,
for free, a guess of the commits after it: the next most confident positions of the same forward,
d2 .. dD, with their tokens. One verification forward runs the block in D states at once
(copy j = s + c1 + d2 + ... + d(j+1); models/draft_copies.py: each copy sees the cached prefix and
its own block, and nothing is written to the KV cache). The one-per-step decoder from copy j would
commit the most confident masked position of copy j's logits; when that is d(j+2) (same position,
same token), copy j + 1 is a state the exact decoder passes through too. The longest such chain
is kept: every verification forward commits between 1 and D tokens, and its last kept copy's
logits give the next commit and drafts.

No forward only stores KV: the verification forward also computed the kept copy's own K/V, which
are written to the block's slots of the KV cache; after the round that writes a block's last mask
they are exactly its final KV (the forward that other algorithms spend on storing it, base.py).

Forwards per block: 1 (all masks) + verification forwards, against 32 + 1 for the one-per-step
schedule. Positions per forward grow with D (D copies of the block per request), and so do the
verification forward's logits: [A * D * 32, V] for A rows still decoding (fp32, 2.6 GB at A = 16,
D = 8, V = 157,184).

Knob: `draft_depth` (`DRAFT_DEPTH` below: default and range): D, the states verified per forward; per request too
(`custom_params: {"dllm": {"draft_depth": 4}}`). `draft_depth: 1` is the one-per-step schedule
itself, one verification forward per commit.

Exactness: the copies run the same layers and the same attention kernel over the same cached keys
as a denoising forward, so on CPU (torch twin on both paths) each copy's logits are the ones the
one-per-step decoder computes for that state, up to the floating-point effect of a different batch
size in the matrix products (relevant only at an exact tie between two candidates). On GPUs the
denoising forward goes through SGLang's attention backend and the copies through our Triton
kernel: equal to kernel rounding.

What is refused, and why (each a 400 naming the parameter; `request_error` / `validate_request`):
sampling (temperature > 0: exactness in distribution would need the verifier to re-draw every
drafted position with the one-per-step decoder's noise; not implemented), `logit_bias`, the
repetition / frequency / presence penalties and `min_new_tokens` (they adjust each state's logits
by what that state holds; the copies' states differ), and `regex` / `json_schema` (the drafts and
their verification are not restricted by a constraint).

Both of SGLang's loops: synchronous (`--no-dllm-fdfo`: one `run` decodes and stores a whole block
of every row) and FDFO (the default: a run ends once fewer than half of its decoding rows still have masks;
the others finish in later runs, beside new blocks).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, List, Mapping, Optional, Sequence

import torch

from sglang_llada.algorithms.base import NEG_INF, LladaAlgorithm, in_forward_context
from sglang_llada.algorithms.knobs import Knob
from sglang_llada.models.draft_copies import draft_copies

Tensor = torch.Tensor

logger = logging.getLogger(__name__)

DRAFT_DEPTH = Knob("draft_depth", 8, int, 1, 32)

# Request parameters that change a state's logits or draw tokens at random: (field, neutral value).
_REFUSED = (
    ("logit_bias", None),
    ("frequency_penalty", 0.0),
    ("presence_penalty", 0.0),
    ("repetition_penalty", 1.0),
    ("min_new_tokens", 0),
)


def refusal(params: Mapping[str, Any]) -> Optional[str]:
    """Why `llada2_exact` cannot honour these sampling params (a dict, as sent), or None."""
    temperature = params.get("temperature")
    if temperature is not None and float(temperature) > 0:
        return (
            f"temperature={temperature}: --dllm-algorithm llada2_exact decodes greedily (its output equals "
            "one-token-per-step greedy decoding); send temperature 0, or serve with llada2_static / "
            "llada2_threshold to sample"
        )
    for name, neutral in _REFUSED:
        value = params.get(name)
        if value is not None and value != neutral and value != {}:
            return (
                f"`{name}` is not supported by --dllm-algorithm llada2_exact (its drafted states are verified "
                f"without per-state logit adjustments); drop `{name}` or serve with llada2_static"
            )
    return None


class ExactAlgorithm(LladaAlgorithm):
    """Greedy one-per-step decoding, drafted and verified `draft_depth` states per forward."""

    NAME: ClassVar[str] = "llada2_exact"
    SUMMARY: ClassVar[str] = (
        "the output of `llada2_static` with `tokens_per_step: 1` (greedy, most confident position first: "
        "the quality ceiling), token for token, in fewer forwards"
    )
    KNOBS: ClassVar[Sequence[Knob]] = (DRAFT_DEPTH,)
    REQUEST_KNOBS: ClassVar[Sequence[Knob]] = KNOBS
    CONSTRAINT_REFUSAL_WHY: ClassVar[str] = "whose drafted commits are verified unconstrained"
    # The verification forward is a method of our model class (models/llada2.py).
    supported_architectures = ("LLaDA2MoeModelLM",)

    # -- requests ------------------------------------------------------------------------------

    @classmethod
    def request_error(cls, params: Mapping[str, Any]) -> Optional[str]:
        return refusal(params)

    @classmethod
    def validate_request(cls, req: Any) -> Optional[str]:
        error = super().validate_request(req)
        if error:
            return error
        sp = req.sampling_params
        return refusal({
            "temperature": 0.0 if getattr(sp, "top_k", 0) == 1 else getattr(sp, "temperature", 0.0),
            "logit_bias": getattr(sp, "logit_bias", None),
            "frequency_penalty": getattr(sp, "frequency_penalty", 0.0),
            "presence_penalty": getattr(sp, "presence_penalty", 0.0),
            "repetition_penalty": getattr(sp, "repetition_penalty", 1.0),
            "min_new_tokens": getattr(sp, "min_new_tokens", 0),
        })

    def step(self, forward_batch: Any, full_logits: Tensor, states: List[Any]) -> List[bool]:
        """The whole block in one step of the shared loop (base.py `run`, SGLang's loops): from the
        logits of the loop's forward, verification rounds on the run's model runner until no row has
        a masked position (synchronous mode: done after this step, whose last round also left the
        block's final KV in the cache) or, in FDFO mode, until fewer than half of the rows that came
        with masks still have some (those are not done: they come back next run, with their state)."""
        rows = self.rows_of(forward_batch, states)
        verifies, spent, left = self._decode(
            self._runner, forward_batch, rows, full_logits, stragglers_wait=bool(self.fdfo)
        )
        self._tally.add_drafts(verifies, spent)
        return [n == 0 for n in left]

    # -- the rounds ----------------------------------------------------------------------------

    def _depths(self, forward_batch: Any) -> list[int]:
        """Each row's draft depth as host ints (the request's knob, else the server's): the rounds'
        copy counts are decided on the host, so `row_knobs`' device tensors are not used here."""
        rows = self.row_overrides(forward_batch) or ({},) * forward_batch.batch_size
        return [int(self.resolve_request(r)["draft_depth"]) for r in rows]

    def _decode(
        self, model_runner: Any, fb: Any, rows: Any, logits: Tensor, stragglers_wait: bool = False
    ) -> tuple[int, list[int], list[int]]:
        """Verification rounds until no row of the batch has a masked position (with
        `stragglers_wait`, until fewer than half of those that had some at the start have);
        `logits` [N, V] are the current state's.
        Returns the number of verification forwards, the positions they computed for each row [B]
        and each row's masked positions left [B]."""
        b, s = fb.batch_size, self.block_size
        ids = fb.input_ids.view(b, s)
        prompt = getattr(fb, "dllm_prompt_mask", None)
        writable = torch.ones(b, s, dtype=torch.bool, device=ids.device) if prompt is None else ~prompt.view(b, s)
        token, prob = self.scored(logits, self.masked_positions(fb))  # the exact next commit's inputs
        cur_tok, cur_prob = token.view(b, s).clone(), prob.view(b, s).clone()  # [B, S] of the current state
        depths = self._depths(fb)
        depth_dev = torch.tensor(depths, dtype=torch.int64).to(ids.device, non_blocking=True)
        positions = fb.positions.view(b, s)
        verifies, spent, started = 0, [0] * b, 0
        for _ in range(s + 1):  # each round commits >= 1 position of every active row
            left = ((ids == self.mask_id) & writable).sum(dim=1).tolist()  # [B]: the round's one host read
            active = [i for i, n in enumerate(left) if n > 0]
            started = started or len(active)  # rows that came with masks (>= 1 round for them)
            if not active or (stragglers_wait and 2 * len(active) < started):
                break
            # copies beyond a row's masked count would repeat its last state
            d = min(max(depths[r] for r in active), max(left[r] for r in active), s)
            verifies += 1
            for r in active:
                spent[r] += d * s
            self._verify(model_runner, fb, ids, writable, cur_tok, cur_prob, rows, active, d, depth_dev, positions)
        # SGLang logs one line per scheduler forward; these forwards are ours (bench/forwards_bench.py reads it)
        logger.info("llada2_exact: %d verification forwards, %d positions", verifies, sum(spent))
        return verifies, spent, left

    def _verify(
        self, model_runner: Any, fb: Any, ids: Tensor, writable: Tensor, cur_tok: Tensor, cur_prob: Tensor, rows: Any,
        active: list[int], d: int, depth_dev: Tensor, positions: Tensor,
    ) -> None:
        """One verification forward of `d` copies for each of the `active` rows; advances ids /
        cur_tok / cur_prob / the logprobs in place (all [B, S], device ops only)."""
        s = self.block_size
        act = torch.tensor(active, dtype=torch.long).to(ids.device, non_blocking=True)  # [A]
        a = len(active)
        base, tok, prob = ids[act], cur_tok[act], cur_prob[act]  # [A, S]
        # drafts: the d most confident masked positions, ties to the lower position (stable sort)
        order = torch.sort(prob, dim=1, descending=True, stable=True).indices[:, :d]  # [A, d]
        d_tok = tok.gather(1, order)  # [A, d]
        d_ok = prob.gather(1, order) > NEG_INF  # [A, d]: a masked position (the first always is)
        # rank of each position in the chain (d: not drafted); copy j holds ranks <= j
        rank = torch.full((a, s), d, dtype=torch.long, device=ids.device)
        rank.scatter_(1, order, torch.where(d_ok, torch.arange(d, device=ids.device).expand(a, d), d))
        j = torch.arange(d, device=ids.device)
        held = rank[:, None, :] <= j[None, :, None]  # [A, d, S]
        copy_ids = torch.where(held, tok[:, None, :], base[:, None, :])  # [A, d, S]

        layout = draft_copies(
            model_runner.req_to_token_pool.req_to_token, fb.req_pool_indices, active, self._prefix_lens(fb), d, s
        )
        copy_pos = positions[act][:, None, :].expand(a, d, s).reshape(-1)
        logits = self._copies_forward(model_runner, copy_ids.reshape(-1), copy_pos, fb, layout)  # [A * d * S, V]
        c_masked = (copy_ids == self.mask_id) & writable[act][:, None, :]  # [A, d, S]
        c_tok, c_prob = self.scored(logits, c_masked.reshape(-1))
        c_tok, c_prob = c_tok.view(a, d, s), c_prob.view(a, d, s)
        best = c_prob.argmax(dim=2)  # [A, d]: the exact next commit of each copy (first max: lower position)
        best_tok = c_tok.gather(2, best[..., None])[..., 0]
        best_prob = c_prob.gather(2, best[..., None])[..., 0]

        # copy j + 1 is exact iff copy j is and its exact next commit is draft j + 1
        match = (best[:, :-1] == order[:, 1:]) & (best_tok[:, :-1] == d_tok[:, 1:]) & d_ok[:, 1:]
        match &= j[None, 1:] < depth_dev[act][:, None]  # a row's own depth
        kept = 1 + torch.cumprod(match.to(torch.int64), dim=1).sum(dim=1)  # [A] exact copies
        last = (kept - 1)[:, None]
        new_ids = copy_ids.gather(1, last[:, :, None].expand(a, 1, s))[:, 0]  # [A, S]
        ids.index_copy_(0, act, new_ids)
        cur_tok.index_copy_(0, act, c_tok.gather(1, last[:, :, None].expand(a, 1, s))[:, 0])
        cur_prob.index_copy_(0, act, c_prob.gather(1, last[:, :, None].expand(a, 1, s))[:, 0])

        # the kept copies' K/V go to the blocks' slots: after a row's last round they are its final KV
        kept_rows = ((torch.arange(a, device=ids.device) * d + kept - 1)[:, None] * s + torch.arange(s, device=ids.device)).reshape(-1)
        self._in_context(model_runner, fb, lambda model: model.store_draft_kv(fb, layout, kept_rows, fb.out_cache_loc.view(-1, s)[act].reshape(-1)))

        # logprobs: draft 0 was committed with the current state's prob, draft j >= 1 with copy j-1's;
        # trajectory: draft 0 was chosen by the current state's forward, the others by this one
        commit_prob = torch.cat([prob.gather(1, order[:, :1]), best_prob[:, :-1]], dim=1)  # [A, d]
        chosen = j[None, :] < kept[:, None]  # [A, d]
        lp_rows = rows.logprobs[act]  # [A, S]
        lp = torch.log(commit_prob.clamp(min=1e-30))
        lp_rows.scatter_(1, order, torch.where(chosen, lp, lp_rows.gather(1, order)))
        rows.logprobs.index_copy_(0, act, lp_rows)
        now = rows.forward_no[act]  # [A]
        at = torch.where(j[None, :] == 0, now[:, None], now[:, None] + 1).to(torch.int32)  # [A, d]
        for field in (rows.first_at, rows.last_at):  # a commit is a first write here: no edits
            got = field[act]
            got.scatter_(1, order, torch.where(chosen, at, got.gather(1, order)))
            field.index_copy_(0, act, got)
        rows.forward_no.index_copy_(0, act, now + 1)

    @classmethod
    def _copies_forward(cls, model_runner: Any, input_ids: Tensor, positions: Tensor, fb: Any, layout: Any) -> Tensor:
        """The model's verification forward (models/draft_copies.py)."""
        return cls._in_context(model_runner, fb, lambda model: model.forward_draft_copies(input_ids, positions, fb, layout))

    @staticmethod
    def _in_context(model_runner: Any, fb: Any, call: Any) -> Any:
        """`call(model)` inside the batch's forward context (base.py `in_forward_context`)."""
        if not hasattr(model_runner.model, "forward_draft_copies"):
            raise RuntimeError(
                f"llada2_exact needs sglang-llada's LLaDA2MoeModelLM (its verification forward); the model "
                f"is {type(model_runner.model).__name__}"
            )
        return in_forward_context(model_runner, fb, call)

    @staticmethod
    def _prefix_lens(fb: Any) -> list[int]:
        lens = fb.extend_prefix_lens_cpu
        return list(lens) if lens is not None else fb.extend_prefix_lens.tolist()
