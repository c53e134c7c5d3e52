"""Special token ids of a LLaDA2 checkpoint: the mask id and the EOS ids, never hard-coded.

SGLang 0.5.23 hard-codes mask id 156895 for every LLaDA2 checkpoint; a checkpoint with
another vocabulary (our toys, a re-tokenized fine-tune) would then denoise the wrong token.
The order of precedence is the checkpoint's own: `mask_token_id` in config.json, else the
tokenizer's `mask_token`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache


class CheckpointTokenError(ValueError):
    """The checkpoint does not say which token is the mask."""


@dataclass(frozen=True)
class DiffusionTokens:
    mask_id: int
    eos_ids: tuple[int, ...]


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _local_dir(path: str, revision: str | None = None) -> str:
    if os.path.isdir(path):
        return path
    # A hub id: SGLang has already downloaded (or will download) it into the HF cache.
    from huggingface_hub import snapshot_download

    return snapshot_download(
        path, revision=revision, allow_patterns=["*.json", "*.model", "*.txt"]
    )


def _token_id(tokenizer_dir: str, token: str) -> int | None:
    tokenizer_json = os.path.join(tokenizer_dir, "tokenizer.json")
    if os.path.exists(tokenizer_json):
        from tokenizers import Tokenizer

        return Tokenizer.from_file(tokenizer_json).token_to_id(token)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tid = tok.convert_tokens_to_ids(token)
    return None if tid == tok.unk_token_id else int(tid)


def _token_str(value: object) -> str | None:
    # tokenizer_config.json stores special tokens as strings or as AddedToken dicts.
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


@lru_cache(maxsize=8)
def resolve_diffusion_tokens(
    model_path: str, tokenizer_path: str | None = None, revision: str | None = None
) -> DiffusionTokens:
    model_dir = _local_dir(model_path, revision)
    tokenizer_dir = _local_dir(tokenizer_path, revision) if tokenizer_path else model_dir
    config = _read_json(os.path.join(model_dir, "config.json"))
    tok_config_path = os.path.join(tokenizer_dir, "tokenizer_config.json")
    tok_config = _read_json(tok_config_path) if os.path.exists(tok_config_path) else {}

    mask_id = config.get("mask_token_id")
    if mask_id is None:
        mask_token = _token_str(tok_config.get("mask_token"))
        if mask_token is None:
            raise CheckpointTokenError(
                f"Cannot tell the diffusion mask token of {model_path!r}: config.json has no "
                f"`mask_token_id` and {tok_config_path} has no `mask_token`. Add "
                '`"mask_token_id": <id>` to config.json, or pass it with '
                "--json-model-override-args '{\"mask_token_id\": <id>}'."
            )
        mask_id = _token_id(tokenizer_dir, mask_token)
        if mask_id is None:
            raise CheckpointTokenError(
                f"The tokenizer of {model_path!r} declares mask_token={mask_token!r} "
                "but has no id for it."
            )
    vocab_size = int(config.get("vocab_size", 0))
    if vocab_size and not 0 <= int(mask_id) < vocab_size:
        raise CheckpointTokenError(
            f"mask token id {mask_id} of {model_path!r} is outside the vocabulary [0, {vocab_size})."
        )

    eos: list[int] = []
    gen_config_path = os.path.join(model_dir, "generation_config.json")
    for source in (config, _read_json(gen_config_path) if os.path.exists(gen_config_path) else {}):
        value = source.get("eos_token_id")
        for tid in value if isinstance(value, list) else [value]:
            if isinstance(tid, int) and tid not in eos:
                eos.append(tid)
    eos_token = _token_str(tok_config.get("eos_token"))
    if eos_token is not None:
        tid = _token_id(tokenizer_dir, eos_token)
        if tid is not None and tid not in eos:
            eos.append(tid)
    return DiffusionTokens(mask_id=int(mask_id), eos_ids=tuple(eos))
