"""Folded store in process: the folded forward's attention layout against LLaDA2's block-causal
mask (models/folded_blocks.py), the algorithms' early accept and stale flags with a fold plan
(algorithms/base.py, unmask.py), and the scheduler side that keeps stale blocks out of the radix
tree (scheduler/folded_store.py). End to end (identical outputs, one forward fewer per block):
tests/e2e/test_folded_store_e2e.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from sglang.srt.dllm.config import DllmConfig
from sglang.srt.model_executor.forward_batch_info import ForwardMode

from sglang_llada.algorithms import FoldPlan, ForwardRecord
from sglang_llada.algorithms.unmask import StaticAlgorithm, ThresholdAlgorithm
from sglang_llada.kernels.block_causal_attention import block_causal_attention, block_causal_attention_reference
from sglang_llada.models.folded_blocks import folded_blocks
from sglang_llada.output.held_blocks import StaleBlock, mark_stale
from sglang_llada.scheduler.folded_store import checkpoint_around, plan_fold
from sglang_llada.startup.dllm_config import check_fold_tree
from sglang_llada.state import attach, peek

M = 0  # mask id
V = 16
S = 4
ALL_KEYS = 1 << 30


# -- the layout -----------------------------------------------------------------------------------


def test_folded_rows_see_the_block_causal_mask_over_two_blocks() -> None:
    """Batch rows (prefix P, their block) plus folded rows (prefix P - S, the block before) under
    ALL_KEYS give every token exactly LLaDA2's block-causal attention over [previous block, block]."""
    g = torch.Generator().manual_seed(0)
    h, hkv, d, slots_total = 4, 2, 8, 64
    k_pool, v_pool = torch.randn(slots_total, hkv, d, generator=g), torch.randn(slots_total, hkv, d, generator=g)
    req_to_token = torch.randperm(slots_total, generator=g).view(4, 16).to(torch.int32)
    pool_idx = torch.tensor([3, 1, 2])
    prefix_lens = [2 * S, S, 3 * S]  # each ends with its (folded) previous block
    rows = [0, 2]
    tokens = [[5, 6, 7, 8], [9, 10, 11, 12]]
    layout = folded_blocks(req_to_token, pool_idx, prefix_lens, rows, tokens, S)
    assert layout.token_ids.tolist() == tokens[0] + tokens[1]
    assert layout.positions.tolist() == [S, S + 1, S + 2, S + 3, 2 * S, 2 * S + 1, 2 * S + 2, 2 * S + 3]
    assert layout.slots.tolist() == req_to_token[3, S : 2 * S].tolist() + req_to_token[2, 2 * S : 3 * S].tolist()
    assert layout.prefix_lens == [2 * S, S, 3 * S, S, 2 * S] and layout.extend_lens == [S] * 5
    assert layout.req_pool_indices.tolist() == [3, 1, 2, 3, 2]

    b, f = len(prefix_lens), len(rows)
    q = torch.randn((b + f) * S, h, d, generator=g)
    got = block_causal_attention(q, k_pool, v_pool, req_to_token, layout.req_pool_indices, layout.prefix_lens,
                                 layout.extend_lens, ALL_KEYS, d**-0.5)
    for i, r in enumerate(rows):  # each folded request as one row of two blocks under the real mask
        two = torch.cat([q[(b + i) * S : (b + i + 1) * S], q[r * S : (r + 1) * S]])
        want = block_causal_attention_reference(two, k_pool, v_pool, req_to_token, pool_idx[r : r + 1],
                                                [prefix_lens[r] - S], [2 * S], S, d**-0.5)
        torch.testing.assert_close(got[(b + i) * S : (b + i + 1) * S].double(), want[:S], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[r * S : (r + 1) * S].double(), want[S:], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        folded_blocks(req_to_token, pool_idx, [0, S, S], [0], [tokens[0]], S)  # no previous block


# -- the algorithms -------------------------------------------------------------------------------


class FoldModel:
    """Logits that depend only on the position: position j's token is j + 1 with probability
    `probs[j]`. Records folded forwards."""

    def __init__(self, probs: list[float]) -> None:
        self.probs = probs
        self.folded: list[Any] = []

    def logits(self, b: int) -> torch.Tensor:
        out = torch.full((b, S, V), -30.0)
        for j, p in enumerate(self.probs):
            out[:, j, j + 1] = 0.0
            out[:, j, j + 5] = float(torch.log(torch.tensor((1 - p) / p)))  # the runner-up
        return out.reshape(-1, V)

    def forward_folded(self, fb: Any, layout: Any) -> Any:
        self.folded.append(layout)
        return SimpleNamespace(full_logits=self.logits(fb.batch_size))


class Runner:
    def __init__(self, model: FoldModel) -> None:
        self.model, self.forwards, self.attn_backend = model, 0, None
        self.req_to_token_pool = SimpleNamespace(req_to_token=torch.arange(4 * 32, dtype=torch.int32).view(4, 32))

    def forward(self, fb: Any, pp_proxy_tensors: Any = None) -> Any:
        self.forwards += 1
        return SimpleNamespace(logits_output=SimpleNamespace(full_logits=self.model.logits(fb.batch_size)), can_run_graph=False)


def _batch(b: int, plan: FoldPlan | None = None) -> SimpleNamespace:
    fb = SimpleNamespace(
        input_ids=torch.full((b * S,), M, dtype=torch.int64), batch_size=b, dllm_prompt_mask=None,
        positions=torch.arange(b * S, dtype=torch.int64) + S, sampling_info=SimpleNamespace(custom_params=None, is_all_greedy=True),
        rids=[f"r{i}" for i in range(b)], forward_mode=SimpleNamespace(is_dllm_extend=lambda: True),
        extend_prefix_lens_cpu=[S] * b, req_pool_indices=torch.arange(b), return_logprob=False,
        moe_num_token_non_padded=None, out_cache_loc=torch.arange(100, 100 + b * S),
    )
    if plan is not None:
        attach(fb, plan)
    return fb


def _algo(cls: type, knobs: dict[str, Any], fdfo: bool = False) -> Any:
    return cls(DllmConfig(cls.NAME, knobs, S, M, 8, first_done_first_out_mode=fdfo))


def test_fold_store_knob() -> None:
    assert _algo(ThresholdAlgorithm, {}).fold_store  # auto: on on the CPU platform (no CUDA graphs)
    assert not _algo(ThresholdAlgorithm, {"fold_store": "off"}).fold_store
    assert ThresholdAlgorithm.folds({"fold_store": "on"}) and not ThresholdAlgorithm.folds({"fold_store": "off"})
    with pytest.raises(ValueError, match="fold_store"):
        _algo(ThresholdAlgorithm, {"fold_store": "yes"})
    # YAML 1.1 reads an unquoted `fold_store: off` as False
    assert not _algo(ThresholdAlgorithm, {"fold_store": False}).fold_store and not ThresholdAlgorithm.folds({"fold_store": False})
    assert _algo(ThresholdAlgorithm, {"fold_store": True}).fold_store and ThresholdAlgorithm.folds({"fold_store": True})
    with pytest.raises(ValueError, match="sampling"):
        _algo(ThresholdAlgorithm, {"sampling": True})  # only on/off knobs take a boolean


def test_a_block_is_accepted_in_the_step_that_commits_its_last_mask() -> None:
    """Sync run: without folding, a block confident everywhere costs 2 forwards (the second sees it
    final and stores its KV); with folding, 1, and the row is reported stale. The plan's folded
    block rides along in the first forward (`forward_folded`), the next forwards are plain ones."""
    for fold, forwards in (("off", 2), ("on", 1)):
        model = FoldModel([0.99] * S)
        runner = Runner(model)
        fb = _batch(2, FoldPlan(rows=[1], token_ids=[[3, 4, 5, 6]]))
        out = _algo(ThresholdAlgorithm, {"fold_store": fold}).run(runner, fb)
        assert fb.input_ids.view(2, S).tolist() == [[1, 2, 3, 4]] * 2
        rec = peek(out[0], ForwardRecord)
        assert rec is not None
        if fold == "off":
            assert runner.forwards == forwards and not model.folded and rec.stale is None and rec.folded_rows is None
            continue
        assert runner.forwards == 0 and len(model.folded) == forwards  # the one forward was the folded one
        layout = model.folded[0]
        assert layout.token_ids.tolist() == [3, 4, 5, 6] and layout.prefix_lens == [S, S, 0]
        assert rec.stale == [True, True] and rec.folded_rows == [1]


def test_stale_flags_name_the_rows_no_forward_saw_final() -> None:
    """Two rows finish at different steps of a sync run: the one that finished first was seen final
    by the last forward (not stale), the other was not (stale)."""
    model = FoldModel([0.99, 0.99, 0.5, 0.5])
    runner = Runner(model)
    fb = _batch(2)
    fb.input_ids.view(2, S)[0, 2:] = torch.tensor([7, 8])  # row 0 only lacks positions 0 and 1
    out = _algo(ThresholdAlgorithm, {"fold_store": "on"}).run(runner, fb)
    rec = peek(out[0], ForwardRecord)
    assert rec is not None
    assert runner.forwards == 3 and not model.folded  # no plan: plain forwards only
    assert rec.stale == [False, True]


def test_fdfo_accepts_early_and_the_static_schedule_folds_too() -> None:
    model = FoldModel([0.99] * S)
    algo = _algo(StaticAlgorithm, {"tokens_per_step": 2, "fold_store": "on"}, fdfo=True)
    fb = _batch(1)
    _, _, accept, states, _ = algo.run(Runner(model), fb, [None])
    assert accept == [0] and states[0] is not None  # 2 of 4 committed
    out, ids, accept, states, _ = algo.run(Runner(model), fb, states)
    assert accept == [S] and ids == [[1, 2, 3, 4]] and states == [None]  # accepted without a further forward
    assert getattr(peek(out, ForwardRecord), "stale", None) == [True]


# -- the scheduler side ---------------------------------------------------------------------------


def _req(prefix_len: int = 3 * 32, protected: int = 2 * 32, extend_end: int = 3 * 32, finished: bool = False) -> Any:
    fill = list(range(200))
    return SimpleNamespace(prefix_len=prefix_len, extend_end=extend_end, full_untruncated_fill_ids=fill,
                           kv=SimpleNamespace(cache_protected_len=protected), finished=lambda: finished)


def test_the_tree_never_takes_a_stale_block() -> None:
    seen: list[int] = []

    def original(self: Any, req: Any, *, up_to: int) -> None:
        seen.append(up_to)

    req = _req()
    attach(req, StaleBlock(64, 96))
    checkpoint_around(original, None, req, up_to=96)  # SGLang's checkpoint after the accept
    checkpoint_around(original, None, req, up_to=64)
    assert seen == [64, 64] and peek(req, StaleBlock) is not None
    done = _req(finished=True)
    attach(done, StaleBlock(64, 96))
    checkpoint_around(original, None, done, up_to=90)  # released: the stale last block is freed
    assert seen[-1] == 64 and peek(done, StaleBlock) is None
    fresh = _req()
    checkpoint_around(original, None, fresh, up_to=96)
    assert seen[-1] == 96


def test_plan_fold_and_mark_stale() -> None:
    foldable, plain, tree_owned, retracted = _req(), _req(), _req(protected=96), _req(prefix_len=32, protected=0)
    for r in (foldable, tree_owned, retracted):
        attach(r, StaleBlock(64, 96))
    batch = SimpleNamespace(reqs=[foldable, plain, tree_owned, retracted], dllm_config=SimpleNamespace(block_size=32))
    fb = SimpleNamespace(forward_mode=ForwardMode.DLLM_EXTEND)
    plans: list[Any] = []
    plan_fold(lambda self, f, b: plans.append(peek(f, FoldPlan)), None, fb, batch)
    assert plans[0].rows == [0] and plans[0].token_ids == [list(range(64, 96))]
    assert peek(fb, FoldPlan) is None  # for the length of the run only
    assert peek(tree_owned, StaleBlock) is None  # the tree's fresh copy backs it
    assert peek(retracted, StaleBlock) is not None  # re-encoded by its prefill, then folded again (harmless)

    logits = SimpleNamespace()
    attach(logits, ForwardRecord(folded_rows=[0], stale=[False, True, True, False]))  # the run's result
    plain.extend_end = 128
    result = SimpleNamespace(logits_output=logits, accept_length_per_req_cpu=[32, 32, 0, 32])
    mark_stale(batch, result)
    assert peek(foldable, StaleBlock) is None  # re-encoded by this run
    assert peek(plain, StaleBlock) == StaleBlock(96, 128)  # accepted early
    assert peek(tree_owned, StaleBlock) is None  # not accepted this round (FDFO accept 0)


def test_start_up_refuses_a_tree_that_would_publish_stale_blocks() -> None:
    from sglang.srt.dllm.algorithm import get_algorithm_cls  # noqa: F401  (registers SGLang's names)
    from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache

    from sglang_llada.algorithms import register

    register()
    config = DllmConfig("llada2_threshold", {"fold_store": "on"}, 32, M, 8)
    check_fold_tree(SimpleNamespace(dllm_config=config, tree_cache=object.__new__(UnifiedRadixCache)))
    with pytest.raises(ValueError, match="fold_store: off"):
        check_fold_tree(SimpleNamespace(dllm_config=config, tree_cache=object()))
    off = DllmConfig("llada2_threshold", {"fold_store": "off"}, 32, M, 8)
    check_fold_tree(SimpleNamespace(dllm_config=off, tree_cache=object()))
