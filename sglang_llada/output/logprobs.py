"""`return_logprob` for diffusion requests: each output token's logprob at the step it was committed.

SGLang 0.5.23's dLLM result path fills no logprobs (a `return_logprob` request gets empty lists).
Our algorithms record a [B, S] buffer of log-probabilities per block (algorithms/base.py) and pin
it on the logits output of `run` (its `ForwardRecord`); BEFORE `SchedulerDllmMixin.process_batch_result_dllm`
(output/batch_result.py), `append_logprobs` copies it to the host (one copy per scheduling round, only when a request of the batch asked for logprobs)
and appends each request's values for its new tokens to `req.logprob.output_token_logprobs_val`
/ `_idx`. SGLang's output streamer then slices them like an autoregressive request's, so they
come back in the usual `meta_info["output_token_logprobs"]` (and OpenAI `logprobs`), cut at a
stop token or string exactly like the text.

Prompt logprobs, top logprobs and token-id logprobs are refused up front (tokenizer/request_checks.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sglang_llada.algorithms import ForwardRecord
from sglang_llada.state import peek

if TYPE_CHECKING:
    from sglang.srt.managers.schedule_batch import Req, ScheduleBatch


def new_token_slice(req: Req, block: list[int], fdfo_accepted: int | None) -> slice | None:
    """Which positions of a request's returned block become new output tokens, as
    `process_batch_result_dllm` decides it; None when none do."""
    if fdfo_accepted is None:  # synchronous mode: the block after its prompt positions
        return slice(0, len(block)) if block else None
    if fdfo_accepted == 0:  # FDFO, block not finished: nothing committed this round
        return None
    n = req.extend_end - len(req.origin_input_ids)  # generated positions so far, this block's last
    if n <= 0:
        return None
    return slice(max(0, len(block) - n), len(block))


def append_logprobs(batch: ScheduleBatch, result: Any) -> None:
    """Each `return_logprob` request's new tokens' logprobs onto `req.logprob` (one host copy)."""
    logits_output = getattr(result, "logits_output", None)
    run = peek(logits_output, ForwardRecord) if logits_output is not None else None
    buf = run.logprobs if run is not None else None
    reqs = batch.reqs
    if buf is None or not result.next_token_ids or not any(r.return_logprob for r in reqs):
        return
    accepted = result.accept_length_per_req_cpu  # FDFO only
    host = buf.to("cpu").tolist()  # [B][S]: the one device->host copy of this round's logprobs
    for i, req in enumerate(reqs):
        if not req.return_logprob:
            continue
        # SGLang's output streamer sends logprobs up to max(len(output_ids), 1) -- the 1 is for an
        # autoregressive first token, whose logprob comes with the prefill. Streamed before this
        # request's first block is committed, that moves its send offset to 1 past an empty list,
        # and the first token's logprob would never be sent: nothing was sent, so move it back.
        values = req.logprob.output_token_logprobs_val
        req.send_output_token_logprobs_offset = min(req.send_output_token_logprobs_offset, len(values))
        new = result.next_token_ids[i]
        block = new.tolist() if hasattr(new, "tolist") else list(new)
        cut = new_token_slice(req, block, None if accepted is None else accepted[i])
        if cut is None:
            continue
        row = host[i][len(host[i]) - len(block):]  # sync mode: the block minus its prompt part
        req.logprob.output_token_logprobs_val.extend(row[cut])
        req.logprob.output_token_logprobs_idx.extend(block[cut])
