"""`llada2_exact` in process: the verification layout (models/draft_copies.py) against the
attention definition, and the whole algorithm against `llada2_static` with `tokens_per_step: 1` on
a fake bidirectional model whose every position's logits depend on the whole block (so drafts are
sometimes wrong and the verifier must catch them), in SGLang's synchronous and FDFO loops.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from sglang.srt.dllm.config import DllmConfig

from sglang_llada.algorithms import ForwardRecord
from sglang_llada.algorithms.exact import ExactAlgorithm, refusal
from sglang_llada.algorithms.unmask import StaticAlgorithm
from sglang_llada.kernels.block_causal_attention import block_causal_attention, block_causal_attention_reference
from sglang_llada.models.draft_copies import compact_kv, draft_copies
from sglang_llada.state import peek
from sglang_llada.testing.batch_knobs import with_request_knobs

M = 0  # mask id
V = 24
S = 8
ALL_KEYS = 1 << 30


def test_copies_layout_is_prefix_plus_own_block() -> None:
    """Each copy attends to its request's cached prefix and its own block, nothing else."""
    g = torch.Generator().manual_seed(0)
    h, hkv, d, copies = 4, 2, 8, 3
    slots_total = 40
    k_pool, v_pool = torch.randn(slots_total, hkv, d, generator=g), torch.randn(slots_total, hkv, d, generator=g)
    req_to_token = torch.randperm(slots_total, generator=g).view(4, 10).to(torch.int32)
    pool_idx = torch.tensor([2, 0, 3])
    prefix_lens = [5, 0, 7]
    rows = [0, 2]  # verify batch rows 0 and 2 (row 1 has nothing left to decode)
    layout = draft_copies(req_to_token, pool_idx, rows, prefix_lens, copies, S)
    c = len(rows) * copies
    q = torch.randn(c * S, h, d, generator=g)
    k_own, v_own = torch.randn(c * S, hkv, d, generator=g), torch.randn(c * S, hkv, d, generator=g)
    out = block_causal_attention(
        q, compact_kv(k_pool[layout.prefix_slots], k_own), compact_kv(v_pool[layout.prefix_slots], v_own),
        layout.req_to_token, layout.rows, layout.prefix_lens, layout.extend_lens, ALL_KEYS, d**-0.5,
    )
    for i, r in enumerate(rows):
        p = prefix_lens[r]
        prefix = req_to_token[pool_idx[r], :p].long()
        for j in range(copies):
            t = (i * copies + j) * S
            keys = torch.cat([k_pool[prefix], k_own[t : t + S]])
            values = torch.cat([v_pool[prefix], v_own[t : t + S]])
            table = torch.arange(p + S, dtype=torch.int32)[None]
            want = block_causal_attention_reference(q[t : t + S], keys, values, table, torch.tensor([0]), [p], [S], ALL_KEYS, d**-0.5)
            torch.testing.assert_close(out[t : t + S].double(), want, rtol=1e-5, atol=1e-5)


class BlockModel:
    """Logits of a position depend on its position and on every token of its block (bidirectional)."""

    def __init__(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.randn(V, 16, generator=g)
        self.pos = torch.randn(S, 16, generator=g)
        self.out = torch.randn(16, V, generator=g) * 3
        self.copies = 0
        self.stored: list[tuple[list[int], list[int]]] = []

    def logits(self, blocks: torch.Tensor) -> torch.Tensor:  # [R, S] -> [R * S, V]
        ctx = self.emb[blocks].mean(dim=1, keepdim=True)  # [R, 1, 16]
        return torch.tanh(ctx + self.pos[None]).matmul(self.out).reshape(-1, V)

    def forward_draft_copies(self, input_ids: torch.Tensor, positions: torch.Tensor, fb: Any, layout: Any) -> torch.Tensor:
        self.copies += 1
        assert layout.extend_lens == [S] * (input_ids.numel() // S)
        return self.logits(input_ids.view(-1, S))

    def store_draft_kv(self, fb: Any, layout: Any, rows: torch.Tensor, loc: torch.Tensor) -> None:
        self.stored.append((rows.tolist(), loc.tolist()))


class Runner:
    def __init__(self, model: BlockModel) -> None:
        self.model, self.forwards, self.attn_backend = model, 0, None
        self.req_to_token_pool = SimpleNamespace(req_to_token=torch.zeros(8, 64, dtype=torch.int32))

    def forward(self, fb: Any, pp_proxy_tensors: Any = None) -> Any:
        self.forwards += 1
        out = SimpleNamespace(full_logits=self.model.logits(fb.input_ids.view(fb.batch_size, S)))
        return SimpleNamespace(logits_output=out, can_run_graph=False)


def _batch(ids: list[list[int]], params: Any = None) -> SimpleNamespace:
    t = torch.tensor(ids, dtype=torch.int64)
    b = t.shape[0]
    return SimpleNamespace(
        input_ids=t.reshape(-1).clone(), batch_size=b, dllm_prompt_mask=None,
        positions=torch.arange(b * S, dtype=torch.int64), sampling_info=with_request_knobs(SimpleNamespace(is_all_greedy=True), params or []),
        rids=[f"r{i}" for i in range(b)], forward_mode=SimpleNamespace(is_dllm_extend=lambda: True),
        extend_prefix_lens_cpu=[0] * b, req_pool_indices=torch.arange(b), return_logprob=False,
        moe_num_token_non_padded=None, out_cache_loc=torch.arange(100, 100 + b * S),
    )


def _algo(cls: type, knobs: dict[str, Any], fdfo: bool = False) -> Any:
    return cls(DllmConfig(algorithm=cls.NAME, algorithm_config=knobs, block_size=S, mask_id=M,
                          max_running_requests=8, first_done_first_out_mode=fdfo))


BLOCKS = [[M] * S, [5, 7, M, M, M, M, M, M], [M, 3, M, M, 9, M, M, M]]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("depth", [1, 3, 8])
def test_exact_equals_one_per_step_in_fewer_forwards(seed: int, depth: int) -> None:
    static_runner = Runner(BlockModel(seed))
    fb_static = _batch(BLOCKS)
    _algo(StaticAlgorithm, {"tokens_per_step": 1, "fold_store": "off"}).run(static_runner, fb_static)

    model = BlockModel(seed)
    runner = Runner(model)
    fb = _batch(BLOCKS)
    algo = _algo(ExactAlgorithm, {"draft_depth": depth})
    out, tokens, _, _, _ = algo.run(runner, fb)
    assert torch.equal(fb.input_ids, fb_static.input_ids)
    assert all((fb.input_ids != M).tolist())
    assert [t.tolist() for t in tokens] == [row[start:] for row, start in zip(fb.input_ids.view(3, S).tolist(), [0, 2, 2])]
    spent = runner.forwards + model.copies
    assert runner.forwards == 1  # the all-mask forward; the verification forwards store the KV
    if depth == 1:  # the one-per-step schedule itself: S commits, the last forward's KV kept
        assert model.copies == S and spent == static_runner.forwards
    else:
        assert spent <= static_runner.forwards
    # the run's one result (base.py `_result`): the loop's forward and the step's verification forwards
    rec = peek(out, ForwardRecord)
    assert rec is not None and rec.forwards == spent and rec.logprobs is algo._last_rows.logprobs
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.forwards = 0  # type: ignore[misc]
    # after each round the kept copies' K/V go to their rows' block slots
    for kept_rows, loc in model.stored:
        assert len(kept_rows) == len(loc) and len(loc) % S == 0
        assert all(r % S == i % S for i, r in enumerate(kept_rows))
        assert all(100 <= slot < 100 + 3 * S and (slot - 100) % S == i % S for i, slot in enumerate(loc))
    # logprobs: every written position got the log-probability it was committed with (< 0, finite)
    lp = algo._last_rows.logprobs
    written = torch.tensor(BLOCKS) == M
    assert bool((lp[written] < 0).all()) and bool(torch.isfinite(lp[written]).all())


@pytest.mark.parametrize("seed", range(4))
def test_exact_in_fdfo_mode_carries_stragglers(seed: int) -> None:
    """FDFO: a run ends once fewer than half of its rows have masks; the rest come back with their
    state (here: the same batch again, finished rows with fresh states and nothing to decode)."""
    blocks = [[M] * S, [5, 7, 9, 3, 2, 1, 4, M], [M, 3, 6, 6, 6, 6, 6, 6]]  # 8 masks, 1, 1
    static_runner = Runner(BlockModel(seed))
    fb_static = _batch(blocks)
    _algo(StaticAlgorithm, {"tokens_per_step": 1, "fold_store": "off"}).run(static_runner, fb_static)
    runner = Runner(BlockModel(seed))
    fb = _batch(blocks)
    algo = _algo(ExactAlgorithm, {"draft_depth": 2}, fdfo=True)
    states: Any = None
    accepted = [False] * 3
    runs = 0
    for _ in range(S + 1):
        _, ids, accept, states, _ = algo.run(runner, fb, states)
        runs += 1
        assert all(a in (0, S) for a in accept)
        assert [st is None for st in states] == [a == S for a in accept]
        accepted = [was or a == S for was, a in zip(accepted, accept)]
        if all(accepted):
            break
    assert all(accepted) and ids == fb_static.input_ids.view(3, S).tolist()
    assert runs > 1  # rows 1 and 2 finish in the first round, row 0 (8 masks, 2 a round at most) is carried


def test_request_draft_depth_is_per_row() -> None:
    model = BlockModel(2)
    runner = Runner(model)
    fb = _batch([[M] * S, [M] * S], params=[{"dllm": {"draft_depth": 1}}, None])
    algo = _algo(ExactAlgorithm, {"draft_depth": 8})
    assert algo._depths(fb) == [1, 8]
    algo.run(runner, fb)
    assert model.copies == S  # row 0 commits one position per verification forward


def test_refused_parameters_name_themselves() -> None:
    assert refusal({"temperature": 0.0, "max_new_tokens": 4}) is None
    assert refusal({"temperature": 0, "frequency_penalty": 0.0, "logit_bias": {}}) is None
    assert "temperature=0.7" in (refusal({"temperature": 0.7}) or "")
    for field, value in (("logit_bias", {"5": 1.0}), ("frequency_penalty", 0.5), ("repetition_penalty", 1.2),
                         ("min_new_tokens", 3), ("presence_penalty", -0.1)):
        error = refusal({"temperature": 0, field: value}) or ""
        assert f"`{field}`" in error and "llada2_exact" in error
