"""A trainable pure-PyTorch LLaDA2 (the same architecture as `models/llada2.py`), for the toy.

It exists to *train* the toy checkpoint on CPU; serving always goes through SGLang and our
`LLaDA2MoeModelLM`. Parameter names are the Hugging Face checkpoint names, so `export_state`
writes a checkpoint that both our model class (diffusion) and SGLang's in-tree
`BailingMoeV2ForCausalLM` (the autoregressive twin) load unchanged.

Attention takes an explicit boolean mask [B, T, T] (True = may attend), so the same module
trains with a block-diffusion mask or a causal one. Experts are stored stacked ([E, ...]) for
speed and split into per-expert tensors on export.

Shapes: B batch, T tokens, H hidden, nH/nKV heads, D head dim, E experts, K experts per token.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _rotate_neox(x: Tensor, cos: Tensor, sin: Tensor, rd: int) -> Tensor:
    """x [B, T, heads, D]; cos/sin [B, T, 1, rd]: NeoX rotation of the first rd dims."""
    rot, keep = x[..., :rd], x[..., rd:]
    r1, r2 = rot.chunk(2, dim=-1)
    rotated = torch.cat([-r2, r1], dim=-1)
    return torch.cat([rot * cos + rotated * sin, keep], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        H = cfg["hidden_size"]
        self.nH, self.nKV, self.D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
        self.rd = int(self.D * cfg["partial_rotary_factor"])
        self.theta = float(cfg["rope_theta"])
        self.query_key_value = nn.Linear(H, (self.nH + 2 * self.nKV) * self.D, bias=False)
        self.query_layernorm = RMSNorm(self.D, cfg["rms_norm_eps"])
        self.key_layernorm = RMSNorm(self.D, cfg["rms_norm_eps"])
        self.dense = nn.Linear(self.nH * self.D, H, bias=False)

    def forward(self, h: Tensor, positions: Tensor, allowed: Tensor) -> Tensor:
        """h [B, T, H], positions [B, T], allowed [B, T, T] bool -> [B, T, H]."""
        B, T, _ = h.shape
        q, k, v = self.query_key_value(h).split(
            [self.nH * self.D, self.nKV * self.D, self.nKV * self.D], dim=-1
        )
        q = self.query_layernorm(q.view(B, T, self.nH, self.D))
        k = self.key_layernorm(k.view(B, T, self.nKV, self.D))
        inv_freq = self.theta ** (
            -torch.arange(0, self.rd, 2, dtype=torch.float32, device=h.device) / self.rd
        )  # [rd/2]
        angle = positions.float()[..., None] * inv_freq  # [B, T, rd/2]
        cos = torch.cat([angle.cos(), angle.cos()], -1)[:, :, None, :]  # [B, T, 1, rd]
        sin = torch.cat([angle.sin(), angle.sin()], -1)[:, :, None, :]
        q, k = _rotate_neox(q, cos, sin, self.rd), _rotate_neox(k, cos, sin, self.rd)
        group = self.nH // self.nKV
        k = k.repeat_interleave(group, dim=2)
        v = v.view(B, T, self.nKV, self.D).repeat_interleave(group, dim=2)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=allowed[:, None]
        )  # [B, nH, T, D]
        return self.dense(out.transpose(1, 2).reshape(B, T, self.nH * self.D))


class DenseMLP(nn.Module):
    def __init__(self, H: int, inner: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(H, inner, bias=False)
        self.up_proj = nn.Linear(H, inner, bias=False)
        self.down_proj = nn.Linear(inner, H, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Router(nn.Module):
    """Sigmoid scores; expert_bias (a buffer, updated without gradients) only picks experts."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.E, self.K = cfg["num_experts"], cfg["num_experts_per_tok"]
        self.n_group, self.topk_group = cfg["n_group"], cfg["topk_group"]
        self.scale = float(cfg["routed_scaling_factor"])
        self.weight = nn.Parameter(torch.empty(self.E, cfg["hidden_size"]))
        self.register_buffer("expert_bias", torch.zeros(self.E))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [N, H] -> (ids [N, K], weights [N, K])."""
        scores = (x.float() @ self.weight.float().T).sigmoid()  # [N, E]
        choice = scores.detach() + self.expert_bias
        N = choice.shape[0]
        grouped = choice.view(N, self.n_group, self.E // self.n_group)
        group_score = grouped.topk(2, dim=-1).values.sum(-1)  # [N, G]
        keep = torch.zeros_like(group_score, dtype=torch.bool)
        keep.scatter_(1, group_score.topk(self.topk_group, dim=-1).indices, True)
        choice = choice.masked_fill(~keep.repeat_interleave(self.E // self.n_group, 1), -1e9)
        ids = choice.topk(self.K, dim=-1).indices  # [N, K]
        w = scores.gather(1, ids)
        w = w / (w.sum(-1, keepdim=True) + 1e-20) * self.scale
        return ids, w


class MoE(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        H, Im, E = cfg["hidden_size"], cfg["moe_intermediate_size"], cfg["num_experts"]
        self.gate = Router(cfg)
        std = cfg["initializer_range"]
        self.w_gate = nn.Parameter(torch.randn(E, Im, H) * std)
        self.w_up = nn.Parameter(torch.randn(E, Im, H) * std)
        self.w_down = nn.Parameter(torch.randn(E, H, Im) * std)
        self.shared_experts = DenseMLP(H, Im * cfg["num_shared_experts"])
        self.last_load: Tensor | None = None  # [E] tokens per expert in the last forward

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # [N, H]
        ids, w = self.gate(x)
        out = self.shared_experts(x)
        flat = ids.reshape(-1)  # [N K]
        order = flat.argsort()
        counts = torch.bincount(flat, minlength=self.gate.E)
        self.last_load = counts.detach()
        tok = order // ids.shape[1]
        weight = w.reshape(-1)[order]
        start = 0
        for e, n in enumerate(counts.tolist()):
            if n == 0:
                continue
            t = tok[start : start + n]
            y = F.silu(x[t] @ self.w_gate[e].T) * (x[t] @ self.w_up[e].T)
            out = out.index_add(0, t, (y @ self.w_down[e].T) * weight[start : start + n, None])
            start += n
        return out.view(shape)


class Layer(nn.Module):
    def __init__(self, cfg: dict[str, Any], dense: bool) -> None:
        super().__init__()
        H = cfg["hidden_size"]
        self.input_layernorm = RMSNorm(H, cfg["rms_norm_eps"])
        self.attention = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(H, cfg["rms_norm_eps"])
        self.mlp: nn.Module = DenseMLP(H, cfg["intermediate_size"]) if dense else MoE(cfg)

    def forward(self, x: Tensor, positions: Tensor, allowed: Tensor) -> Tensor:
        x = x + self.attention(self.input_layernorm(x), positions, allowed)
        return x + self.mlp(self.post_attention_layernorm(x))


class ToyLLaDA2(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = cfg
        H, V = cfg["hidden_size"], cfg["vocab_size"]
        self.word_embeddings = nn.Embedding(V, H)
        self.layers = nn.ModuleList(
            Layer(cfg, dense=i < cfg["first_k_dense_replace"]) for i in range(cfg["num_hidden_layers"])
        )
        self.norm = RMSNorm(H, cfg["rms_norm_eps"])
        self.lm_head = nn.Linear(H, V, bias=False)
        std = cfg["initializer_range"]
        for name, p in self.named_parameters():
            if p.dim() == 2:
                # Residual-output projections scaled down with depth (GPT-2 style).
                scale = 1 / math.sqrt(2 * len(self.layers)) if name.endswith(("dense.weight", "down_proj.weight")) else 1.0
                nn.init.normal_(p, std=std * scale)

    def forward(self, ids: Tensor, positions: Tensor, allowed: Tensor) -> Tensor:
        """ids/positions [B, T], allowed [B, T, T] -> logits [B, T, V]."""
        x = self.word_embeddings(ids)
        for layer in self.layers:
            x = layer(x, positions, allowed)
        return self.lm_head(self.norm(x))

    @torch.no_grad()
    def update_expert_bias(self, rate: float) -> None:
        """Auxiliary-loss-free balancing: raise the bias of under-used experts, lower the rest."""
        for layer in self.layers:
            if isinstance(layer.mlp, MoE) and layer.mlp.last_load is not None:
                load = layer.mlp.last_load.float()
                layer.mlp.gate.expert_bias += rate * torch.sign(load.mean() - load)

    def export_state(self) -> dict[str, Tensor]:
        """Hugging Face LLaDA2 tensor names (per-expert layout, as published), float32."""
        out: dict[str, Tensor] = {}
        for name, t in self.state_dict().items():
            prefix = "" if name.startswith("lm_head") else "model."
            if ".mlp.w_" in name:
                layer_prefix, kind = name.split(".mlp.w_")
                proj = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}[kind]
                for e in range(t.shape[0]):
                    out[f"model.{layer_prefix}.mlp.experts.{e}.{proj}.weight"] = t[e].contiguous()
                continue
            out[prefix + name] = t.detach().float().contiguous()
        return out
