"""The toy tokenizer, the toy checkpoint writer and the `tiny-checkpoint` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from sglang_llada.toy.checkpoint import (
    INDEX_FILE,
    SINGLE_FILE,
    expected_weight_shapes,
    write_tiny_checkpoint,
)
from sglang_llada.toy.config import TOY_ARCH
from sglang_llada.toy.tokenizer import SPECIAL_TOKENS, TEMPLATE_TOKENS, write_tokenizer

REAL_DIR = Path("/work/shared/reference/llada2-mini")
REAL_TOKENIZER_CONFIG = Path(__file__).parents[2] / "sglang_llada/toy/llada2_tokenizer_config.json"

CHAT_HI = (
    "<role>SYSTEM</role>detailed thinking off<|role_end|>"
    "<role>HUMAN</role>hi<|role_end|><role>ASSISTANT</role>"
)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _load_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint, whether single-file or sharded."""
    if (ckpt / SINGLE_FILE).exists():
        return load_file(ckpt / SINGLE_FILE)
    out: dict[str, torch.Tensor] = {}
    for fname in sorted(set(_read_json(ckpt / INDEX_FILE)["weight_map"].values())):
        out.update(load_file(ckpt / fname))
    return out


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tok")
    assert write_tokenizer(d) == 320
    return d


@pytest.fixture(scope="module")
def tok(tok_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tok_dir))


def test_tokenizer_vocab_layout(tok: Any) -> None:
    assert len(tok) == 320 and len(tok) % 64 == 0
    # The special tokens follow the 256 byte ids, in the real model's order.
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.convert_tokens_to_ids(t) == 256 + i, t
    # Then the chat template's words, one token each, then the reserved padding.
    for i, t in enumerate(TEMPLATE_TOKENS):
        assert tok.convert_tokens_to_ids(t) == 266 + i, t
    assert tok.convert_tokens_to_ids("<|reserved_token_0|>") == 272
    assert tok.convert_ids_to_tokens(319) == "<|reserved_token_47|>"
    # Byte ids are byte values.
    assert tok.encode("A", add_special_tokens=False) == [65]
    assert tok.encode("é", add_special_tokens=False) == list("é".encode())


def test_tokenizer_named_special_tokens(tok: Any) -> None:
    assert (tok.bos_token, tok.bos_token_id) == ("<|startoftext|>", 256)
    assert (tok.eos_token, tok.eos_token_id) == ("<|endoftext|>", 257)
    assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 257)
    assert (tok.cls_token, tok.cls_token_id) == ("[CLS]", 258)
    assert (tok.mask_token, tok.mask_token_id) == ("<|mask|>", 260)


@pytest.mark.parametrize(
    "text",
    ["hello world", "  leading and  double spaces\n\ttabs\n", "héllo wörld, 你好, привет 🙂", ""],
)
def test_tokenizer_round_trip(tok: Any, text: str) -> None:
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == len(text.encode())  # no merges: one id per byte
    assert tok.decode(ids) == text


def test_special_tokens_are_single_ids_inside_text(tok: Any) -> None:
    for i, t in enumerate(SPECIAL_TOKENS):
        ids = tok.encode(f"a{t}b", add_special_tokens=False)
        assert ids == [ord("a"), 256 + i, ord("b")], t
    text = "x<|mask|><|mask|>é<|role_end|>"
    ids = tok.encode(text, add_special_tokens=False)
    assert ids.count(260) == 2 and 265 in ids
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == "xé"


def test_chat_template_words_are_plain_single_tokens(tok: Any) -> None:
    """12 tokens of template around a chat turn instead of 82 bytes; text round-trips."""
    ids = tok.encode(CHAT_HI, add_special_tokens=False)
    assert len(ids) == 12 + len("hi")
    assert ids[:4] == [266, 268, 267, 271]  # <role> SYSTEM </role> detailed thinking off
    # Ordinary text: kept by skip_special_tokens, unlike <|role_end|>.
    assert tok.decode(ids, skip_special_tokens=True) == CHAT_HI.replace("<|role_end|>", "")


def test_chat_template(tok: Any, tok_dir: Path) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == CHAT_HI
    cfg = _read_json(tok_dir / "tokenizer_config.json")
    real = _read_json(REAL_TOKENIZER_CONFIG)
    assert cfg["chat_template"] == real["chat_template"]
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    for key in ("trust_remote_code", "vocab_file", "merges_file", "auto_map"):
        assert key not in cfg
    for key in ("bos_token", "eos_token", "pad_token", "mask_token", "cls_token", "gmask_token"):
        assert cfg[key] == real[key]


# --------------------------------------------------------------------------------------------
# Checkpoint
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ckpt")


@pytest.fixture(scope="module")
def ckpt(ckpt_root: Path) -> Path:
    return write_tiny_checkpoint(ckpt_root / "seed0", seed=0)


@pytest.fixture(scope="module")
def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return _load_weights(ckpt)


def test_config_files(ckpt: Path) -> None:
    cfg = _read_json(ckpt / "config.json")
    for k, v in TOY_ARCH.items():
        assert cfg[k] == v, k
    assert cfg["vocab_size"] == 320
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (256, 257, 257)
    assert "transformers_version" in cfg
    # Like the real LLaDA2.0-mini config: the mask id must come from the tokenizer.
    assert "mask_token_id" not in cfg
    gen = _read_json(ckpt / "generation_config.json")
    assert gen["eos_token_id"] == [257, 265]
    assert (gen["bos_token_id"], gen["pad_token_id"]) == (256, 257)
    for f in ("tokenizer.json", "tokenizer_config.json", SINGLE_FILE):
        assert (ckpt / f).is_file()
    assert not (ckpt / INDEX_FILE).exists()


def test_names_and_shapes(ckpt: Path, weights: dict[str, torch.Tensor]) -> None:
    expected = expected_weight_shapes(_read_json(ckpt / "config.json"))
    assert {n: tuple(t.shape) for n, t in weights.items()} == expected
    assert "lm_head.weight" in expected
    assert expected["model.layers.1.attention.query_key_value.weight"] == ((4 + 2 * 2) * 16, 64)
    assert expected["model.layers.2.mlp.experts.7.down_proj.weight"] == (64, 32)
    assert "model.layers.0.mlp.gate_proj.weight" in expected  # layer 0 is dense
    assert "model.layers.0.mlp.gate.weight" not in expected


def test_dtype_and_init(weights: dict[str, torch.Tensor]) -> None:
    assert all(t.dtype == torch.float32 for t in weights.values())
    norm = weights["model.layers.0.attention.query_layernorm.weight"]
    assert not torch.equal(norm, torch.ones_like(norm))  # an ignored norm must be detectable
    assert 0.05 < float((norm - 1).std()) < 0.2
    emb = weights["model.word_embeddings.weight"]
    assert 0.06 < float(emb.std()) < 0.1  # 4 * initializer_range
    assert weights["model.layers.1.mlp.gate.expert_bias"].abs().sum() > 0


def test_same_seed_identical_other_seed_different(ckpt_root: Path, ckpt: Path, weights: dict[str, torch.Tensor]) -> None:
    again = write_tiny_checkpoint(ckpt_root / "seed0-again", seed=0)
    assert (again / SINGLE_FILE).read_bytes() == (ckpt / SINGLE_FILE).read_bytes()
    other = _load_weights(write_tiny_checkpoint(ckpt_root / "seed1", seed=1))
    assert other.keys() == weights.keys()
    for name, t in weights.items():
        assert not torch.equal(t, other[name]), name


def test_sharded_equals_single_file(ckpt_root: Path, weights: dict[str, torch.Tensor]) -> None:
    sharded = write_tiny_checkpoint(ckpt_root / "sharded", seed=0, num_shards=3)
    assert not (sharded / SINGLE_FILE).exists()
    index = _read_json(sharded / INDEX_FILE)
    files = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert sorted(set(index["weight_map"].values())) == files
    assert index["weight_map"].keys() == weights.keys()
    per_file = {f: load_file(sharded / f) for f in files}
    sizes = []
    for f, tensors in per_file.items():
        assert tensors, f"{f} is empty"
        assert all(index["weight_map"][n] == f for n in tensors)
        sizes.append(sum(t.numel() * t.element_size() for t in tensors.values()))
    assert index["metadata"]["total_size"] == sum(sizes)
    assert max(sizes) < 2 * min(sizes)  # roughly even
    union = {n: t for tensors in per_file.values() for n, t in tensors.items()}
    assert union.keys() == weights.keys()
    for name, t in weights.items():
        assert torch.equal(union[name], t), name


def test_fused_experts_hold_same_values(ckpt_root: Path, ckpt: Path, weights: dict[str, torch.Tensor]) -> None:
    fused_dir = write_tiny_checkpoint(ckpt_root / "fused", seed=0, fused_experts=True)
    fused = _load_weights(fused_dir)
    cfg = _read_json(fused_dir / "config.json")
    assert {n: tuple(t.shape) for n, t in fused.items()} == expected_weight_shapes(cfg, fused_experts=True)
    n_experts = cfg["num_experts"]
    for layer in range(cfg["first_k_dense_replace"], cfg["num_hidden_layers"]):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            stacked = fused.pop(f"model.layers.{layer}.mlp.experts.{proj}")
            assert stacked.shape[0] == n_experts
            for e in range(n_experts):
                assert torch.equal(stacked[e], weights[f"model.layers.{layer}.mlp.experts.{e}.{proj}.weight"])
    # Everything that is not an expert is identical too.
    for name, t in fused.items():
        assert torch.equal(t, weights[name]), name


def test_overrides_tied_and_bf16(ckpt_root: Path, weights: dict[str, torch.Tensor]) -> None:
    out = write_tiny_checkpoint(
        ckpt_root / "tied-bf16",
        seed=0,
        overrides={"tie_word_embeddings": True, "dtype": "bfloat16", "use_qkv_bias": True},
    )
    cfg = _read_json(out / "config.json")
    assert cfg["tie_word_embeddings"] is True and cfg["dtype"] == "bfloat16"
    got = _load_weights(out)
    assert {n: tuple(t.shape) for n, t in got.items()} == expected_weight_shapes(cfg)
    assert "lm_head.weight" not in got
    assert "model.layers.0.attention.query_key_value.bias" in got
    for name, t in got.items():
        if name.endswith("expert_bias"):
            assert t.dtype == torch.float32
            assert torch.equal(t, weights[name])
        else:
            assert t.dtype == torch.bfloat16, name
            if name in weights:  # adding tensors does not shift the others
                assert torch.equal(t, weights[name].to(torch.bfloat16)), name


def test_mask_token_id_only_when_overridden(ckpt_root: Path) -> None:
    out = write_tiny_checkpoint(ckpt_root / "mask", overrides={"mask_token_id": 260})
    assert _read_json(out / "config.json")["mask_token_id"] == 260


@pytest.mark.skipif(not (REAL_DIR / "config.json").exists(), reason="no reference config")
def test_expected_shapes_of_real_config() -> None:
    cfg = _read_json(REAL_DIR / "config.json")
    shapes = expected_weight_shapes(cfg)
    assert shapes["model.word_embeddings.weight"] == (157184, 2048)
    assert shapes["lm_head.weight"] == (157184, 2048)
    assert shapes["model.layers.0.attention.query_key_value.weight"] == ((16 + 2 * 4) * 128, 2048)
    assert shapes["model.layers.0.attention.dense.weight"] == (2048, 16 * 128)
    assert shapes["model.layers.0.mlp.down_proj.weight"] == (2048, 5120)
    assert shapes["model.layers.19.mlp.experts.255.gate_proj.weight"] == (512, 2048)
    assert shapes["model.layers.19.mlp.shared_experts.down_proj.weight"] == (2048, 512)
    assert shapes["model.layers.19.mlp.gate.expert_bias"] == (256,)
    # embeddings + final norm + lm_head; per layer 2 norms, qkv, q/k norms, dense; 3 dense-MLP
    # tensors in layer 0; 19 MoE layers with router + bias + 256*3 experts + 3 shared.
    assert len(shapes) == 3 + 20 * 6 + 3 + 19 * (2 + 256 * 3 + 3)
    fused = expected_weight_shapes(cfg, fused_experts=True)
    assert fused["model.layers.1.mlp.experts.down_proj"] == (256, 2048, 512)
    assert len(fused) == len(shapes) - 19 * (256 * 3 - 3)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_cli_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "cli-ckpt"
    proc = subprocess.run(
        [sys.executable, "-m", "sglang_llada", "tiny-checkpoint", str(out), "--seed", "3"],
        cwd=tmp_path,  # a neutral cwd: the installed package, not the repo checkout, must be found
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", SINGLE_FILE):
        assert (out / f).is_file(), f
    assert _load_weights(out).keys() == expected_weight_shapes(_read_json(out / "config.json")).keys()


def test_cli_in_process_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sglang_llada.cli import main

    out = tmp_path / "flags"
    argv = ["tiny-checkpoint", str(out), "--shards", "2", "--fused-experts", "--tie-word-embeddings"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(out)
    cfg = _read_json(out / "config.json")
    assert cfg["tie_word_embeddings"] is True
    index = _read_json(out / INDEX_FILE)
    assert index["weight_map"].keys() == expected_weight_shapes(cfg, fused_experts=True).keys()


def test_cli_requires_subcommand() -> None:
    from sglang_llada.cli import main

    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
