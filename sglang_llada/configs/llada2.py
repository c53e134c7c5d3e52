"""`LLaDA2MoeConfig`: the HF config class for `model_type: llada2_moe`.

Registering it with `AutoConfig` lets SGLang read LLaDA2 checkpoints without
`--trust-remote-code` (upstream checkpoints ship only remote code for it).
Field names and defaults follow the published LLaDA2.0-mini config.json.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig


class LLaDA2MoeConfig(PretrainedConfig):
    model_type = "llada2_moe"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 157184,
        hidden_size: int = 2048,
        intermediate_size: int = 5120,
        num_hidden_layers: int = 20,
        num_attention_heads: int = 16,
        num_key_value_heads: int = 4,
        head_dim: int | None = None,
        hidden_act: str = "silu",
        use_qkv_bias: bool = False,
        use_bias: bool = False,
        use_qk_norm: bool = True,
        rms_norm_eps: float = 1e-6,
        tie_word_embeddings: bool = False,
        embedding_dropout: float = 0.0,
        attention_dropout: float = 0.0,
        output_dropout: float = 0.0,
        initializer_range: float = 0.02,
        max_position_embeddings: int = 32768,
        rope_theta: float = 600000.0,
        rope_scaling: dict[str, Any] | None = None,
        partial_rotary_factor: float = 0.5,
        rotary_dim: int | None = None,
        num_experts: int = 256,
        num_shared_experts: int = 1,
        num_experts_per_tok: int = 8,
        n_group: int = 8,
        topk_group: int = 4,
        moe_intermediate_size: int = 512,
        first_k_dense_replace: int = 1,
        routed_scaling_factor: float = 2.5,
        score_function: str = "sigmoid",
        moe_router_enable_expert_bias: bool = True,
        norm_topk_prob: bool = True,
        router_dtype: str | None = "fp32",
        norm_head: bool = False,
        use_sliding_window: bool = False,
        sliding_window: int = 4096,
        mask_token_id: int | None = None,
        block_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim if head_dim is not None else hidden_size // num_attention_heads
        self.hidden_act = hidden_act
        self.use_qkv_bias = use_qkv_bias
        self.use_bias = use_bias
        self.use_qk_norm = use_qk_norm
        self.rms_norm_eps = rms_norm_eps
        self.embedding_dropout = embedding_dropout
        self.attention_dropout = attention_dropout
        self.output_dropout = output_dropout
        self.initializer_range = initializer_range
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.partial_rotary_factor = partial_rotary_factor
        self.rotary_dim = rotary_dim
        self.num_experts = num_experts
        self.num_shared_experts = num_shared_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.n_group = n_group
        self.topk_group = topk_group
        self.moe_intermediate_size = moe_intermediate_size
        self.first_k_dense_replace = first_k_dense_replace
        self.routed_scaling_factor = routed_scaling_factor
        self.score_function = score_function
        self.moe_router_enable_expert_bias = moe_router_enable_expert_bias
        self.norm_topk_prob = norm_topk_prob
        self.router_dtype = router_dtype
        self.norm_head = norm_head
        self.use_sliding_window = use_sliding_window
        self.sliding_window = sliding_window
        # Diffusion-specific; absent from upstream configs (then taken from the tokenizer).
        self.mask_token_id = mask_token_id
        if block_size is not None:
            self.block_size = block_size
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    @property
    def rotary_dims(self) -> int:
        """Rotated dims per head: `partial_rotary_factor` wins, as in the reference code."""
        if self.partial_rotary_factor is not None:
            return int(self.head_dim * self.partial_rotary_factor)
        return self.rotary_dim if self.rotary_dim is not None else self.head_dim
