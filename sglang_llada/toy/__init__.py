"""Toy-size LLaDA2 checkpoints that stand in for the real ones on machines without a GPU."""

from pathlib import Path

CHECKPOINTS = Path(__file__).parent / "checkpoints"
# The trained block-diffusion toy: the default model of `sglang-llada serve`.
TRAINED_TOY_DIR = CHECKPOINTS / "llada2-toy"
# Its autoregressive twin (same data, budget and tensors' layout), for SGLang's Bailing MoE V2.
AR_TWIN_DIR = CHECKPOINTS / "bailing-ar-twin"
# Fine-tuned from it (docs/toy-model.md): LLaDA2.1-style (token-to-token editing stream) and
# LLaDA2.2-style (block routing, Levenshtein edit labels with DELETE / SPLIT).
TOY_21_DIR = CHECKPOINTS / "llada2.1-toy"
TOY_22_DIR = CHECKPOINTS / "llada2.2-toy"
TOY_DIRS = {"2.0": TRAINED_TOY_DIR, "2.1": TOY_21_DIR, "2.2": TOY_22_DIR}
