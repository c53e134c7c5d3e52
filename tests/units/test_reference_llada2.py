"""Self-checks of the pure-PyTorch LLaDA2 reference (sglang_llada/testing/reference_llada2.py)."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
import torch.nn.functional as F

from sglang_llada.testing import reference_llada2 as ref
from sglang_llada.toy.checkpoint import generate_weights, write_checkpoint
from sglang_llada.toy.config import TOY_ARCH

REAL_CONFIG = Path("/work/shared/reference/llada2-mini/config.json")
VOCAB = 320
MASK_ID = VOCAB - 1


def toy_config(**overrides: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(TOY_ARCH)
    cfg["vocab_size"] = VOCAB
    cfg.update(overrides)
    return cfg


def make_checkpoint(
    tmp: Path, config: dict[str, Any], *, seed: int = 0, fused: bool = False, shards: int = 1
) -> tuple[Path, dict[str, torch.Tensor]]:
    """Random weights for ``config`` written as a checkpoint directory under ``tmp``."""
    weights = generate_weights(config, seed=seed, fused_experts=fused)
    write_checkpoint(tmp, config, weights, num_shards=shards)
    return tmp, weights


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """The toy tensors are tiny: intra-op threads only add overhead (and stall on a busy host)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory: pytest.TempPathFactory) -> ref.RefLLaDA2:
    path, _ = make_checkpoint(tmp_path_factory.mktemp("toy"), toy_config())
    return ref.load_reference(path)


def ids_of(T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB - 1, (T,), generator=torch.Generator().manual_seed(seed))


def changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[T, V] x2 -> [T] bool: rows that differ visibly."""
    return (a - b).abs().amax(-1) > 1e-4


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def test_block_causal_mask() -> None:
    T = 7
    assert torch.equal(ref.block_causal_mask(T, 1), torch.ones(T, T, dtype=torch.bool).tril())
    assert bool(ref.block_causal_mask(T, T).all())
    assert bool(ref.block_causal_mask(T, 100).all())
    m = ref.block_causal_mask(T, 3)
    assert m[0, 2] and m[1, 2] and not m[2, 3] and m[3, 5] and m[6, 0] and not m[5, 6]


def test_attention_matches_sdpa_causal_and_full() -> None:
    g = torch.Generator().manual_seed(0)
    T, nH, nKV, D = 9, 4, 2, 16
    q, k, v = (torch.randn(T, n, D, generator=g) for n in (nH, nKV, nKV))
    # SDPA with kv heads expanded the GQA way (query head j <- kv head j // 2)
    kx, vx = k[:, [j // 2 for j in range(nH)]], v[:, [j // 2 for j in range(nH)]]
    qt, kt, vt = (x.transpose(0, 1) for x in (q, kx, vx))  # [nH, T, D]
    causal = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True).transpose(0, 1).reshape(T, -1)
    full = F.scaled_dot_product_attention(qt, kt, vt).transpose(0, 1).reshape(T, -1)
    torch.testing.assert_close(ref.attention(q, k, v, ref.block_causal_mask(T, 1)), causal)
    torch.testing.assert_close(ref.attention(q, k, v, ref.block_causal_mask(T, T)), full)


def test_rope_properties() -> None:
    g = torch.Generator().manual_seed(0)
    D, rd, theta = 16, 8, 600000.0
    x = torch.randn(5, 3, D, generator=g)
    pos = torch.arange(5) * 7
    y = ref.rope(x, pos, rd, theta)
    assert torch.equal(y[..., rd:], x[..., rd:])  # the non-rotary dims are untouched
    torch.testing.assert_close(y[0], x[0])  # position 0: identity
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))  # a rotation
    # pair (i, i + rd/2) rotates by pos * theta^(-2i/rd)
    i, p = 1, 3
    ang = float(pos[p]) * theta ** (-(2 * i) / rd)
    a, b = x[p, 0, i], x[p, 0, i + rd // 2]
    torch.testing.assert_close(y[p, 0, i], a * torch.cos(torch.tensor(ang)) - b * torch.sin(torch.tensor(ang)))
    torch.testing.assert_close(y[p, 0, i + rd // 2], b * torch.cos(torch.tensor(ang)) + a * torch.sin(torch.tensor(ang)))
    # relative: <rope(q, m), rope(k, n)> depends on m - n only
    q, k = torch.randn(1, 1, D, generator=g), torch.randn(1, 1, D, generator=g)
    d1 = (ref.rope(q, torch.tensor([10]), rd, theta) * ref.rope(k, torch.tensor([4]), rd, theta)).sum()
    d2 = (ref.rope(q, torch.tensor([26]), rd, theta) * ref.rope(k, torch.tensor([20]), rd, theta)).sum()
    torch.testing.assert_close(d1, d2, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Masks at model level
# ---------------------------------------------------------------------------------------------


def test_block_size_1_is_causal(toy_model: ref.RefLLaDA2) -> None:
    ids = ids_of(20)
    full = toy_model.forward(ids, block_size=1)
    # prefix consistency: a causal model gives the same logits for a prefix alone
    torch.testing.assert_close(toy_model.forward(ids[:11], block_size=1), full[:11], rtol=1e-5, atol=1e-5)
    ids2 = ids.clone()
    ids2[11] = (ids[11] + 1) % (VOCAB - 1)
    diff = changed(full, toy_model.forward(ids2, block_size=1))
    assert not bool(diff[:11].any()) and bool(diff[11:].all())


def test_block_size_ge_T_is_bidirectional(toy_model: ref.RefLLaDA2) -> None:
    ids = ids_of(20)
    ids2 = ids.clone()
    ids2[-1] = (ids[-1] + 1) % (VOCAB - 1)
    for B in (20, 32, 1000):
        diff = changed(toy_model.forward(ids, block_size=B), toy_model.forward(ids2, block_size=B))
        assert bool(diff.all()), B  # even position 0 sees the last token


def test_block_causal_property(toy_model: ref.RefLLaDA2) -> None:
    B, T = 8, 40
    ids = ids_of(T)
    base = toy_model.forward(ids, block_size=B)
    for pos in (16, 19, 23, 0, 39):
        b = pos // B
        ids2 = ids.clone()
        ids2[pos] = (ids[pos] + 7) % (VOCAB - 1)
        other = toy_model.forward(ids2, block_size=B)
        torch.testing.assert_close(other[: b * B], base[: b * B], rtol=1e-6, atol=1e-5)
        diff = changed(base, other)
        assert bool(diff[b * B :].all()), pos  # its own block (earlier positions too) and later ones


def test_forward_speed_200_tokens(toy_model: ref.RefLLaDA2) -> None:
    ids = ids_of(200)
    toy_model.forward(ids)
    t0 = time.perf_counter()
    logits = toy_model.forward(ids)
    dt = time.perf_counter() - t0
    print(f"toy forward, 200 tokens: {dt * 1000:.1f} ms")
    assert logits.shape == (200, VOCAB) and logits.dtype == torch.float32
    assert bool(torch.isfinite(logits).all())
    assert dt < 1.0


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def test_fused_and_per_expert_layouts_match(tmp_path: Path) -> None:
    cfg = toy_config()
    per_expert = generate_weights(cfg, seed=3)
    fused = dict(per_expert)
    for layer in range(cfg["first_k_dense_replace"], cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}.mlp.experts."
        for name in ("gate_proj", "up_proj", "down_proj"):
            parts = [fused.pop(f"{p}{e}.{name}.weight") for e in range(cfg["num_experts"])]
            fused[p + name] = torch.stack(parts)  # [E, *, *]
    write_checkpoint(tmp_path / "per_expert", cfg, per_expert)
    write_checkpoint(tmp_path / "fused", cfg, fused, num_shards=3)
    assert (tmp_path / "fused" / "model.safetensors.index.json").exists()
    a, b = ref.load_reference(tmp_path / "per_expert"), ref.load_reference(tmp_path / "fused")
    ids = ids_of(50)
    assert torch.equal(a.forward(ids, 16), b.forward(ids, 16))
    # generate_weights' own fused layout loads as well
    make_checkpoint(tmp_path / "fused2", cfg, seed=3, fused=True)
    ref.load_reference(tmp_path / "fused2")


def test_missing_and_unexpected_weights_are_errors(tmp_path: Path) -> None:
    cfg = toy_config()
    w = generate_weights(cfg)
    with pytest.raises(KeyError):
        ref.RefLLaDA2(cfg, {k: v for k, v in w.items() if "experts.5." not in k})
    with pytest.raises(ValueError):
        ref.RefLLaDA2(cfg, {**w, "model.layers.0.extra.weight": torch.zeros(3)})
    ref.RefLLaDA2(cfg, {**w, "model.layers.0.extra.weight": torch.zeros(3)}, strict=False)


def test_tied_embeddings_and_biases(tmp_path: Path) -> None:
    cfg = toy_config(tie_word_embeddings=True, use_bias=True, use_qkv_bias=True)
    path, w = make_checkpoint(tmp_path, cfg)
    assert "lm_head.weight" not in w and "model.layers.0.attention.dense.bias" in w
    m = ref.load_reference(path)
    assert m.lm_head is m.weights["model.word_embeddings.weight"]
    assert bool(torch.isfinite(m.forward(ids_of(10))).all())


# ---------------------------------------------------------------------------------------------
# MoE
# ---------------------------------------------------------------------------------------------


def test_routed_scaling_factor_scales_routed_output(toy_model: ref.RefLLaDA2) -> None:
    g = torch.Generator().manual_seed(5)
    h = torch.randn(12, 64, generator=g)
    w = toy_model.weights
    prefix = "model.layers.1.mlp."

    def routed(scale: float) -> torch.Tensor:
        d = ref.dims_from_config(toy_config(routed_scaling_factor=scale, num_shared_experts=0))
        return ref.moe(h, w, prefix, d)

    torch.testing.assert_close(routed(2.0), 2.0 * routed(1.0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(routed(2.5), 2.5 * routed(1.0), rtol=1e-5, atol=1e-6)
    # norm_topk_prob: the K weights sum to routed_scaling_factor
    d = ref.dims_from_config(toy_config())
    _, weights = ref.route(h, w[prefix + "gate.weight"], w[prefix + "gate.expert_bias"], d)
    torch.testing.assert_close(weights.sum(-1), torch.full((12,), 2.5))
    # and at model level the logits move
    other = ref.RefLLaDA2(toy_config(routed_scaling_factor=1.0), w)
    ids = ids_of(16)
    assert bool(changed(toy_model.forward(ids), other.forward(ids)).all())


def test_expert_bias_only_affects_choice(toy_model: ref.RefLLaDA2) -> None:
    """Weights are the unbiased scores gathered at the chosen experts."""
    h = torch.randn(6, 64, generator=torch.Generator().manual_seed(2))
    gate = toy_model.weights["model.layers.1.mlp.gate.weight"]
    d = ref.dims_from_config(toy_config(norm_topk_prob=False, routed_scaling_factor=1.0, n_group=0))
    bias = torch.zeros(8)
    bias[3] = 5.0  # expert 3 always chosen, yet weighted by its plain sigmoid score
    ids, weights = ref.route(h, gate, bias, d)
    assert bool((ids == 3).any(-1).all())
    scores = (h @ gate.T).sigmoid()
    torch.testing.assert_close(weights, scores.gather(1, ids))


def group_limited_weights(cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Expert 6 has the best biased score of all, but its group (6, 7) loses to groups (0, 1), (2, 3)."""
    w = generate_weights(cfg, seed=11)
    for layer in range(cfg["first_k_dense_replace"], cfg["num_hidden_layers"]):
        w[f"model.layers.{layer}.mlp.gate.expert_bias"] = torch.tensor([2.0, 2, 2, 2, -10, -10, 3, -10])
    return w


def test_expert_in_losing_group_never_contributes() -> None:
    cfg = toy_config()  # 8 experts, n_group 4 (pairs), topk_group 2, top-2
    assert (cfg["num_experts"], cfg["n_group"], cfg["topk_group"], cfg["num_experts_per_tok"]) == (8, 4, 2, 2)
    w = group_limited_weights(cfg)
    h = torch.randn(30, 64, generator=torch.Generator().manual_seed(4))
    bias = w["model.layers.1.mlp.gate.expert_bias"]
    gate = w["model.layers.1.mlp.gate.weight"]
    ids_grouped, _ = ref.route(h, gate, bias, ref.dims_from_config(cfg))
    ids_free, _ = ref.route(h, gate, bias, ref.dims_from_config(toy_config(n_group=0, topk_group=0)))
    assert bool((ids_grouped < 4).all())  # only groups 0 and 1
    assert bool((ids_free == 6).any(-1).all())  # without groups expert 6 always wins

    # perturbing expert 6 leaves the logits unchanged with group limiting, changes them without
    w2 = dict(w)
    for layer in (1, 2):
        k = f"model.layers.{layer}.mlp.experts.6.down_proj.weight"
        w2[k] = w[k] * 10 + 1
    ids = ids_of(24)
    assert torch.equal(ref.RefLLaDA2(cfg, w).forward(ids), ref.RefLLaDA2(cfg, w2).forward(ids))
    free = toy_config(n_group=1, topk_group=1)
    assert bool(changed(ref.RefLLaDA2(free, w).forward(ids), ref.RefLLaDA2(free, w2).forward(ids)).all())


def test_softmax_score_function(toy_model: ref.RefLLaDA2) -> None:
    cfg = toy_config(score_function="softmax", moe_router_enable_expert_bias=False)
    w = {k: v for k, v in toy_model.weights.items() if not k.endswith("expert_bias")}
    m = ref.RefLLaDA2(cfg, w)
    assert bool(torch.isfinite(m.forward(ids_of(10))).all())
    h = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    d = ref.dims_from_config(toy_config(score_function="softmax", norm_topk_prob=False, routed_scaling_factor=1.0, n_group=0))
    ids, weights = ref.route(h, w["model.layers.1.mlp.gate.weight"], None, d)
    probs = (h @ w["model.layers.1.mlp.gate.weight"].T).softmax(-1)
    torch.testing.assert_close(weights, probs.topk(2, -1).values)


# ---------------------------------------------------------------------------------------------
# Parameter counts
# ---------------------------------------------------------------------------------------------


def test_count_parameters_real_config() -> None:
    cfg = json.loads(REAL_CONFIG.read_text())
    total, active = ref.count_parameters(cfg)
    embed = 2 * cfg["vocab_size"] * cfg["hidden_size"]
    print(
        f"\nLLaDA2.0-mini: total {total:,} ({total / 1e9:.3f}B), active {active:,} ({active / 1e9:.3f}B); "
        f"active without embeddings+lm_head {active - embed:,} ({(active - embed) / 1e9:.3f}B)"
    )
    assert 15.5e9 <= total <= 16.8e9
    assert 1.2e9 <= active <= 1.6e9


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"tie_word_embeddings": True, "use_bias": True},
        {"use_qkv_bias": True, "use_qk_norm": False, "num_shared_experts": 0},
        {"num_shared_experts": 2, "moe_router_enable_expert_bias": False, "first_k_dense_replace": 0},
        {"head_dim": None, "n_group": None, "topk_group": None},
    ],
)
def test_count_parameters_toy_matches_weights(overrides: dict[str, Any]) -> None:
    cfg = toy_config(**overrides)
    total, active = ref.count_parameters(cfg)
    for fused in (False, True):
        w = generate_weights(cfg, fused_experts=fused)
        assert total == sum(t.numel() for t in w.values())
    m = ref.RefLLaDA2(cfg, generate_weights(cfg))
    assert total == sum(t.numel() for t in m.weights.values())
    d = ref.dims_from_config(cfg)
    n_moe = d.layers - d.first_k_dense
    assert total - active == n_moe * (d.experts - d.top_k) * 3 * d.moe_intermediate * d.hidden


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def test_generate_one_forward_per_token_at_threshold_above_one(toy_model: ref.RefLLaDA2) -> None:
    prompt = ids_of(5).tolist()
    r = ref.generate_reference_with_stats(toy_model, prompt, 13, mask_id=MASK_ID, block_size=8, threshold=1.01)
    assert len(r.tokens) == 13
    assert r.sequence[:5] == prompt and r.sequence[5:18] == r.tokens
    assert len(r.sequence) == 24  # blocks 0 (partial), 1, 2
    assert r.forwards_per_block == [3, 8, 8] and r.num_forwards == 24 - 5
    again = ref.generate_reference_with_stats(toy_model, prompt, 13, mask_id=MASK_ID, block_size=8, threshold=1.01)
    assert again.tokens == r.tokens and again.num_forwards == r.num_forwards
    assert ref.generate_reference(toy_model, prompt, 13, mask_id=MASK_ID, block_size=8, threshold=1.01) == r.tokens

    # prompt ending on a block boundary: decoding starts at the next block
    prompt16 = ids_of(16, seed=2).tolist()
    r16 = ref.generate_reference_with_stats(toy_model, prompt16, 8, mask_id=MASK_ID, block_size=8, threshold=1.01)
    assert r16.sequence[:16] == prompt16 and r16.forwards_per_block == [8] and len(r16.tokens) == 8


def test_generate_commits_most_confident_first(toy_model: ref.RefLLaDA2) -> None:
    """With threshold > 1, the first committed position of the block is the argmax-confidence one."""
    prompt = ids_of(6, seed=3).tolist()
    B = 8
    seq = torch.tensor(prompt + [MASK_ID] * 2)
    probs = toy_model.forward(seq, block_size=B).softmax(-1)[6:8]  # [2, V]
    conf, tok = probs.max(-1)
    first = int(conf.argmax())
    r = ref.generate_reference_with_stats(toy_model, prompt, 2, mask_id=MASK_ID, block_size=B, threshold=1.01)
    assert r.tokens[first] == int(tok[first]) and r.num_forwards == 2


def test_generate_threshold_zero_one_forward_per_block(toy_model: ref.RefLLaDA2) -> None:
    prompt = ids_of(5).tolist()
    r = ref.generate_reference_with_stats(toy_model, prompt, 13, mask_id=MASK_ID, block_size=8, threshold=0.0)
    assert r.forwards_per_block == [1, 1, 1] and len(r.tokens) == 13
    # the first block commits the argmax of one forward of prompt + masks
    seq = torch.tensor(prompt + [MASK_ID] * 3)
    assert r.tokens[:3] == toy_model.forward(seq, block_size=8)[5:8].argmax(-1).tolist()


def test_generate_stops_at_eos(toy_model: ref.RefLLaDA2) -> None:
    prompt = ids_of(5).tolist()
    full = ref.generate_reference_with_stats(toy_model, prompt, 20, mask_id=MASK_ID, block_size=8, threshold=0.9)
    eos = full.tokens[1]
    cut = ref.generate_reference_with_stats(
        toy_model, prompt, 20, mask_id=MASK_ID, block_size=8, threshold=0.9, eos_ids={eos}
    )
    first = full.tokens.index(eos)
    assert cut.tokens == full.tokens[: first + 1]
    assert len(cut.forwards_per_block) == 1  # eos in the first decoded block: no further block
    assert ref.generate_reference(toy_model, prompt, 0, mask_id=MASK_ID) == []
