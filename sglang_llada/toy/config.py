"""The toy LLaDA2 architecture: the real LLaDA2.0-mini schema at a size that runs on 2 CPU cores.

Every feature of the real model is kept switched on (GQA, QK RMSNorm, partial rotary, sigmoid
router with expert bias, group-limited top-k, routed scaling, a shared expert, one dense first
layer) so that the toy exercises the same code path as the real checkpoint.
"""

from __future__ import annotations

from typing import Any

# Fields that are shared with ../shared/reference/llada2-mini/config.json, at toy size.
TOY_ARCH: dict[str, Any] = {
    "architectures": ["LLaDA2MoeModelLM"],
    "model_type": "llada2_moe",
    "hidden_size": 64,
    "num_hidden_layers": 3,  # layer 0 dense, layers 1-2 MoE
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # GQA: 2 query heads per KV head
    "head_dim": 16,
    "partial_rotary_factor": 0.5,
    "rotary_dim": 8,
    "rope_theta": 600000,
    "rope_scaling": None,
    "max_position_embeddings": 8192,
    "intermediate_size": 128,  # dense MLP (first_k_dense_replace layers)
    "moe_intermediate_size": 32,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "n_group": 4,
    "topk_group": 2,
    "num_shared_experts": 1,
    "first_k_dense_replace": 1,
    "routed_scaling_factor": 2.5,
    "score_function": "sigmoid",
    "moe_router_enable_expert_bias": True,
    "norm_topk_prob": True,
    "router_dtype": "fp32",
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "use_bias": False,
    "use_qkv_bias": False,
    "use_rmsnorm": True,
    "norm_head": False,
    "tie_word_embeddings": False,
    "initializer_range": 0.02,
    "attention_dropout": 0.0,
    "embedding_dropout": 0.0,
    "output_dropout": 0.0,
    "use_cache": False,
    "use_sliding_window": False,
    "dtype": "float32",
}

# The toy to be trained (train.py) and shipped as the default of `sglang-llada serve`: TOY_ARCH
# widened and deepened for the task suite. Not yet shown to learn it (docs/toy-model.md).
TRAINED_TOY_ARCH: dict[str, Any] = {
    "hidden_size": 128,
    "num_hidden_layers": 4,  # layer 0 dense, layers 1-3 MoE
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    # The real model's head_dim. With QK RMSNorm, attention logits are capped at ~sqrt(head_dim)
    # (times the norm weights): at head_dim 32 the cap (~5.7) and 8 rotary frequencies were too
    # soft to single out one position, and even fixed-offset copying had not been learned after
    # 400 steps; at 128 (cap ~11.3, 32 frequencies) it is learned in ~400 (docs/toy-model.md).
    "head_dim": 128,
    "rotary_dim": 64,
    # LLaDA2 uses 600000; 10000 gives the 32 rotary frequencies wavelengths from ~6 to ~60000
    # positions, so short offsets are sharply resolved.
    "rope_theta": 10000,
    "intermediate_size": 384,
    "moe_intermediate_size": 128,
    "max_position_embeddings": 4096,
    "use_qk_norm": True,
}

# The autoregressive twin: the same tensors, served by SGLang's in-tree Bailing MoE V2 class
# (LLaDA2's autoregressive ancestor). Bailing's config defaults differ from LLaDA2's in
# use_bias and use_qk_norm, so both are spelled out.
AR_TWIN_ARCH: dict[str, Any] = {
    "architectures": ["BailingMoeV2ForCausalLM"],
    "model_type": "bailing_moe_v2",
    # transformers has no bailing_moe_v2 config; like the published Ling 2.0 checkpoints, the
    # twin carries its config class as remote code (serve it with --trust-remote-code).
    "auto_map": {"AutoConfig": "configuration_bailing_moe_v2.BailingMoeV2Config"},
    "use_bias": False,
    "use_qk_norm": True,
}

AR_TWIN_CONFIG_CODE = '''"""Config class of the sglang-llada autoregressive twin (Bailing MoE V2 schema)."""

from transformers import PretrainedConfig


class BailingMoeV2Config(PretrainedConfig):
    model_type = "bailing_moe_v2"

    def __init__(self, rope_theta=600000.0, rope_scaling=None, **kwargs):
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        # transformers 5 reads rotary settings from rope_parameters.
        self.rope_parameters = dict(rope_scaling or {"rope_type": "default"}, rope_theta=rope_theta)
        super().__init__(**kwargs)
'''
