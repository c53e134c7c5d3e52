"""The LLaDA2 checkpoint format, and the one writer of checkpoints in Hugging Face layout.

* :class:`Dims` / :func:`dims_from_config`: the architecture numbers of a config.json (real or
  toy), with LLaDA2's defaults filled in; the pure-torch forward (`toy/torch_model.py`) reads them.
* :func:`expected_weight_shapes`: every tensor name and shape of a checkpoint for a config.
* :func:`generate_weights`, :func:`write_checkpoint`, :func:`write_tiny_checkpoint`: random
  weights, and config.json + generation_config.json + the toy tokenizer + safetensors (single
  file or shards, per-expert or fused experts). The trainer, the tests and the CLI all write here.

The weight names and shapes are those of inclusionAI/LLaDA2.0-mini, so a loader that reads the
toy checkpoint reads the real one too. Two expert layouts are supported:
  per-expert (as published):  model.layers.{l}.mlp.experts.{e}.{gate,up,down}_proj.weight
  fused (3-D, no `.weight`):  model.layers.{l}.mlp.experts.{gate,up,down}_proj  [E, ...]

Determinism: every tensor is drawn from its own `torch.Generator`, seeded from (seed, name). The
seed therefore fixes every tensor byte for byte, and a tensor does not change when others are
added or removed (tied vs untied lm_head, fused vs per-expert, extra biases): a fused and a
per-expert checkpoint of the same seed are the same model, and so are a sharded and a single-file
one.

torch is imported only where tensors are made, so the module imports fast.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sglang_llada.toy.config import TOY_ARCH
from sglang_llada.toy.tokenizer import (
    BOS_TOKEN,
    DELETE_TOKEN,
    EOS_TOKEN,
    PAD_TOKEN,
    ROLE_END_TOKEN,
    SPLIT_TOKEN,
    special_token_ids,
    write_tokenizer,
)

if TYPE_CHECKING:
    import torch

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

_DTYPES = ("float32", "bfloat16")

# Embedding / lm_head std multiplier: with plain initializer_range (0.02) and H=64 the logits
# are ~0.01 and the output distribution is near uniform, which would hide wiring bugs.
_EMBED_STD_SCALE = 4.0
# RMSNorm weights are 1 + N(0, 0.1) instead of exactly 1, so a norm whose weight is ignored
# (or applied to the wrong tensor) changes the output and a test can catch it.
_NORM_STD = 0.1
_EXPERT_BIAS_STD = 0.1

# What a tiny checkpoint of each LLaDA2.X generation adds (sglang_llada/startup/generation.py tells them
# apart by exactly these fields):
# - 2.1: generation_config.json carries the editing knobs of LLaDA2.1's reference decoder
#   (Q mode: threshold 0.7, editing_threshold 0.5, max_post_steps 16);
# - 2.2: MoE block routing (each 32-token block admits `expert_capacity` of the experts) and the
#   Levenshtein-editing control tokens, in config.json and in the tokenizer.
GENERATIONS = ("2.0", "2.1", "2.2")
EDITING_GENERATION_CONFIG = {"threshold": 0.7, "editing_threshold": 0.5, "max_post_steps": 16}
BLOCK_ROUTING_CAPACITY = 4  # of the toy's 8 experts, top-2 per token


def generation_overrides(generation: str) -> dict[str, Any]:
    """config.json fields a tiny checkpoint of `generation` adds to TOY_ARCH."""
    if generation not in GENERATIONS:
        raise ValueError(f"generation must be one of {', '.join(GENERATIONS)}, got {generation!r}")
    if generation != "2.2":
        return {}
    ids = special_token_ids(control_tokens=True)
    return {
        "expert_capacity": BLOCK_ROUTING_CAPACITY,
        "block_size": 32,
        "delete_token_id": ids[DELETE_TOKEN],
        "split_token_id": ids[SPLIT_TOKEN],
    }


# --------------------------------------------------------------------------------------------
# Architecture numbers and shapes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dims:
    """The architecture numbers of a LLaDA2 config, with the defaults filled in."""

    hidden: int  # H
    layers: int  # L
    heads: int  # nH
    kv_heads: int  # nKV
    head_dim: int  # D
    rotary_dim: int  # rd <= D
    rope_theta: float
    eps: float
    intermediate: int  # I (dense MLP)
    moe_intermediate: int  # Im (one expert)
    experts: int  # E (0: every layer dense)
    top_k: int  # K
    n_group: int  # G (<= 1: no group limit)
    topk_group: int  # TG
    shared_experts: int  # S (0: none)
    first_k_dense: int  # F
    routed_scaling: float
    score_function: str  # "sigmoid" | "softmax"
    expert_bias: bool
    norm_topk_prob: bool
    qkv_bias: bool
    dense_bias: bool
    qk_norm: bool
    tied: bool
    vocab: int  # V
    expert_capacity: int | None = None  # LLaDA2.2 block routing: experts admitted per block
    routing_block: int = 32  # the block of block routing (config.json block_size)

    def is_moe_layer(self, layer: int) -> bool:
        """Layers before first_k_dense_replace (and all of them without experts) are dense."""
        return self.experts > 0 and layer >= self.first_k_dense


def dims_from_config(config: dict[str, Any]) -> Dims:
    H = int(config["hidden_size"])
    nH = int(config["num_attention_heads"])
    D = int(config.get("head_dim") or H // nH)
    if config.get("partial_rotary_factor") is not None:
        rd = int(D * float(config["partial_rotary_factor"]))
    elif config.get("rotary_dim") is not None:
        rd = int(config["rotary_dim"])
    else:
        rd = D
    use_bias = bool(config.get("use_bias", False))
    qk_norm = config.get("use_qk_norm")
    return Dims(
        hidden=H,
        layers=int(config["num_hidden_layers"]),
        heads=nH,
        kv_heads=int(config.get("num_key_value_heads") or nH),
        head_dim=D,
        rotary_dim=rd,
        rope_theta=float(config.get("rope_theta", 10000.0)),
        eps=float(config.get("rms_norm_eps", 1e-6)),
        intermediate=int(config["intermediate_size"]),
        moe_intermediate=int(config.get("moe_intermediate_size") or 0),
        experts=int(config.get("num_experts") or 0),
        top_k=int(config.get("num_experts_per_tok") or 0),
        n_group=int(config.get("n_group") or 0),
        topk_group=int(config.get("topk_group") or 0),
        shared_experts=int(config.get("num_shared_experts") or 0),
        first_k_dense=int(config.get("first_k_dense_replace") or 0),
        routed_scaling=float(
            1.0 if config.get("routed_scaling_factor") is None else config["routed_scaling_factor"]
        ),
        score_function=str(config.get("score_function") or "sigmoid"),
        expert_bias=bool(config.get("moe_router_enable_expert_bias", False)),
        norm_topk_prob=bool(config.get("norm_topk_prob", False)),
        qkv_bias=bool(config.get("use_qkv_bias", False)) or use_bias,
        dense_bias=use_bias,
        qk_norm=True if qk_norm is None else bool(qk_norm),
        tied=bool(config.get("tie_word_embeddings", False)),
        vocab=int(config["vocab_size"]),
        expert_capacity=None if config.get("expert_capacity") is None else int(config["expert_capacity"]),
        routing_block=int(config.get("block_size") or 32),
    )


def _layer_shapes(d: Dims, layer: int, fused_experts: bool) -> Iterator[tuple[str, tuple[int, ...]]]:
    H, nH, nKV, D = d.hidden, d.heads, d.kv_heads, d.head_dim
    p = f"model.layers.{layer}"

    yield f"{p}.input_layernorm.weight", (H,)
    # Fused QKV rows: nH query heads, then nKV key heads, then nKV value heads.
    yield f"{p}.attention.query_key_value.weight", ((nH + 2 * nKV) * D, H)
    if d.qkv_bias:
        yield f"{p}.attention.query_key_value.bias", ((nH + 2 * nKV) * D,)
    if d.qk_norm:
        yield f"{p}.attention.query_layernorm.weight", (D,)
        yield f"{p}.attention.key_layernorm.weight", (D,)
    yield f"{p}.attention.dense.weight", (H, nH * D)
    if d.dense_bias:
        yield f"{p}.attention.dense.bias", (H,)
    yield f"{p}.post_attention_layernorm.weight", (H,)

    if not d.is_moe_layer(layer):
        I = d.intermediate
        yield f"{p}.mlp.gate_proj.weight", (I, H)
        yield f"{p}.mlp.up_proj.weight", (I, H)
        yield f"{p}.mlp.down_proj.weight", (H, I)
        return

    E, Im, S = d.experts, d.moe_intermediate, d.shared_experts
    yield f"{p}.mlp.gate.weight", (E, H)  # router
    if d.expert_bias:
        yield f"{p}.mlp.gate.expert_bias", (E,)
    if fused_experts:
        yield f"{p}.mlp.experts.gate_proj", (E, Im, H)
        yield f"{p}.mlp.experts.up_proj", (E, Im, H)
        yield f"{p}.mlp.experts.down_proj", (E, H, Im)
    else:
        for e in range(E):
            yield f"{p}.mlp.experts.{e}.gate_proj.weight", (Im, H)
            yield f"{p}.mlp.experts.{e}.up_proj.weight", (Im, H)
            yield f"{p}.mlp.experts.{e}.down_proj.weight", (H, Im)
    if S > 0:
        yield f"{p}.mlp.shared_experts.gate_proj.weight", (Im * S, H)
        yield f"{p}.mlp.shared_experts.up_proj.weight", (Im * S, H)
        yield f"{p}.mlp.shared_experts.down_proj.weight", (H, Im * S)


def expected_weight_shapes(config: dict[str, Any], fused_experts: bool = False) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of a LLaDA2 checkpoint with this config (allocates nothing).

    Works for the toy config and for the real LLaDA2.0-mini config.json alike. Optional tensors
    follow the config: q/k norms unless use_qk_norm is false, biases with use_bias /
    use_qkv_bias, the router's expert_bias with moe_router_enable_expert_bias, lm_head unless
    tie_word_embeddings.
    """
    d = dims_from_config(config)
    shapes: dict[str, tuple[int, ...]] = {"model.word_embeddings.weight": (d.vocab, d.hidden)}
    for layer in range(d.layers):
        shapes.update(_layer_shapes(d, layer, fused_experts))
    shapes["model.norm.weight"] = (d.hidden,)
    if not d.tied:
        shapes["lm_head.weight"] = (d.vocab, d.hidden)
    return shapes


# --------------------------------------------------------------------------------------------
# Random init
# --------------------------------------------------------------------------------------------


def _tensor_seed(seed: int, name: str) -> int:
    """A stable 63-bit seed per (seed, tensor name); hashlib, not hash(), which is salted per process."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _init_tensor(name: str, shape: tuple[int, ...], seed: int, std: float) -> torch.Tensor:
    """One float32 tensor, a pure function of (seed, name, shape, std)."""
    import torch

    gen = torch.Generator().manual_seed(_tensor_seed(seed, name))
    if name.endswith("layernorm.weight") or name == "model.norm.weight":
        return 1.0 + torch.randn(shape, generator=gen) * _NORM_STD
    if name.endswith("expert_bias"):
        return torch.randn(shape, generator=gen) * _EXPERT_BIAS_STD
    if name in ("model.word_embeddings.weight", "lm_head.weight"):
        return torch.randn(shape, generator=gen) * (std * _EMBED_STD_SCALE)
    return torch.randn(shape, generator=gen) * std


def _storage_dtype(config: dict[str, Any]) -> torch.dtype:
    import torch

    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {name!r}")
    return getattr(torch, name)


def generate_weights(config: dict[str, Any], *, seed: int = 0, fused_experts: bool = False) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint, in expected_weight_shapes order, cast to the config dtype.

    Fused expert tensors are the per-expert tensors (same names, same seeds) stacked, so the
    two layouts hold identical values.
    """
    import torch

    dtype = _storage_dtype(config)
    std = float(config.get("initializer_range", 0.02))
    per_expert = expected_weight_shapes(config, fused_experts=False)
    out: dict[str, torch.Tensor] = {}
    for name, shape in expected_weight_shapes(config, fused_experts=fused_experts).items():
        if name in per_expert:
            t = _init_tensor(name, shape, seed, std)
        else:
            # "model.layers.{l}.mlp.experts.{proj}" [E, ...] <- stack of ".experts.{e}.{proj}.weight"
            prefix, proj = name.rsplit(".", 1)
            t = torch.stack(
                [
                    _init_tensor(f"{prefix}.{e}.{proj}.weight", shape[1:], seed, std)
                    for e in range(shape[0])
                ]
            )
        # The router bias stays fp32 in the real checkpoint (router_dtype fp32) whatever the dtype.
        out[name] = t if name.endswith("expert_bias") else t.to(dtype)
    return out


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def shard_names(num_shards: int) -> list[str]:
    """HF shard file names: model-00001-of-00003.safetensors, ..."""
    return [f"model-{i + 1:05d}-of-{num_shards:05d}.safetensors" for i in range(num_shards)]


def split_into_shards(tensors: dict[str, torch.Tensor], num_shards: int) -> list[list[str]]:
    """Contiguous groups of tensor names with roughly equal byte totals, none of them empty."""
    names = list(tensors)
    if not 1 <= num_shards <= len(names):
        raise ValueError(f"num_shards must be in [1, {len(names)}], got {num_shards}")
    target = sum(_nbytes(t) for t in tensors.values()) / num_shards
    groups: list[list[str]] = [[]]
    done = 0  # bytes in the groups before the current one, plus the current one
    for i, name in enumerate(names):
        shards_after = num_shards - len(groups)
        tensors_left = len(names) - i
        # Move on once the current shard reached its share of the bytes, or when every tensor
        # still to place is needed to keep the remaining shards non-empty.
        if groups[-1] and shards_after > 0 and (done >= len(groups) * target or tensors_left <= shards_after):
            groups.append([])
        groups[-1].append(name)
        done += _nbytes(tensors[name])
    return groups


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _write_weights(out_dir: Path, tensors: dict[str, torch.Tensor], num_shards: int) -> None:
    from safetensors.torch import save_file

    # {"format": "pt"} is what transformers checks for before it trusts a safetensors file.
    metadata = {"format": "pt"}
    if num_shards == 1:
        save_file(tensors, str(out_dir / SINGLE_FILE), metadata=metadata)
        return
    weight_map: dict[str, str] = {}
    for fname, group in zip(shard_names(num_shards), split_into_shards(tensors, num_shards)):
        save_file({n: tensors[n] for n in group}, str(out_dir / fname), metadata=metadata)
        weight_map.update(dict.fromkeys(group, fname))
    total = sum(_nbytes(t) for t in tensors.values())
    _write_json(out_dir / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})


def _transformers_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:  # metadata, not `import transformers`: that import takes seconds
        return version("transformers")
    except PackageNotFoundError:
        return "unknown"


def build_config(
    vocab_size: int, overrides: dict[str, Any] | None = None, generation: str = "2.0"
) -> dict[str, Any]:
    """TOY_ARCH plus the tokenizer-derived fields and the generation's fields, then `overrides`."""
    ids = special_token_ids()
    config = copy.deepcopy(TOY_ARCH)
    config.update(generation_overrides(generation))
    config.update(
        vocab_size=vocab_size,
        pad_token_id=ids[PAD_TOKEN],
        bos_token_id=ids[BOS_TOKEN],
        eos_token_id=ids[EOS_TOKEN],
        transformers_version=_transformers_version(),
    )
    # No mask_token_id unless asked for: the real config has none; loaders find <|mask|> in
    # the tokenizer, and the toy must make them do so.
    config.update(copy.deepcopy(overrides or {}))
    if int(config["vocab_size"]) < vocab_size:
        raise ValueError(f"vocab_size {config['vocab_size']} < tokenizer's {vocab_size}")
    return config


def generation_config(config: dict[str, Any], editing: bool = False) -> dict[str, Any]:
    """Like the real one: generation stops at <|endoftext|> or at <|role_end|>.

    temperature 0: SGLang (`--sampling-defaults model`, its default) takes it as the default of
    requests that set none, so decoding is greedy unless a request asks for sampling, as in the
    LLaDA2 reference generation code.
    """
    ids = special_token_ids()
    out = {
        "temperature": 0.0,
        # A bare architecture config (no token ids): those of the toy tokenizer written beside it.
        "bos_token_id": config.get("bos_token_id", ids[BOS_TOKEN]),
        "eos_token_id": [ids[EOS_TOKEN], ids[ROLE_END_TOKEN]],
        "pad_token_id": config.get("pad_token_id", ids[PAD_TOKEN]),
        "transformers_version": config.get("transformers_version", _transformers_version()),
    }
    if editing:
        out.update(EDITING_GENERATION_CONFIG)
    return out


def write_tiny_checkpoint(
    out_dir: str | Path,
    *,
    seed: int = 0,
    num_shards: int = 1,
    fused_experts: bool = False,
    overrides: dict[str, Any] | None = None,
    generation: str = "2.0",
) -> Path:
    """Write config.json, generation_config.json, the tokenizer and random weights to out_dir.

    generation: "2.0", "2.1" or "2.2" (see GENERATIONS); the weights do not depend on it (2.2's
    block routing changes which experts a token may use, not the tensors)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = build_config(write_tokenizer(out), overrides, generation)
    weights = generate_weights(config, seed=seed, fused_experts=fused_experts)
    return write_checkpoint(out, config, weights, num_shards=num_shards, editing=generation == "2.1")


def write_checkpoint(
    out_dir: str | Path,
    config: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    *,
    num_shards: int = 1,
    editing: bool = False,
) -> Path:
    """Write config.json, generation_config.json, the toy tokenizer and `tensors` to out_dir:
    model.safetensors, or with num_shards > 1 that many shards plus model.safetensors.index.json.
    Tensors are written as given (per-expert or fused experts, any dtype).

    The tokenizer carries LLaDA2.2's control tokens when config.json names them; editing: the
    generation config carries LLaDA2.1's editing knobs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_tokenizer(out, control_tokens=config.get("delete_token_id") is not None)
    _write_json(out / "config.json", config)
    _write_json(out / "generation_config.json", generation_config(config, editing))
    # Do not leave a stale layout behind when rewriting a directory with another num_shards.
    for stale in [out / SINGLE_FILE, out / INDEX_FILE, *out.glob("model-*-of-*.safetensors")]:
        stale.unlink(missing_ok=True)
    _write_weights(out, {n: t.contiguous() for n, t in tensors.items()}, num_shards)
    return out
