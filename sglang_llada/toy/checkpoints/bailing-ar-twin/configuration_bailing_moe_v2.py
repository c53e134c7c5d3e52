"""Config class of the sglang-llada autoregressive twin (Bailing MoE V2 schema)."""

from transformers import PretrainedConfig


class BailingMoeV2Config(PretrainedConfig):
    model_type = "bailing_moe_v2"

    def __init__(self, rope_theta=600000.0, rope_scaling=None, **kwargs):
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        # transformers 5 reads rotary settings from rope_parameters.
        self.rope_parameters = dict(rope_scaling or {"rope_type": "default"}, rope_theta=rope_theta)
        super().__init__(**kwargs)
