"""The editing decoders' folded final check (fold_store, algorithms/folded_check.py) in process: token
for token, logprob for logprob and trajectory for trajectory the unfolded decoder's output, in one
forward fewer per block.

Each case decodes requests twice -- `fold_store: on` and `off` -- through an emulation of SGLang's
dLLM scheduler rounds: real `Req`s, our hooks (scheduler/folded_store.py `plan_fold`,
output/batch_result.py, output/streaming.py, output/forward_stats.py around the algorithm's run) and
SGLang's own `process_batch_result_dllm` (outputs, finish checks, FDFO accept lengths), synchronous
and FDFO, one request alone or several in one batch. The model is a tiny checkpoint -- the shipped
LLaDA2.1 / LLaDA2.2 toys through the pure-torch forward (toy/torch_model.py) -- or a hand-made one
(`Scripted`), behind a fake model runner that keeps a KV cache of its own: a block's logits are the
forward of what the cache holds before it (the tokens each position was last encoded from) and the
block itself, so a block that attended to a stale or pre-edit neighbour would show in the tokens.
Sampled cases use per-request seeds; the emulated streamer records what each request was sent, so a
held block that went out before its check settled it would show too.
"""

from __future__ import annotations

import functools
from array import array
from types import SimpleNamespace
from typing import Any, Callable, Optional, Sequence

import pytest
import torch
from sglang.srt.dllm.algorithm.base import DllmAlgorithm
from sglang.srt.dllm.config import DllmConfig
from sglang.srt.dllm.mixin.scheduler import SchedulerDllmMixin
from sglang.srt.managers.schedule_batch import FINISH_LENGTH, Req
from sglang.srt.model_executor.forward_batch_info import ForwardMode
from sglang.srt.sampling.sampling_params import SamplingParams

from sglang_llada.algorithms import ForwardRecord
from sglang_llada.algorithms.edit import EditAlgorithm
from sglang_llada.algorithms.folded_check import FoldedCheck
from sglang_llada.algorithms.levenshtein import LevenshteinAlgorithm
from sglang_llada.models.folded_blocks import FoldedBlocks
from sglang_llada.output.batch_result import process_batch_result_before
from sglang_llada.output.forward_stats import ForwardCounts, run_around
from sglang_llada.output.held_blocks import PendingBlock, StaleBlock
from sglang_llada.output.streaming import stream_output_around
from sglang_llada.output.trace import COMMITTED, REWRITTEN
from sglang_llada.scheduler.batch_policy import knobs_onto_batch
from sglang_llada.scheduler.folded_store import plan_fold
from sglang_llada.state import discard, peek

S = 32
LENGTH = 1024  # KV slots per request row


# -- the model ------------------------------------------------------------------------------------


class FakeRunner:
    """A model runner and model: `logits(prefix, block)` [S, V] from a block-causal model, over a KV
    cache kept as the tokens each slot was last encoded from. Counts forwards (each row's too)."""

    def __init__(self, logits: Callable[[tuple[int, ...], tuple[int, ...]], torch.Tensor], rows: int = 16) -> None:
        self._logits = logits
        self.cache: list[list[Optional[int]]] = [[None] * LENGTH for _ in range(rows)]
        self.req_to_token_pool = SimpleNamespace(req_to_token=torch.arange(rows * LENGTH).view(rows, LENGTH))
        self.attn_backend = None
        self.model = self
        self.lm_head = None
        self.forwards = 0
        self.folded_positions = 0

    # what the model computes, as our LLaDA2MoeModelLM does it: every block's K/V written, then each
    # block attends to what its prefix holds and to itself
    def _compute(self, fb: Any, folded: Optional[FoldedBlocks]) -> torch.Tensor:
        self.forwards += 1
        b = fb.batch_size
        rows = fb.req_pool_indices.tolist()
        starts = list(fb.extend_prefix_lens_cpu)
        blocks = fb.input_ids.view(b, S).tolist()
        extra: list[tuple[int, int, list[int]]] = []
        if folded is not None:
            slots = folded.slots.view(-1, S).tolist()
            for blk, toks in zip(slots, folded.token_ids.view(-1, S).tolist()):
                row, pos = divmod(blk[0], LENGTH)
                extra.append((row, pos, toks))
                self.cache[row][pos : pos + S] = toks
            self.folded_positions += len(extra) * S
        for row, start, toks in zip(rows, starts, blocks):
            self.cache[row][start : start + S] = toks
        out = [self._block(row, start, toks) for row, start, toks in zip(rows, starts, blocks)]
        out += [self._block(row, pos, toks) for row, pos, toks in extra]
        return torch.cat(out)

    def _block(self, row: int, start: int, block: list[int]) -> torch.Tensor:
        prefix = self.cache[row][:start]
        assert all(t is not None for t in prefix), "a block attended to KV never written"
        return self._logits(tuple(prefix), tuple(block))  # type: ignore[arg-type]

    def forward(self, fb: Any, pp_proxy_tensors: Any = None) -> Any:
        logits = self._compute(fb, None)
        return SimpleNamespace(logits_output=SimpleNamespace(full_logits=logits), can_run_graph=False)

    def forward_folded(self, fb: Any, layout: FoldedBlocks) -> Any:
        return SimpleNamespace(full_logits=self._compute(fb, layout)[: fb.batch_size * S])

    def __call__(self, ids: torch.Tensor, positions: torch.Tensor, fb: Any) -> torch.Tensor:  # `model.model`
        return self._compute(fb, peek(fb, FoldedBlocks))

    def logits_processor(self, ids: Any, hidden: torch.Tensor, lm_head: Any, fb: Any) -> Any:
        return SimpleNamespace(full_logits=hidden)


def toy_logits(checkpoint: Any) -> Callable[[tuple[int, ...], tuple[int, ...]], torch.Tensor]:
    """A toy checkpoint's block-causal logits of `block` after `prefix` (toy/torch_model.py)."""
    from sglang_llada.testing.reference_llada2 import load_reference

    ref = load_reference(checkpoint)

    @functools.lru_cache(maxsize=4096)
    def logits(prefix: tuple[int, ...], block: tuple[int, ...]) -> torch.Tensor:
        ids = torch.tensor(prefix + block)
        return ref(ids, S)[len(prefix) :].float()

    return logits


# -- the scheduler --------------------------------------------------------------------------------


class Scheduler:
    """What `process_batch_result_dllm` and our result hooks read of SGLang's scheduler."""

    def __init__(self, config: DllmConfig, context_len: int, sent: dict[str, dict[str, list[Any]]]) -> None:
        self.dllm_config = config
        self.context_len = context_len
        self.token_to_kv_pool_allocator = SimpleNamespace(free_group_begin=lambda: None, free_group_end=lambda: None)
        self.metrics_reporter = SimpleNamespace(num_generated_tokens=0, report_prefill_stats=lambda **kw: None)
        self.output_streamer = SimpleNamespace(stream_output=self._stream)
        self.sent = sent

    def _finish_dllm_request_if_needed(self, req: Req) -> None:
        if not req.finished() and req.seqlen + S > self.context_len:
            req.finished_reason = FINISH_LENGTH(length=len(req.output_ids))
        if req.finished():  # released: what checkpoint_around does with the records
            discard(req, StaleBlock)
            discard(req, PendingBlock)

    def _stream(self, reqs: list[Req], return_logprob: bool) -> None:
        def send(_: Any, reqs: list[Req]) -> None:
            for r in reqs:
                out = r.output_ids_through_stop
                got = self.sent.setdefault(r.rid, {"ids": [], "lp": [], COMMITTED: [], REWRITTEN: []})
                got["ids"] += list(out[r.send_token_offset :])
                if r.return_logprob:
                    got["lp"] += r.logprob.output_token_logprobs_val[r.send_output_token_logprobs_offset : len(out)]
                    r.send_output_token_logprobs_offset = len(out)
                for key in (COMMITTED, REWRITTEN):
                    got[key] += (r.customized_info or {}).get(key, [])[r.send_token_offset : len(out)]
                r.send_token_offset = len(out)

        stream_output_around(send, None, reqs)


class Stats:
    """What the held blocks' checks did, over a test (see `checking`)."""

    checks = 0
    rolled_back = 0
    reopened = 0
    settled_finishing = 0


@pytest.fixture
def checking(monkeypatch: pytest.MonkeyPatch) -> Any:
    """SGLang's run behind output/forward_stats.py's hook (the seam), and the checks counted."""
    plain = DllmAlgorithm.run

    def run(self: Any, model_runner: Any, forward_batch: Any, algo_states: Any = None) -> Any:
        return run_around(plain, self, model_runner, forward_batch, algo_states)

    monkeypatch.setattr(DllmAlgorithm, "run", run)
    check = FoldedCheck._check_held

    def counted(self: Any, fb: Any, rows: list[int], held: list[Any], logits: torch.Tensor) -> Any:
        finished, tokens, gathered = check(self, fb, rows, held, logits)
        Stats.checks += len(rows)
        Stats.rolled_back += sum(not f for f in finished)
        Stats.reopened += sum(not f and self.mask_id in t for f, t in zip(finished, tokens))
        return finished, tokens, gathered

    monkeypatch.setattr(FoldedCheck, "_check_held", counted)
    for k in ("checks", "rolled_back", "reopened", "settled_finishing"):
        setattr(Stats, k, 0)
    return Stats


def decode(
    algo: Any,
    logits: Callable[[tuple[int, ...], tuple[int, ...]], torch.Tensor],
    prompts: Sequence[Sequence[int]],
    *,
    batched: bool,
    temperature: float = 0.0,
    max_new: int = 96,
    eos: Sequence[int] = (),
    stop_token_ids: Sequence[int] = (),
    context_len: int = LENGTH,
    knobs: Optional[Sequence[Optional[dict[str, Any]]]] = None,
    penalties: Optional[Sequence[float]] = None,
) -> list[dict[str, Any]]:
    """Every prompt decoded to the end through the emulated scheduler: one batch of all (`batched`) or
    one request after the other. Per request: output ids (through the stop), logprobs, trajectory,
    forwards, the finish reason, and what the streamer sent."""
    runner = FakeRunner(logits)
    config = algo_config(algo)
    sent: dict[str, dict[str, list[Any]]] = {}
    sched = Scheduler(config, context_len, sent)
    worker = SimpleNamespace(model_config=SimpleNamespace(context_len=context_len))
    reqs: list[Req] = []
    for n, prompt in enumerate(prompts):
        custom: dict[str, Any] = {"dllm_trace": True}
        if knobs is not None and knobs[n]:
            custom["dllm"] = knobs[n]
        sp = SamplingParams(
            temperature=temperature, max_new_tokens=max_new, stop_token_ids=list(stop_token_ids) or None,
            sampling_seed=1000 + n if temperature > 0 else None, custom_params=custom,
            presence_penalty=penalties[n] if penalties is not None else 0.0,
        )
        sp.normalize(None)
        req = Req(rid=f"req{n}", origin_input_text="", origin_input_ids=array("q", prompt), sampling_params=sp,
                  return_logprob=True, eos_token_ids=set(eos), vocab_size=None, dllm_config=config)
        full = len(prompt) // S * S  # the prompt's full blocks: prefilled (their KV in the cache)
        runner.cache[n][:full] = list(prompt[:full])
        req.prefix_len = full
        assert type(algo).validate_request(req) is None  # SGLang's scheduler check: keeps the request's knobs on it
        req.kv.req_pool_idx = n
        reqs.append(req)
    groups = [reqs] if batched else [[r] for r in reqs]
    for group in groups:
        for _ in range(10_000):
            live = [r for r in group if not r.finished()]
            if not live:
                break
            _round(algo, runner, sched, worker, live)
        else:
            raise AssertionError("did not finish")
    out = []
    for r in reqs:
        counts = peek(r, ForwardCounts) or ForwardCounts()
        out.append({
            "ids": list(r.output_ids_through_stop),
            "lp": r.logprob.output_token_logprobs_val[: len(r.output_ids_through_stop)],
            COMMITTED: (r.customized_info or {}).get(COMMITTED, [])[: len(r.output_ids_through_stop)],
            REWRITTEN: (r.customized_info or {}).get(REWRITTEN, [])[: len(r.output_ids_through_stop)],
            "forwards": counts.forwards,
            "positions": counts.positions,
            "finish": type(r.finished_reason).__name__,
            "sent": sent.get(r.rid),
        })
    return out


def _round(algo: Any, runner: FakeRunner, sched: Scheduler, worker: Any, reqs: list[Req]) -> None:
    """One scheduling round: each request's current block (a fresh one, or FDFO's unfinished one),
    the algorithm's run behind `plan_fold`, our result hooks, SGLang's result step, the streamer."""
    mask = algo.mask_id
    blocks, starts = [], []
    for req in reqs:
        start = req.prefix_len
        if req.dllm_incomplete_ids:
            block = list(req.dllm_incomplete_ids)
        else:
            fill = list(req.origin_input_ids) + list(req.output_ids) + [mask] * S
            req.full_untruncated_fill_ids = array("q", fill)
            block = fill[start : start + S]
        req.extend_end = start + S
        blocks.append(block)
        starts.append(start)
    b = len(reqs)
    info = sampling_info(reqs)
    fb = SimpleNamespace(
        input_ids=torch.tensor(blocks, dtype=torch.int64).reshape(-1), batch_size=b, dllm_prompt_mask=None,
        positions=torch.tensor([p + j for p in starts for j in range(S)], dtype=torch.int64),
        sampling_info=info, rids=[r.rid for r in reqs], forward_mode=ForwardMode.DLLM_EXTEND,
        extend_prefix_lens_cpu=starts, extend_seq_lens_cpu=[S] * b,
        req_pool_indices=torch.tensor([r.kv.req_pool_idx for r in reqs]), return_logprob=True, moe_num_token_non_padded=None,
    )
    batch = SimpleNamespace(
        reqs=reqs, dllm_config=sched.dllm_config, return_logprob=True, forward_mode=ForwardMode.DLLM_EXTEND,
        prefill_stats=None, dp_cooperation_info=None, batch_size=lambda: b,
    )

    def run(_: Any, forward_batch: Any, batch: Any) -> Any:
        states = [r.dllm_algo_state for r in reqs] if algo.fdfo else None
        logits_output, ids, accept, states_out, graph = algo.run(runner, forward_batch, states)
        return SimpleNamespace(logits_output=logits_output, next_token_ids=ids, accept_length_per_req_cpu=accept,
                               dllm_algo_state=states_out, can_run_cuda_graph=graph, copy_done=None)

    result = plan_fold(run, worker, fb, batch)
    rec = peek(result.logits_output, ForwardRecord)
    if rec is not None and rec.settled:
        Stats.settled_finishing += sum(s.finishes for s in rec.settled.values())
    before = [r.extend_end for r in reqs]
    process_batch_result_before(sched, batch, result)
    SchedulerDllmMixin.process_batch_result_dllm(sched, batch, result)
    for i, req in enumerate(reqs):  # the block is committed: the next one starts after it
        if result.accept_length_per_req_cpu is None or result.accept_length_per_req_cpu[i]:
            req.prefix_len = before[i]


def sampling_info(reqs: list[Req]) -> SimpleNamespace:
    temps = [r.sampling_params.temperature for r in reqs]
    greedy = [r.sampling_params.top_k == 1 for r in reqs]
    seeds = [r.sampling_params.sampling_seed for r in reqs]
    info = SimpleNamespace(
        temperatures=torch.tensor(temps, dtype=torch.float32).view(-1, 1),
        top_ps=torch.ones(len(reqs)), top_ks=torch.tensor([1 if g else 1 << 30 for g in greedy], dtype=torch.int32),
        min_ps=torch.zeros(len(reqs)), logit_bias=None,
        sampling_seed=None if all(s is None for s in seeds) else torch.tensor([s or 0 for s in seeds], dtype=torch.int64),
        is_all_greedy=all(greedy), need_top_p_sampling=False, need_top_k_sampling=False, need_min_p_sampling=False,
        penalizer_orchestrator=Orchestrator(reqs),
    )
    knobs_onto_batch(info, SimpleNamespace(reqs=reqs))  # scheduler/batch_policy.py's hook: the requests' knobs
    return info


class Orchestrator:
    """What our logit adjustments read of SGLang's penalizer orchestrator: the batch's requests."""

    def __init__(self, reqs: list[Req]) -> None:
        self._reqs = reqs
        self.is_required = any(r.sampling_params.presence_penalty for r in reqs)

    def reqs(self) -> list[Req]:
        return self._reqs


def algo_config(algo: Any) -> DllmConfig:
    return algo._test_config


def make(cls: type, knobs: dict[str, Any], fdfo: bool, mask_id: int, **ids: Any) -> Any:
    config = DllmConfig(cls.NAME, knobs, S, mask_id, 8, first_done_first_out_mode=fdfo, **ids)  # type: ignore[attr-defined]
    algo = cls(config)
    algo._test_config = config
    return algo


# -- checks ---------------------------------------------------------------------------------------


def assert_same(folded: list[dict[str, Any]], unfolded: list[dict[str, Any]], exact_counts: bool) -> int:
    """Identical tokens, logprobs, finish reasons and trajectory (up to the forwards folding saved
    before each block); each request was sent exactly its output. Returns the forwards saved."""
    saved = 0
    for got, want in zip(folded, unfolded):
        assert got["ids"] == want["ids"]
        assert got["finish"] == want["finish"]
        assert got["lp"] == pytest.approx(want["lp"], abs=1e-6)
        assert got[REWRITTEN].count(None) == want[REWRITTEN].count(None)
        for g in (got, want):  # streamed in order, nothing held back sent before its check
            assert g["sent"]["ids"] == g["ids"] and g["sent"][COMMITTED] == g[COMMITTED]
            assert g["sent"]["lp"] == pytest.approx(g["lp"], abs=1e-6)
        if not exact_counts:
            continue
        # per block, the folded decoder's forward numbers are the unfolded one's minus the forwards
        # saved before the block: 0 before the first, +1 per block boundary at most
        shift = [w - g for g, w in zip(got[COMMITTED], want[COMMITTED])]
        for i in range(1, len(shift)):
            assert shift[i] - shift[i - 1] in (0, 1), (i, shift)
        for g, w, d in zip(got[REWRITTEN], want[REWRITTEN], shift):
            assert (g is None) == (w is None) and (g is None or w - g == d)
        assert want["forwards"] - got["forwards"] == (shift[-1] if shift else 0)
        saved += want["forwards"] - got["forwards"]
    return saved


def blocks_of(out: dict[str, Any], prompt_len: int) -> int:
    n = prompt_len + len(out["ids"])
    return -(-n // S) - prompt_len // S


# -- the toys -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def toy_prompts() -> list[list[int]]:
    from sglang_llada.eval import render_prompts
    from sglang_llada.toy.tasks import heldout_split
    from sglang_llada.toy.tokenizer import load_tokenizer

    tok = load_tokenizer()
    examples = heldout_split()
    picked = [next(e for e in examples if e.task == t) for t in ("copy", "add", "upper", "sub")]
    return [list(tok(p)["input_ids"]) for p in render_prompts(picked)]


@functools.lru_cache(maxsize=2)
def toy(generation: str) -> Any:
    from sglang_llada.toy import TOY_21_DIR, TOY_22_DIR

    return toy_logits(TOY_21_DIR if generation == "2.1" else TOY_22_DIR)


TOY_MASK, TOY_EOS, TOY_DELETE, TOY_SPLIT = 260, (257, 265), 272, 273


@pytest.mark.parametrize("fdfo", [True, False], ids=["fdfo", "sync"])
@pytest.mark.parametrize("mode,temperature", [("Q", 0.0), ("S", 0.0), ("S", 2.0)])
def test_edit_on_the_21_toy(checking: Any, mode: str, temperature: float, fdfo: bool) -> None:
    """llada2_edit (modes Q and S, greedy and seeded-sampled), alone and four requests batched. At
    temperature 2 most checks edit (rolled back) and one writes EOS (the request ends there)."""
    prompts = toy_prompts()
    runs = {}
    for fold in ("on", "off"):
        algo = make(EditAlgorithm, {"mode": mode, "fold_store": fold}, fdfo, TOY_MASK)
        runs[fold] = {
            batched: decode(algo, toy("2.1"), prompts, batched=batched, temperature=temperature, eos=TOY_EOS)
            for batched in (False, True)
        }
    saved = assert_same(runs["on"][False], runs["off"][False], exact_counts=True)
    assert_same(runs["on"][True], runs["off"][True], exact_counts=fdfo)  # sync: counts are the batch's
    boundaries = sum(blocks_of(o, len(p)) - 1 for o, p in zip(runs["off"][False], prompts))
    # one forward per block boundary, but where a check's edit ended the request
    assert boundaries - checking.settled_finishing <= saved <= boundaries and saved > 0
    assert checking.checks > 0 and (temperature == 0 or checking.rolled_back > 0)


@pytest.mark.parametrize("fdfo", [True, False], ids=["fdfo", "sync"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_levenshtein_on_the_22_toy(checking: Any, temperature: float, fdfo: bool) -> None:
    prompts = toy_prompts()
    runs = {}
    for fold in ("on", "off"):
        algo = make(LevenshteinAlgorithm, {"fold_store": fold}, fdfo, TOY_MASK,
                    delete_token_id=TOY_DELETE, split_token_id=TOY_SPLIT)
        runs[fold] = {
            batched: decode(algo, toy("2.2"), prompts, batched=batched, temperature=temperature, eos=TOY_EOS)
            for batched in (False, True)
        }
    assert_same(runs["on"][False], runs["off"][False], exact_counts=True)
    assert_same(runs["on"][True], runs["off"][True], exact_counts=fdfo)
    assert checking.checks > 0


# -- a hand-made model: edits, DELETE / SPLIT and EOS in the checks ------------------------------

V = 64
EOS, DELETE, SPLIT, MASK = 56, 61, 62, 63  # ordinary tokens 0..55


def scripted(seed: int, flip: float = 0.01, indel: float = 0.0, eos_at: int = 10_000, eos_edit_at: int = -1) -> Callable[..., torch.Tensor]:
    """Block-causal logits over V = 64 that depend on the whole block: each position prefers a token
    of its own (probability ~0.8), and in every forward, drawn from (prefix length, block), a few
    positions (`flip`) prefer another one strongly -- so a block with no mask left is often edited by
    its check (T2T), then settles -- and, with `indel`, DELETE or SPLIT. EOS is preferred from
    absolute position `eos_at`; `eos_edit_at`: a block starting there gets EOS at its position 5 from
    its checks only (a forward that sees it without masks): the request ends by an edit."""

    def logits(prefix: tuple[int, ...], block: tuple[int, ...]) -> torch.Tensor:
        start = len(prefix)
        g = torch.Generator().manual_seed(hash((seed, start, prefix[-4:], block)) & ((1 << 62) - 1))
        out = torch.randn(S, V, generator=g)
        pos = torch.arange(start, start + S)
        out[torch.arange(S), (pos * 7 + seed) % 56] += 6.0
        flips = torch.rand(S, generator=g) < flip
        alt = torch.randint(0, 56, (S,), generator=g)
        out[torch.arange(S)[flips], alt[flips]] += 9.0
        if indel:
            ctrl = torch.rand(S, generator=g) < indel
            which = torch.where(torch.rand(S, generator=g) < 0.5, DELETE, SPLIT)
            out[torch.arange(S)[ctrl], which[ctrl]] += 12.0
        out[pos >= eos_at, EOS] += 12.0
        if start == eos_edit_at and MASK not in block:
            out[5, EOS] += 14.0
        return out

    return logits


def scripted_prompts(seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 56, (n,), generator=g).tolist() for n in (20, 45, 64, 77)]


def both(cls: type, server: dict[str, Any], fdfo: bool, model: Any, prompts: list[list[int]], **kw: Any) -> dict[str, Any]:
    ids = {"delete_token_id": DELETE, "split_token_id": SPLIT} if cls is LevenshteinAlgorithm else {}
    out = {}
    for fold in ("on", "off"):
        algo = make(cls, {**server, "fold_store": fold}, fdfo, MASK, **ids)
        out[fold] = {b: decode(algo, model, prompts, batched=b, eos=(EOS,), **kw) for b in (False, True)}
    return out


@pytest.mark.parametrize("fdfo", [True, False], ids=["fdfo", "sync"])
@pytest.mark.parametrize("mode", ["Q", "S"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_edit_rolls_back_and_matches(checking: Any, mode: str, temperature: float, fdfo: bool) -> None:
    """llada2_edit with checks that find edits: the held block is edited, the next block's step
    discarded, the block checked again -- and the output is the unfolded decoder's."""
    prompts = scripted_prompts(1)
    runs = both(EditAlgorithm, {"mode": mode}, fdfo, scripted(1, eos_at=150), prompts, temperature=temperature, max_new=110)
    assert_same(runs["on"][False], runs["off"][False], exact_counts=True)
    assert_same(runs["on"][True], runs["off"][True], exact_counts=fdfo)
    assert checking.rolled_back > 0 and checking.checks > checking.rolled_back
    if temperature == 0:
        assert {o["finish"] for o in runs["off"][False]} == {"FINISH_MATCHED_TOKEN", "FINISH_LENGTH"}


@pytest.mark.parametrize("fdfo", [True, False], ids=["fdfo", "sync"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_levenshtein_reopens_masks_and_matches(checking: Any, temperature: float, fdfo: bool) -> None:
    """llada2_levenshtein whose checks DELETE / SPLIT: the held block gets masks again and is decoded
    on its own (folded) until it settles."""
    prompts = scripted_prompts(2)
    runs = both(LevenshteinAlgorithm, {"mode": "Q"}, fdfo, scripted(2, indel=0.02, eos_at=150), prompts,
                temperature=temperature, max_new=110)
    assert_same(runs["on"][False], runs["off"][False], exact_counts=True)
    assert_same(runs["on"][True], runs["off"][True], exact_counts=fdfo)
    assert checking.reopened > 0 and checking.rolled_back > checking.reopened


@pytest.mark.parametrize("cls", [EditAlgorithm, LevenshteinAlgorithm])
@pytest.mark.parametrize("fdfo", [True, False], ids=["fdfo", "sync"])
def test_a_check_that_writes_eos_ends_the_request_there(checking: Any, cls: type, fdfo: bool) -> None:
    """The held block's check writes EOS: the request finishes with that block, as unfolded (the
    next block, started early, is dropped; nothing of it is sent)."""
    prompts = [[3] * 40]  # blocks at 32, 64, 96: the one at 64 gets EOS by an edit
    runs = both(cls, {"mode": "Q"}, fdfo, scripted(3, flip=0.0, eos_edit_at=64), prompts, max_new=200)
    got, want = runs["on"][False][0], runs["off"][False][0]
    assert want["finish"] == "FINISH_MATCHED_TOKEN" and want["ids"][-1] == EOS and len(want["ids"]) == 64 + 6 - 40
    assert_same(runs["on"][False], runs["off"][False], exact_counts=True)
    assert checking.settled_finishing >= 2  # alone and batched
    assert got["forwards"] == want["forwards"] - 1  # the first block's check folded, not the second's


@pytest.mark.parametrize("cls", [EditAlgorithm, LevenshteinAlgorithm])
@pytest.mark.parametrize("fdfo", [True, False], ids=["fdfo", "sync"])
def test_stop_ids_budgets_knobs_and_penalties(checking: Any, cls: type, fdfo: bool) -> None:
    """Stop token ids, a max_new_tokens inside a block, a tiny edit budget, per-request knobs (one
    request's own budgets and thresholds) and a request with a presence penalty (never held back:
    the penalty counts its output so far): still the unfolded output, sampled."""
    prompts = scripted_prompts(4)
    knobs = [None, {"max_edit_steps": 1, "edit_threshold": 0.2}, {"mode": "Q"}, None]
    runs = both(cls, {"mode": "S", "max_edit_steps": 2}, fdfo, scripted(4, flip=0.02, indel=0.01), prompts,
                max_new=75, stop_token_ids=[17], knobs=knobs, penalties=[0.0, 0.0, 0.0, 0.5], temperature=1.0)
    assert_same(runs["on"][False], runs["off"][False], exact_counts=True)
    assert_same(runs["on"][True], runs["off"][True], exact_counts=fdfo)
    assert "FINISH_LENGTH" in {o["finish"] for o in runs["off"][False]}
    penalized = runs["on"][False][3]
    assert penalized["forwards"] == runs["off"][False][3]["forwards"]  # its checks ran as plain forwards
    assert checking.rolled_back > 0


# -- the scheduler side ---------------------------------------------------------------------------


def test_would_finish_asks_sglang_on_a_copy() -> None:
    """SGLang's own finish check on a copy of the output: EOS, stop ids, max_new_tokens and the
    context length finish; the request is left as it was."""
    from sglang_llada.scheduler.folded_store import would_finish

    sp = SamplingParams(temperature=0, max_new_tokens=200, stop_token_ids=[9])
    sp.normalize(None)
    req = Req(rid="r", origin_input_text="", origin_input_ids=array("q", [1] * 40), sampling_params=sp,
              eos_token_ids={7}, vocab_size=None)
    req.output_ids.extend([2] * 24)  # the first block [32, 64) accepted
    block = [3] * S
    assert not would_finish(req, [(64, block)], S, 1000)
    assert would_finish(req, [(64, [3] * 5 + [7] + [3] * 26)], S, 1000)  # EOS
    assert would_finish(req, [(64, [9] + [3] * 31)], S, 1000)  # a stop id
    assert would_finish(req, [(64, block)], S, 40 + 24 + 32 + S - 1)  # no room for a next block
    # as SGLang's, the check looks at the new block's tokens (a settled block was checked when it settled)
    assert not would_finish(req, [(32, [1] * 8 + [7] + [2] * 23), (64, block)], S, 1000)
    assert would_finish(req, [(32, [1] * 8 + [7] + [2] * 23)], S, 1000)
    sp.max_new_tokens = 24 + 20
    assert would_finish(req, [(64, block)], S, 1000)  # max_new_tokens inside the block
    assert list(req.output_ids) == [2] * 24 and not req.finished() and req.finished_len is None
