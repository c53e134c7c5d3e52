"""The decoding trajectory, per output token, for requests that ask: `custom_params: {"dllm_trace": true}`.

Fields (in `meta_info`, one entry per output token, aligned with `output_ids`; streamed chunk by
chunk like the tokens):
  dllm_committed_at  the denoising forward (counted from 1 over the request, as `dllm_forwards`)
                     whose logits chose the token's first write;
  dllm_rewritten_at  the forward that chose its last rewrite, for editing decoders (llada2_edit,
                     llada2_levenshtein); null when it was never rewritten.
A token written by no forward (a literal id committed with the prompt) has null in both. Only
`/generate` returns `meta_info`; SGLang's OpenAI endpoints drop it (and so the trajectory).
`sglang-llada trace` draws them (sglang_llada/trace_view.py).

How: our algorithms number the forwards each block has seen and record, per position, the forward
behind its first and last write (algorithms/base.py `Rows`); `run` pins both [B, S] on its logits
output. BEFORE `process_batch_result_dllm` (output/batch_result.py, after the forward counts),
`append_trace` copies them to the host, once per round and only when a request of the batch asks,
turns them into request-wide forward numbers (the request's forward count when its block started,
forward_stats.py, plus the block's own numbering) and appends the new tokens' values to the
request's `customized_info`, SGLang's per-token output channel, which carries them to `meta_info`.

Checked in the tokenizer (tokenizer/request_checks.py): `dllm_trace` must be a boolean, and needs
one of our algorithms on a diffusion server; anything else is a 400.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from sglang_llada.algorithms import ForwardRecord
from sglang_llada.output.forward_stats import ForwardCounts
from sglang_llada.output.logprobs import new_token_slice
from sglang_llada.state import peek

if TYPE_CHECKING:
    from sglang.srt.managers.schedule_batch import Req, ScheduleBatch

TRACE_KEY = "dllm_trace"  # custom_params key of the opt-in
COMMITTED = "dllm_committed_at"
REWRITTEN = "dllm_rewritten_at"


def wants_trace(req: Req) -> bool:
    custom = getattr(req.sampling_params, "custom_params", None)
    return isinstance(custom, dict) and custom.get(TRACE_KEY) is True


def append_trace(batch: ScheduleBatch, result: Any) -> None:
    """Each tracing request's new tokens' forward numbers onto its `customized_info` (one host copy)."""
    logits_output = getattr(result, "logits_output", None)
    run = peek(logits_output, ForwardRecord) if logits_output is not None else None
    if run is None or run.trace is None or not result.next_token_ids:
        return
    tracing = [i for i, r in enumerate(batch.reqs) if wants_trace(r)]
    if not tracing:
        return
    first, last = (t.to("cpu").tolist() for t in run.trace)  # [B][S] each
    accepted = result.accept_length_per_req_cpu  # FDFO only
    for i in tracing:
        req = batch.reqs[i]
        new = result.next_token_ids[i]
        block = new.tolist() if hasattr(new, "tolist") else list(new)
        cut = new_token_slice(req, block, None if accepted is None else accepted[i])
        if cut is None:
            continue
        counts = peek(req, ForwardCounts) or ForwardCounts()
        f_row = first[i][len(first[i]) - len(block):][cut]
        l_row = last[i][len(last[i]) - len(block):][cut]
        info = req.customized_info if req.customized_info is not None else {}
        req.customized_info = info
        info.setdefault(COMMITTED, []).extend(_number(counts.block_start, f) for f in f_row)
        info.setdefault(REWRITTEN, []).extend(
            _number(counts.block_start, lst) if lst != f else None for f, lst in zip(f_row, l_row)
        )


def _number(block_start: int, local: int) -> Optional[int]:
    return block_start + local if local > 0 else None
