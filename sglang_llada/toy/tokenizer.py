"""A 320-token byte-level tokenizer with LLaDA2's special tokens, built with `tokenizers`.

Layout of the vocabulary:
  ids 0..255      the 256 byte symbols (id == byte value), GPT-2 byte-to-unicode spelling;
                  no merges, so every byte is its own token and any text round-trips.
  ids 256..265    LLaDA2's special tokens, in the same order as the real model
                  (156891..156900 in LLaDA2.0-mini): <|startoftext|> ... <|role_end|>.
  ids 266..271    the chat template's words as single tokens: <role>, </role>, SYSTEM, HUMAN,
                  ASSISTANT and the default system prompt "detailed thinking off" (see below);
  ids 272..319    <|reserved_token_0|> ... padding the vocab to a multiple of 64, the way the
                  real vocab (157184) is padded past its last real token. A LLaDA2.2-style toy
                  (`control_tokens=True`) names the first two <|delete|> and <|split|>: the
                  Levenshtein-editing control tokens (ids 156930 / 156931 in the published
                  vocabulary, where config.json's delete_token_id / split_token_id name them).

Why template tokens: byte by byte, LLaDA2's chat template costs 82 tokens per prompt, more than
most of the toy's task inputs. As six added (non-special) tokens it costs 12, which cuts the
training rows' attention and MLP work, and keeps every task character one byte token (no BPE
merges, which would also merge inside task strings and break their fixed-offset layout). The
template text itself is unchanged and decodes verbatim.

tokenizer_config.json is the real one (chat template verbatim), minus the keys that would make
transformers look for remote code or slow-tokenizer files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NUM_BYTES = 256

# Same order as LLaDA2.0-mini (../shared/reference/llada2-mini/special_token_ids.json).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|startoftext|>",
    "<|endoftext|>",
    "[CLS]",
    "[gMASK]",
    "<|mask|>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<|role_end|>",
)

# The chat template's fixed words, matched verbatim as single tokens (not special: they are
# ordinary text and survive decode(skip_special_tokens=True)).
TEMPLATE_TOKENS: tuple[str, ...] = (
    "<role>",
    "</role>",
    "SYSTEM",
    "HUMAN",
    "ASSISTANT",
    "detailed thinking off",
)

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|endoftext|>"  # the real config's pad_token_id is <|endoftext|>'s id
MASK_TOKEN = "<|mask|>"
ROLE_END_TOKEN = "<|role_end|>"

# LLaDA2.2's Levenshtein-editing control tokens (our spelling; the ids come from config.json).
DELETE_TOKEN = "<|delete|>"
SPLIT_TOKEN = "<|split|>"
CONTROL_TOKENS: tuple[str, ...] = (DELETE_TOKEN, SPLIT_TOKEN)

# Real vocab is padded to a multiple of 64 (157184 = 64 * 2456); the toy one is too.
VOCAB_MULTIPLE = 64

_REAL_CONFIG_NAME = "llada2_tokenizer_config.json"
# Keys of the real tokenizer_config.json that would send transformers to remote code or to
# slow-tokenizer files that the toy does not have.
_DROPPED_CONFIG_KEYS = ("trust_remote_code", "vocab_file", "merges_file", "auto_map")


def vocab_size() -> int:
    """256 bytes + the special and template tokens, rounded up to a multiple of 64 (= 320)."""
    n = NUM_BYTES + len(SPECIAL_TOKENS) + len(TEMPLATE_TOKENS)
    return -(-n // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def reserved_tokens(control_tokens: bool = False) -> list[str]:
    """The padding tokens after the template ones: <|reserved_token_0|>, <|reserved_token_1|>, ...

    control_tokens: the first two are LLaDA2.2's <|delete|> and <|split|> instead (same ids).
    """
    n = vocab_size() - NUM_BYTES - len(SPECIAL_TOKENS) - len(TEMPLATE_TOKENS)
    names = [f"<|reserved_token_{i}|>" for i in range(n)]
    if control_tokens:
        names[: len(CONTROL_TOKENS)] = CONTROL_TOKENS
    return names


def special_token_ids(control_tokens: bool = False) -> dict[str, int]:
    """Id of every added (special, template and reserved) token; they follow the 256 byte ids."""
    added = [*SPECIAL_TOKENS, *TEMPLATE_TOKENS, *reserved_tokens(control_tokens)]
    return {tok: NUM_BYTES + i for i, tok in enumerate(added)}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable-character map, the spelling ByteLevel pre-tokenizes into.

    Printable latin-1 bytes map to themselves; the rest are shifted to U+0100 and up, so every
    byte has a visible, whitespace-free symbol.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping: dict[int, str] = {}
    shift = 0
    for b in range(NUM_BYTES):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(NUM_BYTES + shift)
            shift += 1
    return mapping


def build_tokenizer(control_tokens: bool = False) -> Any:
    """Build the `tokenizers.Tokenizer` (returned as Any to keep `tokenizers` out of the types).

    control_tokens: with LLaDA2.2's <|delete|> / <|split|> (see the module docstring)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {sym: b for b, sym in _bytes_to_unicode().items()}  # id == byte value
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    # add_prefix_space=False: LLaDA2 text starts directly with <role>, no injected space.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    # trim_offsets=False keeps offsets covering the raw bytes (spaces included).
    tok.post_processor = processors.ByteLevel(trim_offsets=False)

    # normalized=False + special=True: matched verbatim inside any text, never split, and
    # dropped by decode(skip_special_tokens=True).
    # Added in id order: special, template (plain added tokens), reserved (special).
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TEMPLATE_TOKENS])
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in reserved_tokens(control_tokens)]
    )

    ids = special_token_ids(control_tokens)

    assert tok.get_vocab_size(with_added_tokens=True) == vocab_size()
    assert all(tok.token_to_id(t) == i for t, i in ids.items()), "added-token ids out of order"
    return tok


def _load_real_config() -> dict[str, Any]:
    return json.loads((Path(__file__).parent / _REAL_CONFIG_NAME).read_text(encoding="utf-8"))


def tokenizer_config() -> dict[str, Any]:
    """The real tokenizer_config.json, made loadable without remote code."""
    cfg = {k: v for k, v in _load_real_config().items() if k not in _DROPPED_CONFIG_KEYS}
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["model_max_length"] = cfg.get("model_max_length", 32768)
    return cfg


def special_tokens_map() -> dict[str, str]:
    """bos/eos/pad/mask/cls as in the real tokenizer_config.json."""
    cfg = _load_real_config()
    keys = ("bos_token", "eos_token", "pad_token", "mask_token", "cls_token")
    return {k: cfg[k] for k in keys if k in cfg}


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def load_tokenizer() -> Any:
    """The toy tokenizer as a transformers tokenizer (chat template included)."""
    import tempfile

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as d:
        write_tokenizer(Path(d))
        return AutoTokenizer.from_pretrained(d)


def write_tokenizer(out_dir: Path, control_tokens: bool = False) -> int:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json; return vocab size."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(control_tokens)
    tok.save(str(out_dir / "tokenizer.json"))
    _write_json(out_dir / "tokenizer_config.json", tokenizer_config())
    _write_json(out_dir / "special_tokens_map.json", special_tokens_map())
    return int(tok.get_vocab_size(with_added_tokens=True))
