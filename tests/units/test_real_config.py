"""Our SGLang model class against the real LLaDA2.0-mini config (no weights, no GPU).

* The published config.json (copied verbatim to tests/units/data/llada2-mini-config.json) builds
  `sglang_llada.models.llada2.LLaDA2MoeModelLM` on the meta device, through our HF config class,
  with SGLang's real parallel layers at tp=1 (so nothing is allocated).
* Its parameter count equals the independent formula of sglang_llada/testing/reference_llada2.py
  (`count_parameters`) and the published "16B total / 1.4B active".
* Every tensor name of the HF checkpoint layout (per-expert and fused 3-D experts) maps onto a
  slice of one of our parameters by the documented rules, the slices tile every parameter
  exactly, and the shapes agree. The same rules are checked against our real loader on the
  toy architecture (real tensors, both layouts): every parameter element is written and holds
  the checkpoint value the rules say it should.

SGLang's parallel layers read the process-wide parallel context even at tp=1; the fixture
below sets it up exactly as SGLang's own layer unit tests do
(`sglang.test.layer_ut_utils.init_single_process_dist`): a world-size-1 gloo process group,
a published tp=ep=pp=1 topology, then `initialize_model_parallel`. It is torn down at the end.
"""

from __future__ import annotations

import copy
import json
import re
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from sglang_llada.testing import reference_llada2 as ref
from sglang_llada.toy.checkpoint import expected_weight_shapes, generate_weights
from sglang_llada.toy.config import TOY_ARCH

HERE = Path(__file__).resolve().parent
REAL_CONFIG = HERE / "data" / "llada2-mini-config.json"
# The original, where a checkout has ../shared beside it (CI does); only used to detect drift.
SHARED_CONFIG = Path(__file__).resolve().parents[3] / "shared/reference/llada2-mini/config.json"
TOY_VOCAB = 320

Index = tuple[Any, ...]


def real_config_dict() -> dict[str, Any]:
    return json.loads(REAL_CONFIG.read_text(encoding="utf-8"))


def toy_config_dict() -> dict[str, Any]:
    cfg = copy.deepcopy(TOY_ARCH)
    cfg["vocab_size"] = TOY_VOCAB
    return cfg


def build_model(config: dict[str, Any]) -> torch.nn.Module:
    """Our class, built from our HF config class, on the current default device."""
    from sglang_llada.configs.llada2 import LLaDA2MoeConfig
    from sglang_llada.models.llada2 import LLaDA2MoeModelLM

    return LLaDA2MoeModelLM(LLaDA2MoeConfig(**config))


# ---------------------------------------------------------------------------------------------
# HF checkpoint name -> (our parameter, index into it): the documented rules, written out here
# independently of LLaDA2MoeModelLM.load_weights.
# ---------------------------------------------------------------------------------------------

_PER_EXPERT = re.compile(r"(?P<p>.+\.mlp\.experts)\.(?P<e>\d+)\.(?P<proj>gate_proj|up_proj|down_proj)\.weight")
_FUSED_EXPERT = re.compile(r"(?P<p>.+\.mlp\.experts)\.(?P<proj>gate_proj|up_proj|down_proj)")
_GATE_UP = re.compile(r"(?P<p>.+\.mlp(?:\.shared_experts)?)\.(?P<proj>gate_proj|up_proj)\.weight")


def hf_target(name: str, shape: tuple[int, ...]) -> tuple[str, Index]:
    """Where HF tensor `name` of `shape` lives in our model at tp=1.

    * dense / shared MLP `gate_proj`, `up_proj` [I, H] -> rows [0, I) / [I, 2I) of `gate_up_proj`;
    * routed expert e `gate_proj`, `up_proj` [Im, H] -> `experts.w13_weight`[e, 0:Im] / [e, Im:2Im],
      `down_proj` [H, Im] -> `experts.w2_weight`[e] (FusedMoE: w13 [E, 2Im, H], w2 [E, H, Im]);
    * fused 3-D experts [E, ...] -> the same, for every e at once;
    * everything else: the same name, the whole parameter.
    """
    if m := _PER_EXPERT.fullmatch(name):
        e, proj = int(m["e"]), m["proj"]
        if proj == "down_proj":
            return f"{m['p']}.w2_weight", (e,)
        off = 0 if proj == "gate_proj" else shape[0]
        return f"{m['p']}.w13_weight", (e, slice(off, off + shape[0]))
    if m := _FUSED_EXPERT.fullmatch(name):
        if m["proj"] == "down_proj":
            return f"{m['p']}.w2_weight", (slice(None),)
        off = 0 if m["proj"] == "gate_proj" else shape[1]
        return f"{m['p']}.w13_weight", (slice(None), slice(off, off + shape[1]))
    if m := _GATE_UP.fullmatch(name):
        off = 0 if m["proj"] == "gate_proj" else shape[0]
        return f"{m['p']}.gate_up_proj.weight", (slice(off, off + shape[0]),)
    return name, ()


def _storage_intervals(param: torch.Tensor, index: Index) -> Iterator[tuple[int, int]]:
    """[start, end) element intervals of param[index] in param's storage.

    A fused expert slice (all experts, some rows) is not contiguous: split it per expert.
    """
    if len(index) > 1 and index[0] == slice(None):
        for e in range(param.shape[0]):
            yield from _storage_intervals(param, (e, *index[1:]))
        return
    view = param[index]
    assert view.is_contiguous(), index
    yield view.storage_offset(), view.storage_offset() + view.numel()


def check_name_mapping(model: torch.nn.Module, shapes: dict[str, tuple[int, ...]]) -> None:
    """Every HF name hits an existing parameter slice of its shape; the slices tile each
    parameter exactly (no gap, no overlap), so the mapping is a bijection onto our weights.

    Works on the meta device: a slice is identified by its element interval in the
    parameter's (contiguous) storage.
    """
    params = dict(model.named_parameters())
    intervals: dict[str, list[tuple[int, int, str]]] = {n: [] for n in params}
    for name, shape in shapes.items():
        target, index = hf_target(name, shape)
        assert target in params, f"{name} -> {target}: no such parameter"
        view = params[target][index]
        assert tuple(view.shape) == tuple(shape), f"{name} {shape} -> {target}{index} {tuple(view.shape)}"
        intervals[target].extend((start, end, name) for start, end in _storage_intervals(params[target], index))
    for target, spans in intervals.items():
        p = params[target]
        assert p.is_contiguous() and p.storage_offset() == 0, target
        assert spans, f"parameter {target} {tuple(p.shape)} gets no checkpoint tensor"
        spans.sort()
        pos = 0
        for start, end, name in spans:
            assert start == pos, f"{target}: {name} starts at {start}, expected {pos} (gap or overlap)"
            pos = end
        assert pos == p.numel(), f"{target}: checkpoint covers {pos} of {p.numel()} elements"


# ---------------------------------------------------------------------------------------------
# SGLang's parallel context (tp=1) and the models
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def sglang_tp1() -> Iterator[None]:
    """World-size-1 gloo group + published tp=ep=pp=1 topology + model-parallel groups."""
    from sglang.srt.distributed.parallel_state import (
        destroy_distributed_environment,
        destroy_model_parallel,
        init_distributed_environment,
        initialize_model_parallel,
        model_parallel_is_initialized,
    )
    from sglang.srt.plugins import load_plugins
    from sglang.srt.runtime_context import reset_context
    from sglang.test.test_utils import publish_build_topology

    load_plugins()  # registers LLaDA2MoeConfig with AutoConfig and our model-registry hooks
    if model_parallel_is_initialized():  # pragma: no cover - another module left its groups up
        from sglang.srt.runtime_context import get_parallel

        par = get_parallel()
        assert (par.tp_size, par.moe_ep_size, par.pp_size) == (1, 1, 1), "foreign tp>1 groups"
        yield  # theirs to tear down
        return
    owns_world = not torch.distributed.is_initialized()
    if owns_world:
        init_distributed_environment(
            world_size=1,
            rank=0,
            local_rank=0,
            backend="gloo",
            distributed_init_method=f"tcp://127.0.0.1:{_free_port()}",
        )
    # Publishes ServerArgs(model_path="dummy", ...) to the runtime context; keeps WORLD.
    publish_build_topology(tp_size=1, ep_size=1, pp_size=1, device="cpu")
    initialize_model_parallel(backend="gloo")
    try:
        yield
    finally:
        destroy_model_parallel()
        if owns_world:
            destroy_distributed_environment()
        reset_context()


@pytest.fixture(scope="module")
def real_model(sglang_tp1: None) -> torch.nn.Module:
    with torch.device("meta"):
        return build_model(real_config_dict())


@pytest.fixture(scope="module")
def real_counts() -> tuple[int, int]:
    return ref.count_parameters(real_config_dict())


def _moe_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [layer.mlp for layer in model.model.layers if hasattr(layer.mlp, "experts")]


# ---------------------------------------------------------------------------------------------
# Real config
# ---------------------------------------------------------------------------------------------


def test_config_copy_is_verbatim() -> None:
    if not SHARED_CONFIG.exists():
        pytest.skip(f"{SHARED_CONFIG} not present in this checkout")
    assert REAL_CONFIG.read_bytes() == SHARED_CONFIG.read_bytes()


def test_plugin_registers_config_class(sglang_tp1: None) -> None:
    from transformers import AutoConfig

    from sglang_llada.configs.llada2 import LLaDA2MoeConfig

    assert type(AutoConfig.for_model("llada2_moe")) is LLaDA2MoeConfig


def test_real_model_builds_on_meta(real_model: torch.nn.Module) -> None:
    from sglang.srt.layers.moe.fused_moe_triton.layer import FusedMoE

    cfg = real_config_dict()
    devices = {p.device.type for p in real_model.parameters()}
    devices |= {b.device.type for b in real_model.buffers()}
    assert devices == {"meta"}
    assert len(real_model.model.layers) == cfg["num_hidden_layers"] == 20
    moe = _moe_layers(real_model)
    assert len(moe) == cfg["num_hidden_layers"] - cfg["first_k_dense_replace"] == 19
    for mlp in moe:
        assert isinstance(mlp.experts, FusedMoE)
        E, H, Im = cfg["num_experts"], cfg["hidden_size"], cfg["moe_intermediate_size"]
        assert tuple(mlp.experts.w13_weight.shape) == (E, 2 * Im, H)
        assert tuple(mlp.experts.w2_weight.shape) == (E, H, Im)
    attn = real_model.model.layers[0].attention
    assert (attn.num_heads, attn.num_kv_heads, attn.head_dim) == (16, 4, 128)
    assert real_model.model.layers[0].attention.rotary_emb.rotary_dim == 64


def test_real_total_parameters(real_model: torch.nn.Module, real_counts: tuple[int, int]) -> None:
    cfg = real_config_dict()
    # Vocab padding (to a multiple of 64 per TP rank) would add rows the checkpoint lacks;
    # 157184 = 64 * 2456, so there is none here, and the count needs no correction.
    embed, head = real_model.model.word_embeddings, real_model.lm_head
    for layer in (embed, head):
        assert layer.org_vocab_size == layer.num_embeddings_padded == cfg["vocab_size"] == 157184
    assert head is not embed  # tie_word_embeddings: false -> lm_head counted on its own

    total = sum(p.numel() for p in real_model.parameters())
    assert total == real_counts[0], (total, real_counts[0])
    assert 15.5e9 <= total <= 16.8e9, total  # "16B total"


def test_real_active_parameters(real_model: torch.nn.Module, real_counts: tuple[int, int]) -> None:
    cfg = real_config_dict()
    E, K = cfg["num_experts"], cfg["num_experts_per_tok"]
    total = sum(p.numel() for p in real_model.parameters())
    unused = 0
    for mlp in _moe_layers(real_model):
        routed = mlp.experts.w13_weight.numel() + mlp.experts.w2_weight.numel()
        assert routed % E == 0
        unused += routed // E * (E - K)  # routed experts a token does not visit
    active = total - unused
    assert active == real_counts[1], (active, real_counts[1])
    assert 1.2e9 <= active <= 1.6e9, active  # "1.4B active"


@pytest.mark.parametrize("fused", [False, True], ids=["per_expert", "fused_experts"])
def test_real_checkpoint_names_map_onto_parameters(real_model: torch.nn.Module, fused: bool) -> None:
    shapes = expected_weight_shapes(real_config_dict(), fused_experts=fused)
    n_moe, E = 19, 256
    per_layer_experts = 3 if fused else 3 * E
    assert sum(".mlp.experts." in n for n in shapes) == n_moe * per_layer_experts
    check_name_mapping(real_model, shapes)


# ---------------------------------------------------------------------------------------------
# The same rules against our real loader, on the toy architecture (real tensors, CPU)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_checkpoints() -> dict[bool, dict[str, torch.Tensor]]:
    cfg = toy_config_dict()
    return {fused: generate_weights(cfg, seed=0, fused_experts=fused) for fused in (False, True)}


def _nan_toy_model() -> torch.nn.Module:
    with torch.device("cpu"):
        model = build_model(toy_config_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    return model


def test_toy_structure_matches_real(sglang_tp1: None, real_model: torch.nn.Module) -> None:
    """The toy exercises the same parameter set as the real model (names up to layer count)."""
    toy = _nan_toy_model()

    def kinds(model: torch.nn.Module) -> set[str]:
        # layer 0 is the dense one in both; the MoE layers 1.. are all alike
        return {re.sub(r"layers\.[1-9]\d*\.", "layers.N.", n) for n, _ in model.named_parameters()}

    assert kinds(toy) == kinds(real_model)


@pytest.mark.parametrize("fused", [False, True], ids=["per_expert", "fused_experts"])
def test_toy_load_weights_fills_every_parameter(
    sglang_tp1: None, toy_checkpoints: dict[bool, dict[str, torch.Tensor]], fused: bool
) -> None:
    weights = toy_checkpoints[fused]
    model = _nan_toy_model()
    check_name_mapping(model, {n: tuple(t.shape) for n, t in weights.items()})

    model.load_weights(iter(weights.items()))

    params = dict(model.named_parameters())
    for name, p in params.items():
        assert not torch.isnan(p).any(), f"{name} not (fully) written by load_weights"
    for name, tensor in weights.items():
        target, index = hf_target(name, tuple(tensor.shape))
        got = params[target][index]
        assert torch.equal(got, tensor.to(got.dtype)), f"{name} -> {target}{index} holds other values"


def test_toy_layouts_load_the_same_model(
    sglang_tp1: None, toy_checkpoints: dict[bool, dict[str, torch.Tensor]]
) -> None:
    models = {}
    for fused, weights in toy_checkpoints.items():
        models[fused] = _nan_toy_model()
        models[fused].load_weights(iter(weights.items()))
    a, b = (dict(models[f].named_parameters()) for f in (False, True))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize(
    "name",
    [
        "model.layers.0.mlp.bogus.weight",  # unknown module
        "model.layers.0.attention.query_key_value.bias",  # use_qkv_bias is false
        "model.layers.1.mlp.experts.0.bogus_proj.weight",  # unknown expert projection
        f"model.layers.1.mlp.experts.{TOY_ARCH['num_experts']}.gate_proj.weight",  # expert id past E
        "model.layers.0.mlp.experts.0.gate_proj.weight",  # experts in the dense layer
        "model.embed_tokens.weight",  # another architecture's naming
    ],
)
def test_toy_load_weights_rejects_unknown_names(sglang_tp1: None, name: str) -> None:
    model = _nan_toy_model()
    H = TOY_ARCH["hidden_size"]
    with pytest.raises(KeyError):
        model.load_weights([(name, torch.zeros(TOY_ARCH["moe_intermediate_size"], H))])
