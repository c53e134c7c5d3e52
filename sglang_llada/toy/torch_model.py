"""The one pure-PyTorch LLaDA2 forward, and the trainable toy module built on it.

:func:`forward` runs LLaDA2 (``LLaDA2MoeModelLM``) over a dict of checkpoint-named float32
weights. It is written from the architecture description only (no SGLang or HF modeling code,
independent of `models/llada2.py`), and it is the only one: the toy trainer trains with it
(:class:`ToyLLaDA2`) and the tests' reference (`testing/reference_llada2.py`) checks our SGLang
model class against it, so the toy is trained with exactly the function the served model is
checked against.

Covered: GQA attention with fused QKV (optional biases), QK RMSNorm, NeoX partial rotary; dense
first layers; sigmoid/softmax router with expert bias, group-limited top-k, norm_topk_prob,
routed scaling; LLaDA2.2 block routing (``expert_capacity``); shared experts; tied embeddings.
Attention takes an explicit boolean mask [B, T, T] (True = may attend), so the same function runs
block-causal (diffusion), causal (the autoregressive twin) or the trainer's clean+noisy layout.

Shapes are written in brackets: B batch, T tokens, H hidden, nH query heads, nKV key/value heads,
D head dim, E routed experts, K experts per token, V vocabulary.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sglang_llada.toy.checkpoint import Dims, dims_from_config, expected_weight_shapes

Tensor = torch.Tensor
Weights = dict[str, Tensor]


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
    """positions [..., T] -> (cos, sin) each [..., T, rd], halves repeated (NeoX style)."""
    inv_freq = theta ** (
        -(torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=positions.device) / rotary_dim)
    )  # [rd/2]
    angle = positions.to(torch.float32)[..., None] * inv_freq  # [..., T, rd/2]
    cos = torch.cat([angle.cos(), angle.cos()], dim=-1)  # [..., T, rd]
    sin = torch.cat([angle.sin(), angle.sin()], dim=-1)  # [..., T, rd]
    return cos, sin


def rope(x: Tensor, positions: Tensor, rotary_dim: int, theta: float) -> Tensor:
    """x [..., T, heads, D], positions [..., T] -> [..., T, heads, D]; rotate the first rotary_dim
    dims of every head."""
    cos, sin = rope_cos_sin(positions, rotary_dim, theta)  # [..., T, rd]
    cos, sin = cos[..., None, :], sin[..., None, :]  # [..., T, 1, rd]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    return torch.cat([x_rot * cos + rotate_half(x_rot) * sin, x_pass], dim=-1)


def block_causal_mask(T: int, block_size: int) -> Tensor:
    """[T, T] bool, True where query i may attend key j: j // B <= i // B."""
    block = torch.arange(T) // block_size  # [T]
    return block[None, :] <= block[:, None]


def attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor) -> Tensor:
    """GQA attention.

    q [..., T, nH, D], k/v [..., T, nKV, D], allowed [..., T, T] bool -> [..., T, nH * D].
    Query head j uses kv head j // (nH / nKV); scale 1 / sqrt(D).
    """
    *lead, T, nH, D = q.shape
    group = nH // k.shape[-2]
    k = k.repeat_interleave(group, dim=-2)  # [..., T, nH, D]
    v = v.repeat_interleave(group, dim=-2)  # [..., T, nH, D]
    scores = torch.einsum("...ihd,...jhd->...hij", q, k) / math.sqrt(D)  # [..., nH, T, T]
    scores = scores.masked_fill(~allowed[..., None, :, :], float("-inf"))
    probs = scores.softmax(dim=-1)  # [..., nH, T, T]
    out = torch.einsum("...hij,...jhd->...ihd", probs, v)  # [..., T, nH, D]
    return out.reshape(*lead, T, nH * D)


def swiglu(x: Tensor, gate: Tensor, up: Tensor, down: Tensor) -> Tensor:
    """x [N, H], gate/up [I, H], down [H, I] -> [N, H]: down(silu(gate x) * up x)."""
    return (F.silu(x @ gate.T) * (x @ up.T)) @ down.T


def route(
    h: Tensor, gate_weight: Tensor, expert_bias: Tensor | None, dims: Dims
) -> tuple[Tensor, Tensor]:
    """Router. h [N, H], gate_weight [E, H], expert_bias [E] or None.

    Returns (topk_ids [N, K] long, topk_weights [N, K] float32). The bias only picks experts;
    the weights are the unbiased scores (they carry the router's gradient when training).
    """
    logits = h.float() @ gate_weight.float().T  # [N, E]
    if dims.score_function == "sigmoid":
        scores = logits.sigmoid()
    elif dims.score_function == "softmax":
        scores = logits.softmax(dim=-1)
    else:
        raise ValueError(f"unknown score_function {dims.score_function!r}")
    choice = scores.detach()
    if expert_bias is not None:
        choice = choice + expert_bias.float()  # [N, E]

    if dims.n_group > 1 and dims.topk_group > 0:  # else no group limit
        N, E = choice.shape
        per_group = E // dims.n_group
        grouped = choice.view(N, dims.n_group, per_group)  # [N, G, E/G]
        group_score = grouped.topk(min(2, per_group), dim=-1).values.sum(-1)  # [N, G]
        keep_groups = group_score.topk(dims.topk_group, dim=-1).indices  # [N, TG]
        group_keep = torch.zeros_like(group_score, dtype=torch.bool)
        group_keep.scatter_(1, keep_groups, True)  # [N, G]
        expert_keep = group_keep[:, :, None].expand(N, dims.n_group, per_group).reshape(N, E)
        choice = choice.masked_fill(~expert_keep, float("-inf"))

    topk_ids = choice.topk(dims.top_k, dim=-1).indices  # [N, K]
    weights = scores.gather(1, topk_ids)  # [N, K], without the bias
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
    scaling. h [T, H] -> (topk_ids [T, K] long, topk_weights [T, K] float32)."""
    logits = h.float() @ gate_weight.float().T  # [T, E]
    scores = 1.0 / (1.0 + torch.exp(-logits))
    choice = scores.detach() + expert_bias.float()
    T, E = choice.shape
    ids = torch.zeros(T, dims.top_k, dtype=torch.long, device=h.device)
    for start in range(0, T, dims.routing_block):
        end = min(start + dims.routing_block, T)
        block_score = choice[start:end].max(dim=0).values  # [E]
        ranked = sorted(range(E), key=lambda e: (-float(block_score[e]), e))
        admitted = ranked[: dims.expert_capacity]
        for t in range(start, end):
            best = sorted(admitted, key=lambda e: (-float(choice[t, e]), e))[: dims.top_k]
            ids[t] = torch.tensor(best)
    weights = scores.gather(1, ids)  # [T, K]
    if dims.top_k > 1:
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
    return ids, weights * dims.routed_scaling


def block_route_by_ids(
    h: Tensor, block_ids: Tensor, gate_weight: Tensor, expert_bias: Tensor, dims: Dims
) -> tuple[Tensor, Tensor]:
    """:func:`block_route` for tokens in any layout, vectorized (the trainer's): block_ids [N]
    long names each token's routing block (any integers). The same selection as block_route
    except how exact score ties are broken (torch.topk's order). h [N, H] -> ([N, K], [N, K])."""
    logits = h.float() @ gate_weight.float().T  # [N, E]
    scores = torch.sigmoid(logits)
    choice = scores.detach() + expert_bias.float()
    assert dims.expert_capacity is not None
    _, block = torch.unique(block_ids, return_inverse=True)  # [N] in 0..nb-1
    nb, E = int(block.max()) + 1, choice.shape[1]
    block_score = torch.full((nb, E), float("-inf"), device=h.device).scatter_reduce(
        0, block[:, None].expand(-1, E), choice, reduce="amax"
    )  # [nb, E]
    admitted = torch.zeros(nb, E, dtype=torch.bool, device=h.device)
    admitted.scatter_(1, block_score.topk(dims.expert_capacity, dim=1).indices, True)
    ids = choice.masked_fill(~admitted[block], float("-inf")).topk(dims.top_k, dim=1).indices  # [N, K]
    weights = scores.gather(1, ids)
    if dims.top_k > 1:
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
    return ids, weights * dims.routed_scaling


def moe(
    h: Tensor, w: Weights, prefix: str, dims: Dims, expert_load: dict[str, Tensor] | None = None,
    route_blocks: Tensor | None = None,
) -> Tensor:
    """MoE block. h [T, H] (one sequence) or [B, T, H] -> same shape. prefix is e.g.
    'model.layers.3.mlp.'. Expects per-expert weights. With expert_load, stores the tokens each
    expert got ([E] long) under prefix (the trainer's expert-bias balancing reads it).
    route_blocks (block routing only): each token's routing block, same shape as h[..., 0]
    (the trainer's rows hold two copies of the same positions); without it, blocks are counted
    from each sequence's first token."""
    shape = h.shape
    bias = w.get(prefix + "gate.expert_bias") if dims.expert_bias else None
    if dims.expert_capacity is not None and route_blocks is not None:
        assert bias is not None, "block routing needs the expert bias"
        topk_ids, topk_weights = block_route_by_ids(
            h.reshape(-1, shape[-1]), route_blocks.reshape(-1), w[prefix + "gate.weight"], bias, dims
        )
    elif dims.expert_capacity is not None:  # per sequence
        assert bias is not None, "block routing needs the expert bias"
        rows = [block_route(seq, w[prefix + "gate.weight"], bias, dims) for seq in h.reshape(-1, *shape[-2:])]
        topk_ids = torch.cat([ids for ids, _ in rows])  # [N, K]
        topk_weights = torch.cat([wt for _, wt in rows])
    h = h.reshape(-1, shape[-1])  # [N, H]
    if dims.expert_capacity is None:
        topk_ids, topk_weights = route(h, w[prefix + "gate.weight"], bias, dims)  # [N, K] each
    if expert_load is not None:
        expert_load[prefix] = torch.bincount(topk_ids.reshape(-1), minlength=dims.experts)
    out = torch.zeros_like(h)  # [N, H]
    for e in range(dims.experts):
        tok, slot = (topk_ids == e).nonzero(as_tuple=True)  # tokens that picked expert e
        if tok.numel() == 0:
            continue
        p = f"{prefix}experts.{e}."
        y = swiglu(h[tok], w[p + "gate_proj.weight"], w[p + "up_proj.weight"], w[p + "down_proj.weight"])
        out.index_add_(0, tok, y * topk_weights[tok, slot][:, None])
    if dims.shared_experts:
        out = out + dense_mlp(h, w, prefix + "shared_experts.")
    return out.view(shape)


def dense_mlp(h: Tensor, w: Weights, prefix: str) -> Tensor:
    """h [..., H] -> [..., H]."""
    return swiglu(h, w[prefix + "gate_proj.weight"], w[prefix + "up_proj.weight"], w[prefix + "down_proj.weight"])


def attention_block(h: Tensor, w: Weights, prefix: str, dims: Dims, positions: Tensor, allowed: Tensor) -> Tensor:
    """h [..., T, H] (already normed) -> [..., T, H] (after the output projection). prefix
    'model.layers.l.attention.'."""
    *lead, T, _ = h.shape
    nH, nKV, D = dims.heads, dims.kv_heads, dims.head_dim
    qkv = h @ w[prefix + "query_key_value.weight"].T  # [..., T, (nH + 2 nKV) D]
    if dims.qkv_bias:
        qkv = qkv + w[prefix + "query_key_value.bias"]
    q, k, v = qkv.split([nH * D, nKV * D, nKV * D], dim=-1)
    q = q.reshape(*lead, T, nH, D)
    k = k.reshape(*lead, T, nKV, D)
    v = v.reshape(*lead, T, nKV, D)
    if dims.qk_norm:
        q = rmsnorm(q, w[prefix + "query_layernorm.weight"], dims.eps)
        k = rmsnorm(k, w[prefix + "key_layernorm.weight"], dims.eps)
    q = rope(q, positions, dims.rotary_dim, dims.rope_theta)
    k = rope(k, positions, dims.rotary_dim, dims.rope_theta)
    out = attention(q, k, v, allowed)  # [..., T, nH D]
    out = out @ w[prefix + "dense.weight"].T  # [..., T, H]
    if dims.dense_bias:
        out = out + w[prefix + "dense.bias"]
    return out


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def forward(
    w: Weights,
    dims: Dims,
    ids: Tensor,
    positions: Tensor,
    allowed: Tensor,
    *,
    expert_load: dict[str, Tensor] | None = None,
    route_blocks: Tensor | None = None,
) -> Tensor:
    """LLaDA2 logits. w: checkpoint-named float32 weights, per-expert layout.

    ids/positions [B, T] long, allowed [B, T, T] bool (True = may attend) -> logits [B, T, V].
    Block routing (expert_capacity) counts blocks from each row's first token, so its rows must
    hold positions 0..T-1, unless route_blocks [B, T] names each token's routing block (unique
    across rows). expert_load: see :func:`moe`.
    """
    if dims.expert_capacity is not None and route_blocks is None:
        T = ids.shape[-1]
        if not bool((positions == torch.arange(T, device=positions.device)).all()):
            raise NotImplementedError("block routing needs rows at positions 0..T-1")
    x = w["model.word_embeddings.weight"][ids]  # [B, T, H]
    for layer in range(dims.layers):
        p = f"model.layers.{layer}."
        h = rmsnorm(x, w[p + "input_layernorm.weight"], dims.eps)
        x = x + attention_block(h, w, p + "attention.", dims, positions, allowed)
        h = rmsnorm(x, w[p + "post_attention_layernorm.weight"], dims.eps)
        if dims.is_moe_layer(layer):
            x = x + moe(h, w, p + "mlp.", dims, expert_load, route_blocks)
        else:
            x = x + dense_mlp(h, w, p + "mlp.")
    x = rmsnorm(x, w["model.norm.weight"], dims.eps)
    lm_head = w["model.word_embeddings.weight"] if dims.tied else w["lm_head.weight"]
    return x @ lm_head.T  # [B, T, V]


class ToyLLaDA2(nn.Module):
    """The toy trainer's model: :func:`forward` over parameters registered under the checkpoint
    names (nested submodules, so ``state_dict()`` *is* the per-expert checkpoint, and
    ``export_state`` writes a checkpoint that both our model class and SGLang's in-tree
    ``BailingMoeV2ForCausalLM`` (the autoregressive twin) load unchanged).

    The router's expert_bias tensors are buffers: no gradient, moved by :meth:`update_expert_bias`
    (auxiliary-loss-free balancing) from the expert loads of the last forward.

    Init: RMSNorm weights 1, biases and expert_bias 0, every matrix N(0, initializer_range), the
    residual-output projections (attention dense, dense/shared-expert down_proj) scaled by
    1 / sqrt(2 L) (GPT-2 style); drawn from torch's global generator in checkpoint order.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = cfg
        self.dims = dims_from_config(cfg)
        self.last_load: dict[str, Tensor] = {}  # MoE prefix -> [E] tokens per expert, last forward
        std = float(cfg["initializer_range"])
        depth_scale = 1 / math.sqrt(2 * self.dims.layers)
        for name, shape in expected_weight_shapes(cfg).items():
            owner: nn.Module = self
            *path, leaf = name.split(".")
            for part in path:  # "model.layers.0.attention" -> nested modules of those names
                child = owner._modules.get(part)
                if child is None:
                    child = nn.Module()
                    owner.add_module(part, child)
                owner = child
            if leaf == "expert_bias":
                owner.register_buffer(leaf, torch.zeros(shape))
                continue
            if len(shape) == 1:  # norms 1, biases 0
                t = torch.zeros(shape) if leaf == "bias" else torch.ones(shape)
            else:
                residual_out = name.endswith(("dense.weight", "down_proj.weight")) and ".experts." not in name
                t = torch.randn(shape) * (std * (depth_scale if residual_out else 1.0))
            owner.register_parameter(leaf, nn.Parameter(t))

    def weights(self) -> Weights:
        """Checkpoint name -> tensor (parameters and expert biases), as :func:`forward` takes."""
        return {**dict(self.named_parameters()), **dict(self.named_buffers())}

    def forward(self, ids: Tensor, positions: Tensor, allowed: Tensor, route_blocks: Tensor | None = None) -> Tensor:
        """ids/positions [B, T], allowed [B, T, T] -> logits [B, T, V]; route_blocks: see :func:`forward`."""
        self.last_load = {}
        return forward(
            self.weights(), self.dims, ids, positions, allowed, expert_load=self.last_load, route_blocks=route_blocks,
        )

    @torch.no_grad()
    def update_expert_bias(self, rate: float) -> None:
        """Auxiliary-loss-free balancing: raise the bias of under-used experts, lower the rest."""
        for prefix, load in self.last_load.items():
            load = load.float()
            self.get_buffer(prefix + "gate.expert_bias").add_(rate * torch.sign(load.mean() - load))

    def export_state(self) -> Weights:
        """The checkpoint: Hugging Face LLaDA2 tensor names (per-expert layout, as published), float32."""
        return {name: t.float().contiguous() for name, t in self.state_dict().items()}
