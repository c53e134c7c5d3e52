"""Independent pure-PyTorch reference of LLaDA2 (``LLaDA2MoeModelLM``).

Written from the architecture description only (no SGLang or HF modeling code), so that it can
serve as ground truth for the SGLang-based model class. Everything runs in float32 on CPU.

Contents
--------
* small plain functions for each piece of the forward pass: :func:`rmsnorm`, :func:`rope`,
  :func:`block_causal_mask`, :func:`attention`, :func:`swiglu`, :func:`route`, :func:`moe`, ...
* :class:`RefLLaDA2` / :func:`load_reference`: read ``config.json`` + safetensors (a single
  ``model.safetensors`` or shards named in ``model.safetensors.index.json``; per-expert or fused
  3-D expert tensors) and run ``forward(ids, block_size) -> logits``.
* :func:`generate_reference` / :func:`generate_reference_with_stats`: greedy block-diffusion
  decoding with confidence threshold, the way the LLaDA2 reference decoder does it.
* :func:`count_parameters`: (total, active-per-token) parameter counts from a config alone.
* :func:`weight_shapes`, :func:`random_weights`, :func:`write_checkpoint`: helpers to build toy
  checkpoints for tests.

Shapes are written in brackets: T tokens, H hidden, nH query heads, nKV key/value heads, D head
dim, E routed experts, K experts per token, V vocabulary.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

Tensor = torch.Tensor
Weights = dict[str, Tensor]

__all__ = [
    "Dims",
    "dims_from_config",
    "rmsnorm",
    "rope",
    "block_causal_mask",
    "attention",
    "swiglu",
    "route",
    "moe",
    "RefLLaDA2",
    "load_reference",
    "load_weights",
    "normalize_weights",
    "GenerationResult",
    "generate_reference",
    "generate_reference_with_stats",
    "count_parameters",
    "weight_shapes",
    "random_weights",
    "write_checkpoint",
]


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dims:
    """The architecture numbers of a LLaDA2 config, with the defaults filled in."""

    hidden: int  # H
    layers: int  # L
    heads: int  # nH
    kv_heads: int  # nKV
    head_dim: int  # D
    rotary_dim: int  # rd <= D
    rope_theta: float
    eps: float
    intermediate: int  # I (dense MLP)
    moe_intermediate: int  # Im (one expert)
    experts: int  # E
    top_k: int  # K
    n_group: int  # G (<= 1: no group limit)
    topk_group: int  # TG
    shared_experts: int  # S (0: none)
    first_k_dense: int  # F
    routed_scaling: float
    score_function: str  # "sigmoid" | "softmax"
    expert_bias: bool
    norm_topk_prob: bool
    qkv_bias: bool
    dense_bias: bool
    qk_norm: bool
    tied: bool
    vocab: int  # V
    expert_capacity: int | None = None  # LLaDA2.2 block routing: experts admitted per block
    routing_block: int = 32  # the block of block routing (config.json block_size)


def dims_from_config(config: dict[str, Any]) -> Dims:
    H = int(config["hidden_size"])
    nH = int(config["num_attention_heads"])
    D = int(config.get("head_dim") or H // nH)
    if config.get("partial_rotary_factor") is not None:
        rd = int(D * float(config["partial_rotary_factor"]))
    elif config.get("rotary_dim") is not None:
        rd = int(config["rotary_dim"])
    else:
        rd = D
    use_bias = bool(config.get("use_bias", False))
    qk_norm = config.get("use_qk_norm")
    return Dims(
        hidden=H,
        layers=int(config["num_hidden_layers"]),
        heads=nH,
        kv_heads=int(config.get("num_key_value_heads") or nH),
        head_dim=D,
        rotary_dim=rd,
        rope_theta=float(config.get("rope_theta", 10000.0)),
        eps=float(config.get("rms_norm_eps", 1e-6)),
        intermediate=int(config["intermediate_size"]),
        moe_intermediate=int(config["moe_intermediate_size"]),
        experts=int(config["num_experts"]),
        top_k=int(config["num_experts_per_tok"]),
        n_group=int(config.get("n_group") or 0),
        topk_group=int(config.get("topk_group") or 0),
        shared_experts=int(config.get("num_shared_experts") or 0),
        first_k_dense=int(config.get("first_k_dense_replace") or 0),
        routed_scaling=float(
            1.0 if config.get("routed_scaling_factor") is None else config["routed_scaling_factor"]
        ),
        score_function=str(config.get("score_function") or "sigmoid"),
        expert_bias=bool(config.get("moe_router_enable_expert_bias", False)),
        norm_topk_prob=bool(config.get("norm_topk_prob", False)),
        qkv_bias=bool(config.get("use_qkv_bias", False)) or use_bias,
        dense_bias=use_bias,
        qk_norm=True if qk_norm is None else bool(qk_norm),
        tied=bool(config.get("tie_word_embeddings", False)),
        vocab=int(config["vocab_size"]),
        expert_capacity=None if config.get("expert_capacity") is None else int(config["expert_capacity"]),
        routing_block=int(config.get("block_size") or 32),
    )


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def rmsnorm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """x [..., N], weight [N] -> [..., N]: x * rsqrt(mean(x^2) + eps) * weight."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotate_half(u: Tensor) -> Tensor:
    """u [..., 2m] -> cat([-u2, u1]) with u1, u2 the two halves."""
    u1, u2 = u.chunk(2, dim=-1)
    return torch.cat([-u2, u1], dim=-1)


def rope_cos_sin(positions: Tensor, rotary_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """positions [T] -> (cos, sin) each [T, rd], halves repeated (NeoX style)."""
    inv_freq = theta ** (-(torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim))  # [rd/2]
    angle = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # [T, rd/2]
    cos = torch.cat([angle.cos(), angle.cos()], dim=-1)  # [T, rd]
    sin = torch.cat([angle.sin(), angle.sin()], dim=-1)  # [T, rd]
    return cos, sin


def rope(x: Tensor, positions: Tensor, rotary_dim: int, theta: float) -> Tensor:
    """x [T, heads, D] -> [T, heads, D]; rotate the first rotary_dim dims of every head."""
    cos, sin = rope_cos_sin(positions, rotary_dim, theta)  # [T, rd]
    cos, sin = cos[:, None, :], sin[:, None, :]  # [T, 1, rd]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    return torch.cat([x_rot * cos + rotate_half(x_rot) * sin, x_pass], dim=-1)


def block_causal_mask(T: int, block_size: int) -> Tensor:
    """[T, T] bool, True where query i may attend key j: j // B <= i // B."""
    block = torch.arange(T) // block_size  # [T]
    return block[None, :] <= block[:, None]


def attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor) -> Tensor:
    """GQA attention.

    q [T, nH, D], k/v [T, nKV, D], allowed [T, T] bool -> [T, nH * D].
    Query head j uses kv head j // (nH / nKV); scale 1 / sqrt(D).
    """
    T, nH, D = q.shape
    group = nH // k.shape[1]
    k = k.repeat_interleave(group, dim=1)  # [T, nH, D]
    v = v.repeat_interleave(group, dim=1)  # [T, nH, D]
    scores = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(D)  # [nH, T, T]
    scores = scores.masked_fill(~allowed[None], float("-inf"))
    probs = scores.softmax(dim=-1)  # [nH, T, T]
    out = torch.einsum("hij,jhd->ihd", probs, v)  # [T, nH, D]
    return out.reshape(T, nH * D)


def swiglu(x: Tensor, gate: Tensor, up: Tensor, down: Tensor) -> Tensor:
    """x [T, H], gate/up [I, H], down [H, I] -> [T, H]: down(silu(gate x) * up x)."""
    return (F.silu(x @ gate.T) * (x @ up.T)) @ down.T


def route(
    h: Tensor, gate_weight: Tensor, expert_bias: Tensor | None, dims: Dims
) -> tuple[Tensor, Tensor]:
    """Router. h [T, H], gate_weight [E, H], expert_bias [E] or None.

    Returns (topk_ids [T, K] long, topk_weights [T, K] float32).
    """
    logits = h.float() @ gate_weight.float().T  # [T, E]
    if dims.score_function == "sigmoid":
        scores = logits.sigmoid()
    elif dims.score_function == "softmax":
        scores = logits.softmax(dim=-1)
    else:
        raise ValueError(f"unknown score_function {dims.score_function!r}")
    choice = scores + expert_bias.float() if expert_bias is not None else scores.clone()  # [T, E]

    if dims.n_group > 1 and dims.topk_group > 0:  # else no group limit
        T, E = choice.shape
        per_group = E // dims.n_group
        grouped = choice.view(T, dims.n_group, per_group)  # [T, G, E/G]
        group_score = grouped.topk(min(2, per_group), dim=-1).values.sum(-1)  # [T, G]
        keep_groups = group_score.topk(dims.topk_group, dim=-1).indices  # [T, TG]
        group_keep = torch.zeros_like(group_score, dtype=torch.bool)
        group_keep.scatter_(1, keep_groups, True)  # [T, G]
        expert_keep = group_keep[:, :, None].expand(T, dims.n_group, per_group).reshape(T, E)
        choice = choice.masked_fill(~expert_keep, float("-inf"))

    topk_ids = choice.topk(dims.top_k, dim=-1).indices  # [T, K]
    weights = scores.gather(1, topk_ids)  # [T, K], without the bias
    if dims.norm_topk_prob:
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
    weights = weights * dims.routed_scaling
    return topk_ids, weights


def block_route(h: Tensor, gate_weight: Tensor, expert_bias: Tensor, dims: Dims) -> tuple[Tensor, Tensor]:
    """LLaDA2.2 block routing for one sequence starting at position 0, written as plainly as
    possible: block b = tokens [b * routing_block, (b + 1) * routing_block). Per block, an
    expert's score is its highest (sigmoid + bias) over the block's tokens; the block admits the
    `expert_capacity` best experts (ties: lower id); each token takes its top-k admitted experts
    (ties: lower id). Weights: the chosen sigmoid scores, normalised when K > 1, times the routed
    scaling. Returns (topk_ids [T, K] long, topk_weights [T, K] float32)."""
    logits = h.float() @ gate_weight.float().T  # [T, E]
    scores = 1.0 / (1.0 + torch.exp(-logits))
    choice = scores + expert_bias.float()
    T, E = choice.shape
    ids = torch.zeros(T, dims.top_k, dtype=torch.long)
    weights = torch.zeros(T, dims.top_k)
    for start in range(0, T, dims.routing_block):
        end = min(start + dims.routing_block, T)
        block_score = choice[start:end].max(dim=0).values  # [E]
        ranked = sorted(range(E), key=lambda e: (-float(block_score[e]), e))
        admitted = ranked[: dims.expert_capacity]
        for t in range(start, end):
            best = sorted(admitted, key=lambda e: (-float(choice[t, e]), e))[: dims.top_k]
            ids[t] = torch.tensor(best)
            weights[t] = scores[t, best]
    if dims.top_k > 1:
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
    return ids, weights * dims.routed_scaling


def moe(h: Tensor, w: Weights, prefix: str, dims: Dims) -> Tensor:
    """MoE block. h [T, H] -> [T, H]. prefix is e.g. 'model.layers.3.mlp.'.

    Expects per-expert weights (see :func:`normalize_weights`).
    """
    bias = w.get(prefix + "gate.expert_bias") if dims.expert_bias else None
    if dims.expert_capacity is not None:
        assert bias is not None, "block routing needs the expert bias"
        topk_ids, topk_weights = block_route(h, w[prefix + "gate.weight"], bias, dims)
    else:
        topk_ids, topk_weights = route(h, w[prefix + "gate.weight"], bias, dims)  # [T, K] each
    out = torch.zeros_like(h)  # [T, H]
    for e in range(dims.experts):
        tok, slot = (topk_ids == e).nonzero(as_tuple=True)  # tokens that picked expert e
        if tok.numel() == 0:
            continue
        p = f"{prefix}experts.{e}."
        y = swiglu(h[tok], w[p + "gate_proj.weight"], w[p + "up_proj.weight"], w[p + "down_proj.weight"])
        out.index_add_(0, tok, y * topk_weights[tok, slot][:, None])
    if dims.shared_experts:
        p = prefix + "shared_experts."
        out = out + swiglu(h, w[p + "gate_proj.weight"], w[p + "up_proj.weight"], w[p + "down_proj.weight"])
    return out


def dense_mlp(h: Tensor, w: Weights, prefix: str) -> Tensor:
    """h [T, H] -> [T, H]."""
    return swiglu(h, w[prefix + "gate_proj.weight"], w[prefix + "up_proj.weight"], w[prefix + "down_proj.weight"])


def attention_block(h: Tensor, w: Weights, prefix: str, dims: Dims, positions: Tensor, allowed: Tensor) -> Tensor:
    """h [T, H] (already normed) -> [T, H] (after the output projection). prefix 'model.layers.l.attention.'."""
    T = h.shape[0]
    nH, nKV, D = dims.heads, dims.kv_heads, dims.head_dim
    qkv = h @ w[prefix + "query_key_value.weight"].T  # [T, (nH + 2 nKV) D]
    if dims.qkv_bias:
        qkv = qkv + w[prefix + "query_key_value.bias"]
    q, k, v = qkv.split([nH * D, nKV * D, nKV * D], dim=-1)
    q = q.reshape(T, nH, D)
    k = k.reshape(T, nKV, D)
    v = v.reshape(T, nKV, D)
    if dims.qk_norm:
        q = rmsnorm(q, w[prefix + "query_layernorm.weight"], dims.eps)
        k = rmsnorm(k, w[prefix + "key_layernorm.weight"], dims.eps)
    q = rope(q, positions, dims.rotary_dim, dims.rope_theta)
    k = rope(k, positions, dims.rotary_dim, dims.rope_theta)
    out = attention(q, k, v, allowed)  # [T, nH D]
    out = out @ w[prefix + "dense.weight"].T  # [T, H]
    if dims.dense_bias:
        out = out + w[prefix + "dense.bias"]
    return out


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class RefLLaDA2:
    """Reference LLaDA2 model: a config dict and a dict of float32 per-expert weights."""

    def __init__(self, config: dict[str, Any], weights: Weights, *, strict: bool = True) -> None:
        self.config = dict(config)
        self.dims = dims_from_config(self.config)
        self.weights = normalize_weights({k: v.float() for k, v in weights.items()}, self.dims)
        check_weights(self.weights, self.config, strict=strict)

    @property
    def lm_head(self) -> Tensor:
        """[V, H]: lm_head.weight, or the embedding matrix when tie_word_embeddings."""
        if self.dims.tied:
            return self.weights["model.word_embeddings.weight"]
        return self.weights["lm_head.weight"]

    @torch.no_grad()
    def forward(self, ids: Tensor, block_size: int = 32) -> Tensor:
        """ids [T] long -> logits [T, V] float32, block-causal attention with block_size."""
        d, w = self.dims, self.weights
        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        T = ids.shape[0]
        positions = torch.arange(T)
        allowed = block_causal_mask(T, block_size)  # [T, T]
        x = w["model.word_embeddings.weight"][ids]  # [T, H]
        for layer in range(d.layers):
            p = f"model.layers.{layer}."
            h = rmsnorm(x, w[p + "input_layernorm.weight"], d.eps)
            x = x + attention_block(h, w, p + "attention.", d, positions, allowed)
            h = rmsnorm(x, w[p + "post_attention_layernorm.weight"], d.eps)
            if layer < d.first_k_dense:
                x = x + dense_mlp(h, w, p + "mlp.")
            else:
                x = x + moe(h, w, p + "mlp.", d)
        x = rmsnorm(x, w["model.norm.weight"], d.eps)
        return x @ self.lm_head.T  # [T, V]

    __call__ = forward


_FUSED = re.compile(r"^(model\.layers\.\d+\.mlp\.experts)\.(gate_proj|up_proj|down_proj)$")


def normalize_weights(weights: Weights, dims: Dims | None = None) -> Weights:
    """Split fused 3-D expert tensors ``...mlp.experts.{gate,up,down}_proj`` [E, *, *] into
    per-expert ``...mlp.experts.{e}.{name}.weight``; everything else is kept as is."""
    out: Weights = {}
    for name, t in weights.items():
        m = _FUSED.match(name)
        if m is None:
            out[name] = t
            continue
        if t.dim() != 3:
            raise ValueError(f"fused expert tensor {name} should be 3-D, got {tuple(t.shape)}")
        if dims is not None and t.shape[0] != dims.experts:
            raise ValueError(f"{name}: {t.shape[0]} experts, config says {dims.experts}")
        for e in range(t.shape[0]):
            out[f"{m.group(1)}.{e}.{m.group(2)}.weight"] = t[e].contiguous()
    return out


def weight_shapes(config: dict[str, Any], *, fused_experts: bool = False) -> dict[str, tuple[int, ...]]:
    """Every weight name of a checkpoint for this config -> its shape (lm_head absent if tied)."""
    d = dims_from_config(config)
    H, D, V = d.hidden, d.head_dim, d.vocab
    shapes: dict[str, tuple[int, ...]] = {"model.word_embeddings.weight": (V, H), "model.norm.weight": (H,)}
    if not d.tied:
        shapes["lm_head.weight"] = (V, H)
    for layer in range(d.layers):
        p = f"model.layers.{layer}."
        shapes[p + "input_layernorm.weight"] = (H,)
        shapes[p + "post_attention_layernorm.weight"] = (H,)
        qkv_rows = (d.heads + 2 * d.kv_heads) * D
        shapes[p + "attention.query_key_value.weight"] = (qkv_rows, H)
        if d.qkv_bias:
            shapes[p + "attention.query_key_value.bias"] = (qkv_rows,)
        if d.qk_norm:
            shapes[p + "attention.query_layernorm.weight"] = (D,)
            shapes[p + "attention.key_layernorm.weight"] = (D,)
        shapes[p + "attention.dense.weight"] = (H, d.heads * D)
        if d.dense_bias:
            shapes[p + "attention.dense.bias"] = (H,)
        if layer < d.first_k_dense:
            shapes[p + "mlp.gate_proj.weight"] = (d.intermediate, H)
            shapes[p + "mlp.up_proj.weight"] = (d.intermediate, H)
            shapes[p + "mlp.down_proj.weight"] = (H, d.intermediate)
            continue
        Im, E = d.moe_intermediate, d.experts
        shapes[p + "mlp.gate.weight"] = (E, H)
        if d.expert_bias:
            shapes[p + "mlp.gate.expert_bias"] = (E,)
        if fused_experts:
            shapes[p + "mlp.experts.gate_proj"] = (E, Im, H)
            shapes[p + "mlp.experts.up_proj"] = (E, Im, H)
            shapes[p + "mlp.experts.down_proj"] = (E, H, Im)
        else:
            for e in range(E):
                shapes[p + f"mlp.experts.{e}.gate_proj.weight"] = (Im, H)
                shapes[p + f"mlp.experts.{e}.up_proj.weight"] = (Im, H)
                shapes[p + f"mlp.experts.{e}.down_proj.weight"] = (H, Im)
        if d.shared_experts:
            Is = Im * d.shared_experts
            shapes[p + "mlp.shared_experts.gate_proj.weight"] = (Is, H)
            shapes[p + "mlp.shared_experts.up_proj.weight"] = (Is, H)
            shapes[p + "mlp.shared_experts.down_proj.weight"] = (H, Is)
    return shapes


def check_weights(weights: Weights, config: dict[str, Any], *, strict: bool = True) -> None:
    """Raise if a (per-expert) weight is missing or has the wrong shape; with strict, also if
    there are weights the architecture does not use (a tied checkpoint may still carry lm_head)."""
    expected = weight_shapes(config)
    missing = [n for n in expected if n not in weights]
    if missing:
        raise KeyError(f"{len(missing)} weights missing, e.g. {missing[:5]}")
    wrong = [(n, tuple(weights[n].shape), s) for n, s in expected.items() if tuple(weights[n].shape) != s]
    if wrong:
        raise ValueError(f"wrong shapes (name, got, expected): {wrong[:5]}")
    extra = [n for n in weights if n not in expected and n != "lm_head.weight"]
    if strict and extra:
        raise ValueError(f"{len(extra)} unexpected weights, e.g. {extra[:5]}")


def load_weights(model_dir: str | os.PathLike[str]) -> Weights:
    """All tensors of a checkpoint directory (single file or index + shards), as float32."""
    model_dir = os.fspath(model_dir)
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.exists(os.path.join(model_dir, "model.safetensors")):
        files = ["model.safetensors"]
    else:
        files = sorted(n for n in os.listdir(model_dir) if n.endswith(".safetensors"))
        if not files:
            raise FileNotFoundError(f"no safetensors in {model_dir}")
    weights: Weights = {}
    for name in files:
        with safe_open(os.path.join(model_dir, name), framework="pt", device="cpu") as f:
            for key in f.keys():
                weights[key] = f.get_tensor(key).float()
    return weights


def load_reference(model_dir: str | os.PathLike[str], *, strict: bool = True) -> RefLLaDA2:
    """Read ``config.json`` and the safetensors of ``model_dir`` into a float32 :class:`RefLLaDA2`."""
    with open(os.path.join(os.fspath(model_dir), "config.json")) as f:
        config = json.load(f)
    return RefLLaDA2(config, load_weights(model_dir), strict=strict)


# --------------------------------------------------------------------------------------------
# Block-diffusion decoding
# --------------------------------------------------------------------------------------------


@dataclass
class GenerationResult:
    tokens: list[int]  # the generated tokens (at most max_new_tokens, cut after the first eos)
    num_forwards: int  # model forwards used
    sequence: list[int]  # the whole final sequence: prompt + every decoded position
    forwards_per_block: list[int] = field(default_factory=list)  # per decoded block, in order
    logprobs: list[float] = field(default_factory=list)  # per token: log of its probability at commit


@torch.no_grad()
def generate_reference_with_stats(
    model: RefLLaDA2,
    prompt_ids: list[int],
    max_new_tokens: int,
    *,
    mask_id: int,
    block_size: int = 32,
    threshold: float = 0.95,
    eos_ids: Iterable[int] = frozenset(),
) -> GenerationResult:
    """Greedy LLaDA2 block-diffusion decoding with a confidence threshold.

    The sequence is the prompt followed by ``mask_id``s up to the end of the block that holds
    position ``len(prompt) + max_new_tokens - 1``. Decoding starts at block
    ``len(prompt) // block_size`` (a partial last prompt block is denoised together with the first
    generated positions; prompt positions are never changed). For each block, repeat: forward the
    sequence up to the end of the block (block-causal mask); at the still-masked positions of the
    block take the argmax token and its softmax probability; commit every masked position with
    probability > threshold, or if none passes, the single most confident one (ties: lowest
    index) -- until the block has no masked position. Which positions are still masked is tracked
    separately from the token ids, so a committed token equal to ``mask_id`` counts as decoded.
    With ``eos_ids``, decoding stops after the first block in which an eos was generated, and the
    output is cut after the first eos (inclusive).
    """
    eos = set(eos_ids)
    P = len(prompt_ids)
    if max_new_tokens <= 0:
        return GenerationResult([], 0, list(prompt_ids))
    B = block_size
    end = -(-(P + max_new_tokens) // B) * B  # end of the last block we may need
    seq = torch.full((end,), mask_id, dtype=torch.long)
    seq[:P] = torch.tensor(prompt_ids, dtype=torch.long)
    masked = torch.zeros(end, dtype=torch.bool)
    masked[P:] = True
    commit_prob = torch.zeros(end, dtype=torch.float32)

    forwards = 0
    per_block: list[int] = []
    decoded_until = P
    for block in range(P // B, end // B):
        lo, hi = block * B, (block + 1) * B
        n_fw = 0
        while bool(masked[lo:hi].any()):
            logits = model.forward(seq[:hi], block_size=B)[lo:hi]  # [B, V]
            n_fw += 1
            probs = logits.float().softmax(dim=-1)  # [B, V]
            conf, tok = probs.max(dim=-1)  # [B] each (argmax: first max index)
            still = masked[lo:hi]  # [B]
            conf = conf.masked_fill(~still, float("-inf"))
            commit = still & (conf > threshold)
            if not bool(commit.any()):
                commit = torch.zeros_like(still)
                commit[int(conf.argmax())] = True  # the first of equally confident positions
            seq[lo:hi] = torch.where(commit, tok, seq[lo:hi])
            commit_prob[lo:hi] = torch.where(commit, conf, commit_prob[lo:hi])
            masked[lo:hi] &= ~commit
        forwards += n_fw
        per_block.append(n_fw)
        decoded_until = hi
        if eos and any(int(t) in eos for t in seq[P:hi].tolist()):
            break

    generated = seq[P:decoded_until].tolist()[:max_new_tokens]
    if eos:
        for i, t in enumerate(generated):
            if t in eos:
                generated = generated[: i + 1]
                break
    logprobs = commit_prob[P : P + len(generated)].log().tolist()
    return GenerationResult(generated, forwards, seq[:decoded_until].tolist(), per_block, logprobs)


def generate_reference(
    model: RefLLaDA2,
    prompt_ids: list[int],
    max_new_tokens: int,
    *,
    mask_id: int,
    block_size: int = 32,
    threshold: float = 0.95,
    eos_ids: Iterable[int] = frozenset(),
) -> list[int]:
    """The generated tokens of :func:`generate_reference_with_stats` (see there)."""
    return generate_reference_with_stats(
        model,
        prompt_ids,
        max_new_tokens,
        mask_id=mask_id,
        block_size=block_size,
        threshold=threshold,
        eos_ids=eos_ids,
    ).tokens


# --------------------------------------------------------------------------------------------
# Parameter counts
# --------------------------------------------------------------------------------------------


def count_parameters(config: dict[str, Any]) -> tuple[int, int]:
    """(total, active-per-token) parameter counts, from the config alone.

    Counted (exactly the tensors of an HF LLaDA2 checkpoint):
      * word embeddings [V, H], the final norm [H], and lm_head [V, H] unless
        ``tie_word_embeddings`` (then it is the embedding matrix, counted once);
      * per layer: the two RMSNorms [H] each; query_key_value [(nH + 2 nKV) D, H] plus its bias
        if ``use_qkv_bias`` or ``use_bias``; the q/k RMSNorms [D] each if ``use_qk_norm``
        (default on); dense [H, nH D] plus its bias [H] if ``use_bias``;
      * dense layers (l < first_k_dense_replace): gate/up [I, H] and down [H, I];
      * MoE layers: router [E, H], expert_bias [E] if enabled, E routed experts of
        3 * Im * H each, and the shared expert 3 * (Im S) * H if S > 0.
    Active = total minus, in every MoE layer, the (E - K) routed experts a token does not use;
    embeddings, lm_head, attention, router, norms and shared experts are all counted as active.
    Rotary embeddings have no parameters.
    """
    d = dims_from_config(config)
    H, D, V = d.hidden, d.head_dim, d.vocab

    embed = V * H + (0 if d.tied else V * H) + H  # embeddings, lm_head, final norm

    attn = (d.heads + 2 * d.kv_heads) * D * H + d.heads * D * H + 2 * H  # qkv, dense, 2 layernorms
    if d.qkv_bias:
        attn += (d.heads + 2 * d.kv_heads) * D
    if d.dense_bias:
        attn += H
    if d.qk_norm:
        attn += 2 * D

    dense_mlp_params = 3 * d.intermediate * H
    one_expert = 3 * d.moe_intermediate * H
    router = d.experts * H + (d.experts if d.expert_bias else 0)
    shared = 3 * d.moe_intermediate * d.shared_experts * H

    n_dense = min(d.first_k_dense, d.layers)
    n_moe = d.layers - n_dense
    total = embed + d.layers * attn + n_dense * dense_mlp_params + n_moe * (router + shared + d.experts * one_expert)
    active = total - n_moe * (d.experts - d.top_k) * one_expert
    return total, active


# --------------------------------------------------------------------------------------------
# Toy checkpoints
# --------------------------------------------------------------------------------------------


def random_weights(config: dict[str, Any], seed: int = 0, *, fused_experts: bool = False) -> Weights:
    """Random float32 weights for ``config`` (names/shapes from :func:`weight_shapes`).

    Linear weights ~ N(0, 1/fan_in), embeddings ~ N(0, 1), norms ~ 1 + N(0, 0.1^2), biases and
    expert_bias ~ N(0, 0.1^2): big enough that logits differ visibly between tokens.
    """
    g = torch.Generator().manual_seed(seed)
    out: Weights = {}
    for name, shape in weight_shapes(config, fused_experts=fused_experts).items():
        if name.endswith("word_embeddings.weight"):
            t = torch.randn(shape, generator=g)
        elif name.endswith("norm.weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith(".bias") or name.endswith("expert_bias"):
            t = 0.1 * torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) / math.sqrt(shape[-1])
        out[name] = t
    return out


def write_checkpoint(
    model_dir: str | os.PathLike[str],
    config: dict[str, Any],
    weights: Weights,
    *,
    shards: int = 1,
) -> None:
    """Write ``config.json`` and ``model.safetensors`` (shards == 1) or ``shards`` files plus
    ``model.safetensors.index.json``."""
    model_dir = os.fspath(model_dir)
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    tensors = {k: v.contiguous() for k, v in weights.items()}
    if shards <= 1:
        save_file(tensors, os.path.join(model_dir, "model.safetensors"))
        return
    names = sorted(tensors)
    weight_map: dict[str, str] = {}
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[i::shards]}
        save_file(part, os.path.join(model_dir, fname))
        weight_map.update({n: fname for n in part})
    total_size = sum(t.numel() * t.element_size() for t in tensors.values())
    with open(os.path.join(model_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total_size}, "weight_map": weight_map}, f, indent=2)
