"""`LLaDA2MoeModelLM` built from SGLang's parallel layers.

Tensor parallelism comes from SGLang's QKV/row/column-parallel linears and vocab-parallel
embedding/head; expert parallelism from `FusedMoE` (`--ep`). Attention is block-causal (a token
sees everything before the end of its 32-token block), by forward mode:

* `DLLM_EXTEND` (one block per request: denoising steps): the cached prefix and every position
  of the block, which is exactly the block-causal mask for a single block. On GPUs: `RadixAttention`
  with `ENCODER_ONLY` type through SGLang's attention backend (FlashInfer / Triton, graph-capturable).
  On our CPU platform: `kernels/block_causal_attention.py`'s torch twin with every key visible --
  SGLang's torch-native backend computes attention for every cached position of the request too
  (a [L, L] product per step instead of [32, L]), which made each denoising step of a 4,000-token
  prompt cost as much as its prefill;
* `EXTEND` (whole prompts, many blocks per request: sglang_llada/scheduler/prefill.py schedules these):
  the block-causal mask itself, `kernels/block_causal_attention.py` (Triton on GPUs, torch on
  CPU) over the KV pool, after writing the new tokens' K/V to it.

A folded forward (`forward_folded`, `fold_store`: models/folded_blocks.py) is a `DLLM_EXTEND` forward
that also carries, per folded request, its previous (finished) block: every token's K/V is stored,
then `kernels/block_causal_attention.py` runs over the batch's blocks and the folded ones as separate
rows, which is the block-causal mask over the two blocks; only the batch's blocks reach the LM head.

Nothing here needs Triton at import time or on CPU: the MoE routing (sigmoid scores, expert
bias, group-limited top-k, routed scaling) is plain torch so that `routed_scaling_factor` is
applied the same way on every device (SGLang's native CPU MoE path drops it).

MoE block routing (LLaDA2.2: `expert_capacity` in config.json): every block of a request admits
the `expert_capacity` experts with the highest max-over-its-tokens score, and each token picks
its top-k among them (`kernels/block_routing.py`: Triton on GPUs, torch twin on CPU; the same
selection as SGLang 0.5.23's in-tree class). Blocks follow each request's block boundaries:
a denoising forward holds one block per request; a whole-prompt forward (`EXTEND`,
sglang_llada/scheduler/prefill.py) holds many blocks of each request, cut at absolute positions that are
multiples of the block size. What SGLang refuses with block routing is refused here too, at
model construction (server start-up): expert parallelism, the DeepEP all-to-all backend, a
router without sigmoid scores or expert bias.
"""

from __future__ import annotations

from typing import Iterable

import torch
from sglang.srt.distributed.communication_op import tensor_model_parallel_all_reduce
from sglang.srt.layers.activation import SiluAndMul
from sglang.srt.layers.layernorm import RMSNorm
from sglang.srt.layers.linear import (
    MergedColumnParallelLinear,
    QKVParallelLinear,
    RowParallelLinear,
)
from sglang.srt.layers.logits_processor import LogitsProcessor
from sglang.srt.layers.moe import get_moe_a2a_backend
from sglang.srt.layers.moe.ep_moe.layer import get_moe_impl_class
from sglang.srt.layers.moe.fused_moe_triton.layer import FusedMoE
from sglang.srt.layers.moe.topk import StandardTopKOutput
from sglang.srt.layers.quantization.base_config import QuantizationConfig
from sglang.srt.layers.radix_attention import AttentionType, RadixAttention
from sglang.srt.layers.rotary_embedding import get_rope
from sglang.srt.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from sglang.srt.mem_cache.memory_pool import KVWriteLoc
from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode
from sglang.srt.model_executor.forward_context import get_req_to_token_pool, get_token_to_kv_pool
from sglang.srt.model_loader.weight_utils import default_weight_loader
from sglang.srt.runtime_context import get_parallel
from sglang.srt.utils import add_prefix
from sglang.srt.utils.hf_transformers_utils import get_rope_config
from torch import nn
from transformers import PretrainedConfig

from sglang_llada.kernels.block_causal_attention import block_causal_attention
from sglang_llada.kernels.block_routing import block_route, flat_blocks, request_blocks
from sglang_llada.models.draft_copies import DraftCopies, compact_kv
from sglang_llada.models.folded_blocks import FoldedBlocks
from sglang_llada.models.weights import iter_hf_weights
from sglang_llada.state import attach, discard, peek

# LLaDA2's training block (the in-tree DllmConfig hard-codes the same for this architecture).
DEFAULT_BLOCK_SIZE = 32
# A "block" longer than any sequence: every cached and new key visible (ENCODER_ONLY semantics).
ALL_KEYS = 1 << 30


def model_block_size(config: PretrainedConfig) -> int:
    """The attention block of a LLaDA2 checkpoint: `block_size` in config.json, else 32."""
    return int(getattr(config, "block_size", None) or DEFAULT_BLOCK_SIZE)


# (block_starts [NB + 1] int32, token_block [T] int32): the forward's routing blocks.
Blocks = tuple[torch.Tensor, torch.Tensor]


def routing_blocks(forward_batch: ForwardBatch, num_tokens: int, block_size: int, device: torch.device) -> Blocks:
    """The blocks of a forward's tokens, following each request's block boundaries.

    A denoising forward (`DLLM_EXTEND`) holds exactly one block per request: SGLang's flat layout
    (token t in block t // block_size), built on the device (no host data, graph-capturable). Any
    other extend forward is cut from the host-side prefix / extend lengths SGLang keeps.
    """
    mode = forward_batch.forward_mode
    if mode == ForwardMode.DLLM_EXTEND or not mode.is_extend():
        return flat_blocks(num_tokens, block_size, device)
    prefix_lens = forward_batch.extend_prefix_lens_cpu
    extend_lens = forward_batch.extend_seq_lens_cpu
    if prefix_lens is None or extend_lens is None:  # device-only metadata: read it once
        prefix_lens = forward_batch.extend_prefix_lens.tolist()
        extend_lens = forward_batch.extend_seq_lens.tolist()
    return request_blocks(list(prefix_lens), list(extend_lens), block_size, device)


def _on_cpu_platform() -> bool:
    from sglang_llada.platform import activate

    return activate() is not None


def _rotary_dim(config: PretrainedConfig, head_dim: int) -> int:
    # `partial_rotary_factor` wins over `rotary_dim` (the published config has both, equal).
    factor = getattr(config, "partial_rotary_factor", None)
    if factor is not None:
        return int(head_dim * factor)
    rotary_dim = getattr(config, "rotary_dim", None)
    return int(rotary_dim) if rotary_dim is not None else head_dim


class LLaDA2MLP(nn.Module):
    """SwiGLU MLP, TP-sharded; the caller all-reduces (so MoE + shared expert reduce once)."""

    def __init__(
        self,
        config: PretrainedConfig,
        intermediate_size: int,
        quant_config: QuantizationConfig | None,
        prefix: str,
    ) -> None:
        super().__init__()
        if config.hidden_act != "silu":
            raise ValueError(f"LLaDA2 supports hidden_act='silu' only, got {config.hidden_act!r}")
        self.gate_up_proj = MergedColumnParallelLinear(
            config.hidden_size,
            [intermediate_size] * 2,
            bias=config.use_bias,
            quant_config=quant_config,
            prefix=add_prefix("gate_up_proj", prefix),
        )
        self.down_proj = RowParallelLinear(
            intermediate_size,
            config.hidden_size,
            bias=config.use_bias,
            reduce_results=False,
            quant_config=quant_config,
            prefix=add_prefix("down_proj", prefix),
        )
        self.act_fn = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up, _ = self.gate_up_proj(x)  # [T, 2 * I / tp]
        out, _ = self.down_proj(self.act_fn(gate_up))  # [T, H] partial sum over tp
        return out


class LLaDA2Router(nn.Module):
    """Sigmoid router with expert bias and group-limited top-k (DeepSeek-V3 style), or LLaDA2.2's
    block routing when config.json sets `expert_capacity`."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.num_experts: int = config.num_experts
        self.top_k: int = config.num_experts_per_tok
        self.score_function: str = getattr(config, "score_function", None) or "softmax"
        if self.score_function not in ("sigmoid", "softmax"):
            raise ValueError(f"Unsupported LLaDA2 score_function {self.score_function!r}")
        self.norm_topk_prob: bool = bool(config.norm_topk_prob)
        self.routed_scaling_factor = float(getattr(config, "routed_scaling_factor", None) or 1.0)
        n_group = int(getattr(config, "n_group", 0) or 0)
        topk_group = int(getattr(config, "topk_group", 0) or 0)
        self.n_group = n_group if n_group > 1 else 1
        self.topk_group = topk_group if n_group > 1 else 1
        if self.num_experts % self.n_group:
            raise ValueError(f"num_experts={self.num_experts} is not divisible by n_group={n_group}")
        # router_dtype fp32 (the published configs) keeps routing decisions out of bf16 noise.
        router_dtype = getattr(config, "router_dtype", None)
        self.dtype = torch.float32 if router_dtype in ("fp32", "float32") else None
        self.weight = nn.Parameter(
            torch.empty(self.num_experts, config.hidden_size, dtype=self.dtype), requires_grad=False
        )
        if getattr(config, "moe_router_enable_expert_bias", False):
            self.expert_bias = nn.Parameter(
                torch.zeros(self.num_experts, dtype=torch.float32), requires_grad=False
            )
        else:
            self.register_parameter("expert_bias", None)
        capacity = getattr(config, "expert_capacity", None)
        self.expert_capacity: int | None = None if capacity is None else int(capacity)
        self.block_size = model_block_size(config)
        if self.expert_capacity is not None:
            self._check_block_routing()

    def _check_block_routing(self) -> None:
        """What SGLang 0.5.23's block routing requires, as start-up errors."""
        cap, bs = self.expert_capacity, self.block_size
        if self.score_function != "sigmoid" or self.expert_bias is None:
            raise ValueError(
                "LLaDA2 block routing (expert_capacity in config.json) needs score_function "
                f"'sigmoid' and moe_router_enable_expert_bias true; got {self.score_function!r} and "
                f"{self.expert_bias is not None}"
            )
        if not (0 < self.top_k <= cap <= self.num_experts):  # type: ignore[operator]
            raise ValueError(
                "LLaDA2 block routing needs 0 < num_experts_per_tok <= expert_capacity <= "
                f"num_experts, got {self.top_k} / {cap} / {self.num_experts}"
            )
        if bs <= 0 or bs & (bs - 1):
            raise ValueError(f"LLaDA2 block routing needs a power-of-two block_size, got {bs}")

    def forward(
        self, x: torch.Tensor, blocks: Blocks | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [T, H] -> (weights [T, K] fp32, ids [T, K] int32, logits [T, E]).

        blocks: the forward's routing blocks (`routing_blocks`); used with block routing only."""
        logits = torch.nn.functional.linear(x.to(self.weight.dtype), self.weight)  # [T, E]
        if self.expert_capacity is not None:
            if blocks is None:
                blocks = flat_blocks(x.shape[0], self.block_size, x.device)
            weights, ids = block_route(
                logits,
                self.expert_bias,
                blocks[0],
                blocks[1],
                self.block_size,
                self.expert_capacity,
                self.top_k,
            )
            # Grouped top-k does not apply under block routing (as in SGLang's class).
            return weights * self.routed_scaling_factor, ids, logits
        scores = logits.float().sigmoid() if self.score_function == "sigmoid" else logits.float().softmax(-1)
        choice = scores + self.expert_bias if self.expert_bias is not None else scores  # [T, E]
        if self.n_group > 1:
            T = choice.shape[0]
            grouped = choice.view(T, self.n_group, -1)  # [T, G, E/G]
            group_scores = grouped.topk(2, dim=-1).values.sum(-1)  # [T, G]
            keep = group_scores.topk(self.topk_group, dim=-1).indices  # [T, TG]
            group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, keep, True)
            choice = grouped.masked_fill(~group_mask.unsqueeze(-1), float("-inf")).view(T, -1)
        ids = choice.topk(self.top_k, dim=-1).indices  # [T, K]
        weights = scores.gather(1, ids)  # bias steers the choice only, not the weights
        if self.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return weights * self.routed_scaling_factor, ids.to(torch.int32), logits


class LLaDA2SparseMoe(nn.Module):
    def __init__(
        self,
        config: PretrainedConfig,
        layer_id: int,
        quant_config: QuantizationConfig | None,
        prefix: str,
    ) -> None:
        super().__init__()
        ep_size = get_parallel().moe_ep_size
        if ep_size > 1 and _on_cpu_platform():
            raise ValueError(
                f"--ep {ep_size} is not supported on the CPU platform: SGLang 0.5.23's native "
                "CPU MoE kernel cannot skip the experts of other EP ranks. Drop --ep (use "
                "--tp alone, which shards every expert) or serve on GPUs."
            )
        if get_moe_a2a_backend().is_deepep():
            # Our forward hands FusedMoE a finished top-k; DeepEP needs its own dispatch/combine
            # around the experts, which this class does not implement.
            raise ValueError(
                "sglang-llada's LLaDA2MoeModelLM does not support --moe-a2a-backend deepep; drop "
                "it (TP and --ep without DeepEP work)"
            )
        self.gate = LLaDA2Router(config)
        if self.gate.expert_capacity is not None and ep_size > 1:
            raise ValueError(
                f"LLaDA2 block routing (expert_capacity in config.json) does not support expert "
                f"parallelism (--ep {ep_size}), as in SGLang 0.5.23; drop --ep (use --tp)"
            )
        # Scaling is folded into the router weights above, so FusedMoE gets none.
        self.experts = get_moe_impl_class(quant_config)(
            num_experts=config.num_experts,
            top_k=config.num_experts_per_tok,
            layer_id=layer_id,
            hidden_size=config.hidden_size,
            intermediate_size=config.moe_intermediate_size,
            quant_config=quant_config,
            prefix=add_prefix("experts", prefix),
        )
        num_shared = int(getattr(config, "num_shared_experts", 0) or 0)
        self.shared_experts = (
            LLaDA2MLP(
                config,
                config.moe_intermediate_size * num_shared,
                quant_config,
                add_prefix("shared_experts", prefix),
            )
            if num_shared > 0
            else None
        )

    def forward(self, x: torch.Tensor, blocks: Blocks | None = None) -> torch.Tensor:
        """x [T, H] -> [T, H], partial over tp/ep ranks. Consumes x: on CUDA, `FusedMoE` writes the
        routed experts' output over its input (`MoeRunnerConfig.inplace`), so everything that
        reads x (router, shared expert) runs before the experts (as in SGLang's own class)."""
        weights, ids, logits = self.gate(x, blocks)
        shared = self.shared_experts(x) if self.shared_experts is not None else None  # [T, H]
        topk = StandardTopKOutput(topk_weights=weights, topk_ids=ids, router_logits=logits)
        out = self.experts(x, topk)  # [T, H]; x may now hold the routed output
        return out if shared is None else out + shared


class LLaDA2Attention(nn.Module):
    def __init__(
        self,
        config: PretrainedConfig,
        layer_id: int,
        quant_config: QuantizationConfig | None,
        prefix: str,
    ) -> None:
        super().__init__()
        tp = get_parallel().tp_size
        total_heads: int = config.num_attention_heads
        total_kv: int = config.num_key_value_heads
        if total_heads % tp or (total_kv % tp and tp % total_kv):
            raise ValueError(
                f"--tp {tp} does not divide LLaDA2's {total_heads} query / {total_kv} KV heads"
            )
        self.head_dim: int = getattr(config, "head_dim", None) or config.hidden_size // total_heads
        self.num_heads = total_heads // tp
        self.num_kv_heads = max(1, total_kv // tp)
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.query_key_value = QKVParallelLinear(
            config.hidden_size,
            self.head_dim,
            total_heads,
            total_kv,
            bias=config.use_bias or config.use_qkv_bias,
            quant_config=quant_config,
            prefix=add_prefix("query_key_value", prefix),
        )
        self.block_size = model_block_size(config)
        self.own_block_attention = _on_cpu_platform()  # see the module docstring
        self.use_qk_norm = bool(getattr(config, "use_qk_norm", True))
        if self.use_qk_norm:
            self.query_layernorm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.key_layernorm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.dense = RowParallelLinear(
            total_heads * self.head_dim,
            config.hidden_size,
            bias=config.use_bias,
            reduce_results=True,
            quant_config=quant_config,
            prefix=add_prefix("dense", prefix),
        )
        rope_theta, rope_scaling = get_rope_config(config)
        self.rotary_emb = get_rope(
            self.head_dim,
            rotary_dim=_rotary_dim(config, self.head_dim),
            max_position=config.max_position_embeddings,
            base=rope_theta,
            rope_scaling=rope_scaling,
            is_neox_style=True,
        )
        self.attn = RadixAttention(
            self.num_heads,
            self.head_dim,
            self.head_dim**-0.5,
            num_kv_heads=self.num_kv_heads,
            layer_id=layer_id,
            # Non-causal inside the forward's own tokens: block-causal when fed by blocks.
            attn_type=AttentionType.ENCODER_ONLY,
            prefix=add_prefix("attn", prefix),
        )

    def _qk_norm(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = q.shape[0]
        q = self.query_layernorm(q.reshape(-1, self.head_dim)).view(T, self.q_size)
        k = self.key_layernorm(k.reshape(-1, self.head_dim)).view(T, self.kv_size)
        return q, k

    def forward(
        self, positions: torch.Tensor, x: torch.Tensor, forward_batch: ForwardBatch
    ) -> torch.Tensor:
        qkv, _ = self.query_key_value(x)  # [T, (nH + 2 nKV) * D / tp]
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        if self.use_qk_norm:
            q, k = self._qk_norm(q, k)
        q, k = self.rotary_emb(positions, q, k)
        mode = forward_batch.forward_mode
        copies = peek(forward_batch, DraftCopies)
        folded = peek(forward_batch, FoldedBlocks)
        if copies is not None:
            out = self._draft_copies_attention(q, k, v, copies)
        elif folded is not None and mode == ForwardMode.DLLM_EXTEND:
            out = self._folded_attention(q, k, v, forward_batch, folded)
        elif mode == ForwardMode.EXTEND:
            out = self._block_causal_extend(q, k, v, forward_batch, self.block_size)
        elif mode == ForwardMode.DLLM_EXTEND and self.own_block_attention:
            out = self._block_causal_extend(q, k, v, forward_batch, ALL_KEYS)
        else:
            out = self.attn(q, k, v, forward_batch)  # [T, nH * D / tp]
        out, _ = self.dense(out)
        return out

    def _block_causal_extend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, forward_batch: ForwardBatch, block_size: int
    ) -> torch.Tensor:
        """Store the new tokens' K/V, then block-causal attention at `block_size` over the pool."""
        D = self.head_dim
        k = k.reshape(-1, self.num_kv_heads, D)  # [T, nKV / tp, D]
        v = v.reshape(-1, self.num_kv_heads, D)
        pool = get_token_to_kv_pool()  # the forward's KV pool and request rows, as the backend's
        pool.set_kv_buffer(self.attn, KVWriteLoc.for_batch(forward_batch), k, v)
        prefix_lens = forward_batch.extend_prefix_lens_cpu
        extend_lens = forward_batch.extend_seq_lens_cpu
        if prefix_lens is None or extend_lens is None:  # device-only metadata: read it once
            prefix_lens = forward_batch.extend_prefix_lens.tolist()
            extend_lens = forward_batch.extend_seq_lens.tolist()
        out = block_causal_attention(
            q.reshape(-1, self.num_heads, D),  # [T, nH / tp, D]
            pool.get_key_buffer(self.attn.layer_id),
            pool.get_value_buffer(self.attn.layer_id),
            get_req_to_token_pool().req_to_token,
            forward_batch.req_pool_indices,
            prefix_lens,
            extend_lens,
            block_size,
            self.attn.scaling,
        )
        return out.reshape(-1, self.q_size)

    def _folded_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, forward_batch: ForwardBatch, folded: FoldedBlocks
    ) -> torch.Tensor:
        """A denoising forward that also re-encodes finished blocks (models/folded_blocks.py): every
        token's K/V is stored first (the current blocks at `out_cache_loc`, the folded ones at their
        slots), then each of the B + F rows sees its prefix and its own block."""
        D = self.head_dim
        k = k.reshape(-1, self.num_kv_heads, D)  # [(B + F) * S, nKV / tp, D]
        v = v.reshape(-1, self.num_kv_heads, D)
        pool = get_token_to_kv_pool()
        loc = torch.cat([forward_batch.out_cache_loc.to(folded.slots.dtype), folded.slots])
        pool.set_kv_buffer(self.attn, KVWriteLoc(loc, physical=forward_batch.out_cache_loc_is_physical), k, v)
        out = block_causal_attention(
            q.reshape(-1, self.num_heads, D),
            pool.get_key_buffer(self.attn.layer_id),
            pool.get_value_buffer(self.attn.layer_id),
            get_req_to_token_pool().req_to_token,
            folded.req_pool_indices,
            folded.prefix_lens,
            folded.extend_lens,
            ALL_KEYS,
            self.attn.scaling,
        )
        return out.reshape(-1, self.q_size)

    def _draft_copies_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, copies: DraftCopies) -> torch.Tensor:
        """A verification forward (models/draft_copies.py): each copy sees its request's cached
        prefix and its own block; nothing is written to the KV pool."""
        D = self.head_dim
        pool = get_token_to_kv_pool()
        layer = self.attn.layer_id
        own_k, own_v = k.reshape(-1, self.num_kv_heads, D), v.reshape(-1, self.num_kv_heads, D)
        copies.own_kv.append((own_k, own_v))
        keys = compact_kv(pool.get_key_buffer(layer)[copies.prefix_slots], own_k)
        values = compact_kv(pool.get_value_buffer(layer)[copies.prefix_slots], own_v)
        out = block_causal_attention(
            q.reshape(-1, self.num_heads, D),
            keys,
            values,
            copies.req_to_token,
            copies.rows,
            copies.prefix_lens,
            copies.extend_lens,
            ALL_KEYS,
            self.attn.scaling,
        )
        return out.reshape(-1, self.q_size)


class LLaDA2DecoderLayer(nn.Module):
    def __init__(
        self,
        config: PretrainedConfig,
        layer_id: int,
        quant_config: QuantizationConfig | None,
        prefix: str,
    ) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.attention = LLaDA2Attention(
            config, layer_id, quant_config, add_prefix("attention", prefix)
        )
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        is_sparse = config.num_experts is not None and layer_id >= config.first_k_dense_replace
        self.mlp: nn.Module = (
            LLaDA2SparseMoe(config, layer_id, quant_config, add_prefix("mlp", prefix))
            if is_sparse
            else LLaDA2MLP(config, config.intermediate_size, quant_config, add_prefix("mlp", prefix))
        )
        self.tp_size = get_parallel().tp_size

    def forward(
        self,
        positions: torch.Tensor,
        x: torch.Tensor,
        forward_batch: ForwardBatch,
        blocks: Blocks | None = None,
    ) -> torch.Tensor:
        x = x + self.attention(positions, self.input_layernorm(x), forward_batch)
        h = self.post_attention_layernorm(x)
        mlp_out = self.mlp(h, blocks) if isinstance(self.mlp, LLaDA2SparseMoe) else self.mlp(h)
        if self.tp_size > 1:
            mlp_out = tensor_model_parallel_all_reduce(mlp_out)
        return x + mlp_out


class LLaDA2MoeModel(nn.Module):
    def __init__(
        self, config: PretrainedConfig, quant_config: QuantizationConfig | None, prefix: str
    ) -> None:
        super().__init__()
        self.word_embeddings = VocabParallelEmbedding(
            config.vocab_size, config.hidden_size, prefix=add_prefix("word_embeddings", prefix)
        )
        self.layers = nn.ModuleList(
            LLaDA2DecoderLayer(config, i, quant_config, add_prefix(f"layers.{i}", prefix))
            for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.block_routing = getattr(config, "expert_capacity", None) is not None
        self.block_size = model_block_size(config)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        forward_batch: ForwardBatch,
        input_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.word_embeddings(input_ids) if input_embeds is None else input_embeds  # [T, H]
        # Routing blocks are the same for every layer: cut once per forward.
        blocks = (
            routing_blocks(forward_batch, x.shape[0], self.block_size, x.device)
            if self.block_routing
            else None
        )
        for layer in self.layers:
            x = layer(positions, x, forward_batch, blocks)
        return self.norm(x)


def _refuse_unsupported_runtime() -> None:
    """What SGLang's in-tree class supports and this one does not, as start-up errors
    (docs/llada2-generations.md has the whole table)."""
    from sglang.srt.layers.dp_attention import is_dp_attention_enabled
    from sglang.srt.utils import is_npu

    if is_npu():
        raise ValueError(
            "sglang-llada's LLaDA2MoeModelLM does not run on Ascend NPUs (SGLang's in-tree class "
            "has NPU kernels); uninstall sglang-llada to serve LLaDA2 on NPUs with SGLang alone"
        )
    if is_dp_attention_enabled():
        raise ValueError(
            "sglang-llada's LLaDA2MoeModelLM does not support --enable-dp-attention; drop it "
            "(tensor parallelism shards the attention heads)"
        )
    features = _runtime_features()
    for flag in ("enable_return_routed_experts", "enable_return_indexer_topk"):
        if getattr(features, flag, False):
            raise ValueError(
                f"sglang-llada's LLaDA2MoeModelLM does not support --{flag.replace('_', '-')}: it routes its "
                "own MoE and records no routing; drop the flag"
            )


def _runtime_features() -> object | None:
    """SGLang's runtime feature switches (`get_exec().features`), None outside a scheduler process."""
    try:
        from sglang.srt.runtime_context import get_exec

        return get_exec().features
    except Exception:  # not published (unit tests building the class directly)
        return None


class LLaDA2MoeModelLM(nn.Module):
    """The class SGLang instantiates for `architectures: ["LLaDA2MoeModelLM"]`."""

    def __init__(
        self,
        config: PretrainedConfig,
        quant_config: QuantizationConfig | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        _refuse_unsupported_runtime()
        self.config = config
        self.quant_config = quant_config
        self.model = LLaDA2MoeModel(config, quant_config, add_prefix("model", prefix))
        if config.tie_word_embeddings:
            self.lm_head = self.model.word_embeddings
        else:
            self.lm_head = ParallelLMHead(
                config.vocab_size,
                config.hidden_size,
                quant_config=quant_config,
                prefix=add_prefix("lm_head", prefix),
            )
        # Diffusion steps read the logits of every position of the block, not just the last.
        self.logits_processor = LogitsProcessor(config, return_full_logits=True)

    @torch.no_grad()
    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        forward_batch: ForwardBatch,
        input_embeds: torch.Tensor | None = None,
        **_: object,
    ):
        hidden = self.model(input_ids, positions, forward_batch, input_embeds)
        return self.logits_processor(input_ids, hidden, self.lm_head, forward_batch)

    @torch.no_grad()
    def forward_folded(self, forward_batch: ForwardBatch, folded: FoldedBlocks):
        """A denoising forward of `forward_batch` that also re-encodes the finished blocks of
        `folded` and stores their KV (models/folded_blocks.py); the logits are the batch's blocks'
        only. Called inside the batch's forward context."""
        if forward_batch.forward_mode != ForwardMode.DLLM_EXTEND:
            raise ValueError(f"a folded forward is a denoising forward (DLLM_EXTEND), not {forward_batch.forward_mode}")
        input_ids, positions = forward_batch.input_ids, forward_batch.positions
        n = input_ids.shape[0]
        ids = torch.cat([input_ids, folded.token_ids.to(input_ids.dtype)])
        pos = torch.cat([positions, folded.positions.to(positions.dtype)])
        attach(forward_batch, folded)
        try:
            hidden = self.model(ids, pos, forward_batch)[:n]  # the folded tokens' hidden states dropped
        finally:
            discard(forward_batch, FoldedBlocks)
        return self.logits_processor(input_ids, hidden, self.lm_head, forward_batch)

    @torch.no_grad()
    def forward_draft_copies(
        self, input_ids: torch.Tensor, positions: torch.Tensor, forward_batch: ForwardBatch, copies: DraftCopies
    ) -> torch.Tensor:
        """[C * S, V] logits of a verification forward (`llada2_exact`, models/draft_copies.py):
        input_ids / positions [C * S], copy after copy; `forward_batch` is the denoising batch
        whose requests' prefixes the copies read. Called inside the batch's forward context."""
        attach(forward_batch, copies)
        try:
            hidden = self.model(input_ids, positions, forward_batch)
        finally:
            discard(forward_batch, DraftCopies)
        return self.logits_processor(input_ids, hidden, self.lm_head, forward_batch).full_logits

    def store_draft_kv(self, forward_batch: ForwardBatch, copies: DraftCopies, rows: torch.Tensor, loc: torch.Tensor) -> None:
        """Writes the K/V that `forward_draft_copies(copies)` computed for its token rows `rows` [R]
        to the KV pool at `loc` [R] (llada2_exact: the kept copies, at their requests' block slots).
        Called inside the batch's forward context."""
        write = KVWriteLoc(loc, physical=forward_batch.out_cache_loc_is_physical)
        pool = get_token_to_kv_pool()
        for layer, (k, v) in zip(self.model.layers, copies.own_kv):
            assert isinstance(layer, LLaDA2DecoderLayer)
            pool.set_kv_buffer(layer.attention.attn, write, k[rows], v[rows])

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load HF-layout tensors (per-expert or fused 3-D experts) into the TP/EP shards."""
        params = dict(self.named_parameters())
        expert_mapping = FusedMoE.make_expert_params_mapping(
            ckpt_gate_proj_name="gate_proj",
            ckpt_down_proj_name="down_proj",
            ckpt_up_proj_name="up_proj",
            num_experts=self.config.num_experts,
        )
        for name, tensor in iter_hf_weights(weights, num_experts=self.config.num_experts):
            if "rotary_emb.inv_freq" in name:
                continue
            if self.config.tie_word_embeddings and name.startswith("lm_head."):
                continue
            if ".mlp.experts." in name:
                self._load_expert(params, expert_mapping, name, tensor)
                continue
            for shard, shard_id in (("gate_proj", 0), ("up_proj", 1)):
                if f".{shard}." in name:
                    target = name.replace(f".{shard}.", ".gate_up_proj.")
                    params[target].weight_loader(params[target], tensor, shard_id)  # type: ignore[attr-defined]  # SGLang's
                    break
            else:
                if name not in params:
                    raise KeyError(f"Unexpected weight {name!r} in the LLaDA2 checkpoint")
                param = params[name]
                getattr(param, "weight_loader", default_weight_loader)(param, tensor)

    @staticmethod
    def _load_expert(
        params: dict[str, nn.Parameter],
        expert_mapping: list[tuple[str, str, int, str]],
        name: str,
        tensor: torch.Tensor,
    ) -> None:
        for param_name, weight_name, expert_id, shard_id in expert_mapping:
            if weight_name not in name:
                continue
            target = name.replace(weight_name, param_name)
            param = params[target]
            param.weight_loader(param, tensor, target, shard_id=shard_id, expert_id=expert_id)  # type: ignore[attr-defined]
            return
        raise KeyError(f"Unexpected expert weight {name!r} in the LLaDA2 checkpoint")


EntryClass = LLaDA2MoeModelLM
