"""Whole-prompt prefill: every full block of a prompt encoded in one forward, not one per forward.

SGLang 0.5.23's dLLM scheduler gives a request at most one block (32 tokens) per forward, prompt
blocks included, so a 1,000-token prompt takes 31 forwards before its first denoising step. The
LLaDA2 reference encodes all full prompt blocks at once under a block-causal mask and denoises the
partial last block together with the first masks; this module makes SGLang's scheduler do the same,
through four hooks (HookRegistry, no patch; the seam table is sglang_llada/seams.py):

1. AROUND `PrefillAdder._get_dllm_extend_len` / `_add_dllm_req` (a request entering the batch)
   and
2. AROUND `PrefillAdder.add_dllm_staging_req` (a request continuing its prefill): a request in its
   prefill phase extends over all its remaining *full* committed blocks, within the budgets the
   adder keeps for any prefill (`--chunked-prefill-size`, `--max-prefill-tokens`, free KV),
   rounded down to whole blocks; the partial block and the masks stay for the denoising rounds.
   SGLang's dLLM budget of `max_running_requests` blocks per round counts such a request as one
   block: it bounds how many requests share a round, not how long their prompts are.
3. AROUND `SchedulerDllmMixin._process_dllm_batches`: a batch of prompt blocks only runs as an
   ordinary `EXTEND` forward (absolute positions from each request's cached prefix; our model
   applies the block-causal mask itself, models/llada2.py). Should a batch mix prompt blocks with
   a denoising block (a radix hit can turn a new request into a denoising one), the prompt blocks
   fall back to one block each and the batch stays `DLLM_EXTEND`, as in SGLang.
4. AFTER `ReqDllmMixin._init_fill_ids_for_dllm`: SGLang advances a request's block offset by one
   block per round; after a many-block prefill the next block starts at the cached prefix.

The algorithm runs an EXTEND batch as one forward with nothing to denoise (algorithms/base.py).
Only our algorithms (`whole_prompt_prefill = True`) are given such batches: SGLang's own assume
one block per request.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from sglang.srt.dllm.config import DllmConfig
    from sglang.srt.dllm.mixin.scheduler import SchedulerDllmMixin
    from sglang.srt.managers.schedule_batch import Req
    from sglang.srt.managers.schedule_policy import PrefillAdder
    from sglang.srt.model_executor.forward_batch_info import ForwardMode


@lru_cache(maxsize=None)
def _algorithm_allows(name: str) -> bool:
    from sglang.srt.dllm.algorithm import get_algorithm_cls

    return bool(getattr(get_algorithm_cls(name), "whole_prompt_prefill", False))


def enabled(dllm_config: DllmConfig | None) -> bool:
    """Whether requests under this DllmConfig get whole-prompt prefill."""
    return (
        dllm_config is not None
        and not dllm_config.requires_separate_context_encoding
        and _algorithm_allows(dllm_config.algorithm)
    )


def full_blocks_end(req: Req, block_size: int) -> int:
    """End of the request's last full committed block (prompt + accepted output)."""
    return (len(req.origin_input_ids) + len(req.output_ids)) // block_size * block_size


def _budget(adder: PrefillAdder) -> int:
    """Tokens the adder can still prefill this round (what it checks for any prefill)."""
    limits = [adder.rem_input_tokens, int(adder.rem_total_tokens)]
    if adder.rem_chunk_tokens is not None:
        limits.append(adder.rem_chunk_tokens)
    return min(limits)


def _prefill_len(adder: PrefillAdder, req: Req, budget: int) -> int:
    """Whole blocks of the request's remaining full prompt blocks that fit `budget` (>= 1 block)."""
    bs = adder.dllm_block_size
    want = full_blocks_end(req, bs) - req.prefix_len
    return min(want, max(budget, bs) // bs * bs)


def extend_len_around(original: Callable[..., Any], self: PrefillAdder, req: Req, prefix_len: int, *a: Any, **kw: Any) -> int:
    """AROUND `PrefillAdder._get_dllm_extend_len` (step 1)."""
    if enabled(self.dllm_config) and req.is_dllm_prefill() and self.rem_dllm_tokens > 0:
        n = _prefill_len(self, req, _budget(self))
        if n >= self.dllm_block_size:
            return n
    return original(self, req, prefix_len, *a, **kw)


def charge_one_block(adder: PrefillAdder, req: Req, rem_blocks_before: int) -> None:
    """After SGLang added `req` to the round (step 1, inside `_add_dllm_req`, scheduler/rounds.py): a
    many-block prefill costs one block of the round's dLLM budget, whatever its length."""
    if enabled(adder.dllm_config) and req.extend_len > adder.dllm_block_size:
        adder.rem_dllm_tokens = rem_blocks_before - adder.dllm_block_size


def staging_req_around(original: Callable[..., Any], self: PrefillAdder, req: Req, *a: Any, **kw: Any) -> Any:
    """AROUND `PrefillAdder.add_dllm_staging_req` (step 2)."""
    result = original(self, req, *a, **kw)
    if not (enabled(self.dllm_config) and req.is_dllm_prefill()) or not self.can_run_list:
        return result
    if self.can_run_list[-1] is not req:
        return result
    # SGLang gave it one block and charged the budgets for it; extend to the remaining full
    # blocks that the budgets still allow, and charge those too.
    current = req.extend_len
    n = _prefill_len(self, req, current + max(_budget(self), 0))
    if n <= current:
        return result
    req.extend_end = req.prefix_len + n
    rem_blocks = self.rem_dllm_tokens
    self._update_prefill_budget(0, n - current, 0, req.retracted_stain)
    self.rem_dllm_tokens = rem_blocks  # SGLang charged its one block already
    from sglang.srt.managers.schedule_policy import AddReqResult

    return AddReqResult.NO_TOKEN if _budget(self) <= 0 else result


def whole_prompt_mode(scheduler: SchedulerDllmMixin, adder: PrefillAdder, mode: ForwardMode) -> ForwardMode:
    """After SGLang built a round (step 3, inside `_process_dllm_batches`, scheduler/rounds.py): a
    round of prompt blocks only runs as one EXTEND forward."""
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    reqs = adder.can_run_list
    if mode != ForwardMode.DLLM_EXTEND or not reqs or not enabled(scheduler.dllm_config):
        return mode
    if all(r.is_dllm_prefill() for r in reqs):
        return ForwardMode.EXTEND
    bs = scheduler.dllm_config.block_size
    for r in reqs:  # mixed with a denoising block: every request one block, as in SGLang
        if r.is_dllm_prefill() and r.extend_len > bs:
            r.extend_end = r.prefix_len + bs
    return mode


def block_offset_after(result: None, req: Req, *a: Any, **kw: Any) -> None:
    """AFTER `ReqDllmMixin._init_fill_ids_for_dllm` (step 4)."""
    if req.dllm_incomplete_ids or not enabled(req.dllm_config):
        return None
    if req.prefix_len > req.dllm_block_offset:
        req.dllm_block_offset = req.prefix_len
    return None
