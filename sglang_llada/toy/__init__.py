"""Toy-size LLaDA2 checkpoints that stand in for the real ones on machines without a GPU."""

from pathlib import Path

CHECKPOINTS = Path(__file__).parent / "checkpoints"
# The trained block-diffusion toy: the default model of `sglang-llada serve`.
TRAINED_TOY_DIR = CHECKPOINTS / "llada2-toy"
# Its autoregressive twin (same data, budget and tensors' layout), for SGLang's Bailing MoE V2.
AR_TWIN_DIR = CHECKPOINTS / "bailing-ar-twin"
