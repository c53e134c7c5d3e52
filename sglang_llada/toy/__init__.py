"""Toy-size LLaDA2 checkpoints that stand in for the real ones on machines without a GPU."""

from pathlib import Path

CHECKPOINTS = Path(__file__).parent / "checkpoints"
# The trained block-diffusion toy: the default model of `sglang-llada serve`.
TRAINED_TOY_DIR = CHECKPOINTS / "llada2-toy"
# Its autoregressive twin (same data, budget and tensors' layout), for SGLang's Bailing MoE V2.
AR_TWIN_DIR = CHECKPOINTS / "bailing-ar-twin"
# Trained further from it with LLaDA2.1's token-to-token stream (docs/toy-model.md).
TOY_21_DIR = CHECKPOINTS / "llada2.1-toy"
# The 2.0 toy trained further on the JSON task (`fixed-json` recipe): the one toy that answers
# `JSON: a+b` with `{"op": "add", "result": "0941"}`, for structured output (docs/structured-output.md).
JSON_TOY_DIR = CHECKPOINTS / "llada2-toy-json"
# Trained further from the 2.1 toy with block routing and LLaDA2.2's Levenshtein edit labels (DELETE /
# SPLIT); it does not meet the 2.2 bar (Levenshtein decoding does not beat the same weights
# without edits on greedy drafts): docs/toy-model.md.
TOY_22_DIR = CHECKPOINTS / "llada2.2-toy"
# The shipped toys by generation.
TOY_DIRS = {"2.0": TRAINED_TOY_DIR, "2.1": TOY_21_DIR, "2.2": TOY_22_DIR}
