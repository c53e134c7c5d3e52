"""The tests' LLaDA2 reference: a checkpoint directory loaded into the one pure-PyTorch forward.

The forward itself is `sglang_llada/toy/torch_model.py` (also what the toy is trained with), written
from the architecture description only and independent of our SGLang model class, so it can serve
as ground truth for `models/llada2.py`. This module adds what the tests need around it; everything
runs in float32 on CPU.

Contents
--------
* :class:`RefLLaDA2` / :func:`load_reference`: read ``config.json`` + safetensors (a single
  ``model.safetensors`` or shards named in ``model.safetensors.index.json``; per-expert or fused
  3-D expert tensors) and run ``forward(ids, block_size) -> logits`` (one sequence, block-causal).
* :func:`generate_reference` / :func:`generate_reference_with_stats`: greedy block-diffusion
  decoding with confidence threshold, the way the LLaDA2 reference decoder does it.
* :func:`count_parameters`: (total, active-per-token) parameter counts from a config alone.
* the forward's building blocks (:func:`rmsnorm`, :func:`rope`, :func:`block_causal_mask`,
  :func:`attention`, :func:`route`, :func:`moe`, ...), re-exported for the tests.

Toy checkpoints for tests are written by `sglang_llada/toy/checkpoint.py` (``generate_weights``,
``write_checkpoint``, ``expected_weight_shapes``).

Shapes are written in brackets: T tokens, H hidden, nH query heads, nKV key/value heads, D head
dim, E routed experts, K experts per token, V vocabulary.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from safetensors import safe_open

from sglang_llada.toy import torch_model
from sglang_llada.toy.checkpoint import Dims, dims_from_config, expected_weight_shapes
from sglang_llada.toy.torch_model import (
    attention,
    block_causal_mask,
    moe,
    rmsnorm,
    rope,
    route,
    swiglu,
)

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
]


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
        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        T = ids.shape[0]
        allowed = block_causal_mask(T, block_size)  # [T, T]
        return torch_model.forward(self.weights, self.dims, ids[None], torch.arange(T)[None], allowed[None])[0]

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


def check_weights(weights: Weights, config: dict[str, Any], *, strict: bool = True) -> None:
    """Raise if a (per-expert) weight is missing or has the wrong shape; with strict, also if
    there are weights the architecture does not use (a tied checkpoint may still carry lm_head)."""
    expected = expected_weight_shapes(config)
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
    block take the argmax token and its softmax probability, the mask id excluded (its logit at -inf);
    commit every masked position with
    probability > threshold, or if none passes, the single most confident one (ties: lowest
    index) -- until the block has no masked position. Which positions are still masked is tracked
    separately from the token ids (a committed token never equals ``mask_id``: it is excluded).
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
            # the mask id is never a candidate (as in our algorithms: a written position holds text)
            probs = logits.float().index_fill(-1, torch.tensor([mask_id]), float("-inf")).softmax(dim=-1)  # [B, V]
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
