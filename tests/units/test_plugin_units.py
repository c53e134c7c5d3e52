"""Fast checks of the plugin's registration, the CPU platform and checkpoint token ids."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sglang_llada.startup.checkpoint_tokens import (
    CheckpointTokenError,
    resolve_diffusion_tokens,
)


def test_mask_and_eos_ids_come_from_the_checkpoint(tiny_checkpoint: Path) -> None:
    resolve_diffusion_tokens.cache_clear()
    tokens = resolve_diffusion_tokens(str(tiny_checkpoint))
    assert tokens.mask_id == 260  # the toy tokenizer's <|mask|>, not LLaDA2's 156895
    assert 257 in tokens.eos_ids and 265 in tokens.eos_ids


def test_config_mask_token_id_wins_over_tokenizer(tmp_path: Path) -> None:
    from sglang_llada.toy.checkpoint import write_tiny_checkpoint

    ckpt = write_tiny_checkpoint(tmp_path / "m", seed=1, overrides={"mask_token_id": 259})
    resolve_diffusion_tokens.cache_clear()
    assert resolve_diffusion_tokens(str(ckpt)).mask_id == 259


def test_missing_mask_token_is_an_actionable_error(tmp_path: Path) -> None:
    from sglang_llada.toy.checkpoint import write_tiny_checkpoint

    ckpt = write_tiny_checkpoint(tmp_path / "m", seed=1)
    tok_cfg = json.loads((ckpt / "tokenizer_config.json").read_text())
    del tok_cfg["mask_token"]
    (ckpt / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    resolve_diffusion_tokens.cache_clear()
    with pytest.raises(CheckpointTokenError, match="mask_token_id"):
        resolve_diffusion_tokens(str(ckpt))


def test_register_is_idempotent_and_registers_config() -> None:
    from transformers import AutoConfig

    from sglang_llada import plugin
    from sglang_llada.configs.llada2 import LLaDA2MoeConfig

    plugin.register()
    plugin.register()
    assert AutoConfig.for_model("llada2_moe").__class__ is LLaDA2MoeConfig


def test_llada2_detection_leaves_other_models_alone(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from sglang_llada import plugin
    from sglang_llada.startup.server_args import is_llada2

    plugin.register()
    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
                    "num_attention_heads": 4, "num_hidden_layers": 1, "intermediate_size": 128,
                    "vocab_size": 320})
    )
    assert is_llada2(str(tiny_checkpoint), None, False)
    assert not is_llada2(str(other), None, False)


def test_cpu_platform_activates_only_without_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    from sglang_llada import platform

    assert platform.activate() == platform.PLATFORM_CLASS  # no GPU on this machine
    monkeypatch.setenv("SGLANG_USE_CPU_ENGINE", "1")
    assert platform.activate() is None  # the user asked for SGLang's own CPU engine
    monkeypatch.delenv("SGLANG_USE_CPU_ENGINE")
    monkeypatch.setattr(platform, "_has_accelerator", lambda: True)
    assert platform.activate() is None  # GPU hosts are untouched


def test_core_split_is_disjoint() -> None:
    from sglang_llada.platform import _split_cores

    groups = [set(g.split(",")) for g in _split_cores(2).split("|")]
    assert len(groups) == 2 and not (groups[0] & groups[1])


def test_request_policy_refusals_and_default_temperature() -> None:
    from types import SimpleNamespace

    from sglang_llada.tokenizer.request_checks import (
        diffusion_request_error,
        validate_one_request_after,
    )

    def req(sampling: dict, **kw) -> SimpleNamespace:
        base = dict(return_logprob=False, logprob_start_len=-1, top_logprobs_num=0, token_ids_logprob=None)
        return SimpleNamespace(sampling_params=sampling, **{**base, **kw})

    assert diffusion_request_error(req({"max_new_tokens": 8})) is None
    assert diffusion_request_error(req({}, return_logprob=True)) is None  # output logprobs are fine
    assert diffusion_request_error(req({"regex": "a+"})) is None  # honoured (constraint_onto_request)
    assert "`ebnf` is not supported" in diffusion_request_error(req({"ebnf": 'root ::= "a"'}))
    assert "prompt logprobs" in diffusion_request_error(req({}, return_logprob=True, logprob_start_len=0))
    assert "top_logprobs_num" in diffusion_request_error(req({}, return_logprob=True, top_logprobs_num=3))
    # logprob fields without return_logprob are ignored, as SGLang does
    assert diffusion_request_error(req({}, logprob_start_len=0, top_logprobs_num=3)) is None

    manager = SimpleNamespace(
        server_args=SimpleNamespace(dllm_algorithm="llada2_threshold"),
        model_config=SimpleNamespace(get_default_sampling_params=lambda: {}),
    )
    r = req({"max_new_tokens": 8})
    validate_one_request_after(None, manager, r, [1, 2])
    assert r.sampling_params["temperature"] == 0.0  # greedy unless asked
    r = req({"temperature": 0.7})
    validate_one_request_after(None, manager, r, [1, 2])
    assert r.sampling_params["temperature"] == 0.7
    # regex / json_schema become one regex in custom_params; SGLang's grammar fields are cleared
    r = req({"json_schema": '{"type": "integer"}'})
    validate_one_request_after(None, manager, r, [1])
    assert r.sampling_params["json_schema"] is None and r.sampling_params["regex"] is None
    assert re.fullmatch(r.sampling_params["custom_params"]["dllm_constraint"]["regex"], "-12")
    with pytest.raises(ValueError, match="json_schema is not valid JSON"):
        validate_one_request_after(None, manager, req({"json_schema": "{"}), [1])
    # The structural_tag SGLang writes for tool_choice "required" (FunctionCallParser with the qwen25
    # parser): one or more calls, arguments by the tool's schema when strict, any object otherwise.
    from sglang.srt.entrypoints.openai.protocol import Tool
    from sglang.srt.function_call.function_call_parser import FunctionCallParser

    params = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    for strict, args in ((True, '{"a": 3}'), (False, '{"x": [1, "y"]}')):
        tool = Tool(type="function", function={"name": "add", "parameters": params, "strict": strict})
        kind, tag = FunctionCallParser([tool], "qwen25").get_structure_constraint("required")
        assert kind == "structural_tag"
        r = req({"structural_tag": tag.model_dump_json(by_alias=True)})
        validate_one_request_after(None, manager, r, [1])
        assert r.sampling_params["structural_tag"] is None
        regex = r.sampling_params["custom_params"]["dllm_constraint"]["regex"]
        call = '<tool_call>\n{"name":"add", "arguments": ' + args + "}\n</tool_call>"
        assert re.fullmatch(regex, call) and re.fullmatch(regex, call + "\n" + call)
        assert not re.fullmatch(regex, "") and not re.fullmatch(regex, "text " + call)
        assert strict is not bool(re.fullmatch(regex, call.replace('"a": 3', '"a": "3"')))
    untriggered = '{"structures": [{"begin": "<t>", "schema": {}, "end": "</t>"}], "triggers": ["<t>"]}'
    with pytest.raises(ValueError, match="tool_choice"):
        validate_one_request_after(None, manager, req({"structural_tag": untriggered}), [1])
    # an algorithm that edits committed tokens cannot keep a constraint: a 400 that names the fix
    edit = SimpleNamespace(server_args=SimpleNamespace(dllm_algorithm="llada2_edit"), model_config=manager.model_config)
    with pytest.raises(ValueError, match="--dllm-algorithm llada2_threshold"):
        validate_one_request_after(None, edit, req({"regex": "a+"}), [1])
    # An autoregressive server is left alone.
    ar = SimpleNamespace(server_args=SimpleNamespace(dllm_algorithm=None), model_config=manager.model_config)
    r = req({"regex": "a+"})
    validate_one_request_after(None, ar, r, [1])
    assert "temperature" not in r.sampling_params


def test_algorithm_lookup_hook_finds_ours_and_lists_names_on_error() -> None:
    from sglang_llada.algorithms.unmask import StaticAlgorithm
    from sglang_llada.startup.registries import get_algorithm_cls_around as _get_algorithm_cls_around

    def original(name: str):
        raise RuntimeError(f"Unknown diffusion LLM algorithm: {name}")

    assert _get_algorithm_cls_around(original, "llada2_static") is StaticAlgorithm
    with pytest.raises(RuntimeError, match="available: llada2_threshold, llada2_static.*LowConfidence"):
        _get_algorithm_cls_around(original, "nope")


def test_whole_prompt_prefill_only_for_our_algorithms_and_full_blocks() -> None:
    from types import SimpleNamespace

    from sglang.srt.dllm.config import DllmConfig

    from sglang_llada.algorithms import register
    from sglang_llada.scheduler import prefill

    register()

    def config(name: str, separate: bool = False) -> DllmConfig:
        return DllmConfig(algorithm=name, algorithm_config={}, block_size=32, mask_id=260,
                          max_running_requests=4, requires_separate_context_encoding=separate)

    assert prefill.enabled(config("llada2_threshold")) and prefill.enabled(config("llada2_edit"))
    assert not prefill.enabled(config("LowConfidence"))  # SGLang's own: one block per request
    assert not prefill.enabled(config("llada2_threshold", separate=True))
    assert not prefill.enabled(None)
    req = SimpleNamespace(origin_input_ids=[0] * 1000, output_ids=[1] * 30)
    assert prefill.full_blocks_end(req, 32) == 1024  # 1030 committed tokens -> 32 full blocks


def test_streaming_skips_requests_with_nothing_new() -> None:
    from types import SimpleNamespace

    from sglang_llada.output.streaming import nothing_new

    def req(dllm: bool, finished: bool, out: int, sent: int) -> SimpleNamespace:
        return SimpleNamespace(is_dllm=lambda: dllm, finished=lambda: finished, output_ids=[0] * out, send_token_offset=sent)

    assert nothing_new(req(True, False, 32, 32))  # mid-block: nothing to send
    assert not nothing_new(req(True, False, 64, 32))  # a block committed since the last chunk
    assert not nothing_new(req(True, True, 32, 32))  # finished (or aborted): always sent
    assert not nothing_new(req(False, False, 5, 5))  # autoregressive requests are left alone


def test_admission_reserves_whole_blocks_to_the_request_end() -> None:
    from types import SimpleNamespace

    from sglang_llada.scheduler.admission import future_tokens

    def req(prompt: int, max_new: int, prefix: int, out: int = 0) -> SimpleNamespace:
        return SimpleNamespace(origin_input_ids=[0] * prompt, output_ids=[0] * out, prefix_len=prefix,
                               sampling_params=SimpleNamespace(max_new_tokens=max_new))

    # A 497-token prompt with 96 new tokens ends inside block 19 (608 = 19 * 32): from nothing
    # cached that is 608 tokens; after its 480-token prompt prefill, 128.
    assert future_tokens(req(497, 96, 0), 32, 4096) == 608
    assert future_tokens(req(497, 96, 480), 32, 4096) == 128
    # Mid-decode: the KV held (prefix) counts, committed output is already inside it.
    assert future_tokens(req(497, 96, 544, out=47), 32, 4096) == 64
    # Finished or over-long: never negative; max_new_tokens is clipped as SGLang clips it.
    assert future_tokens(req(100, 10, 128, out=10), 32, 4096) == 0
    assert future_tokens(req(10, 10_000, 0), 32, 64) == 96


def test_native_moe_forward_applies_routed_scaling_factor() -> None:
    """SGLang's CPU MoE path (`moe_forward_native`) returns the plain weighted expert sum; our
    AROUND hook multiplies it by `routed_scaling_factor` as the GPU runner does (the Bailing AR
    twin, factor 2.5, was served with its routed experts at 1 / 2.5 without it)."""
    import inspect
    from types import SimpleNamespace

    import torch
    import torch.nn.functional as F
    from sglang.srt.layers.moe import fused_moe_native
    from sglang.srt.layers.moe.moe_runner.base import MoeRunnerConfig
    from sglang.srt.layers.moe.topk import StandardTopKOutput

    from sglang_llada.models.moe_native_scaling import scale_routed_output

    g = torch.Generator().manual_seed(0)
    E, H, inter, N, K = 4, 8, 6, 5, 2
    layer = SimpleNamespace(
        num_experts=E,
        w13_weight=torch.randn(E, 2 * inter, H, generator=g),
        w2_weight=torch.randn(E, H, inter, generator=g),
        should_fuse_routed_scaling_factor_in_topk=False,
    )
    x = torch.randn(N, H, generator=g)
    ids = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(N)]).to(torch.int32)
    w = torch.rand(N, K, generator=g)
    topk = StandardTopKOutput(topk_weights=w, topk_ids=ids, router_logits=torch.zeros(N, E))
    # [N, H]: sum_k w[n, k] * expert_{ids[n, k]}(x[n]), SwiGLU experts
    want = torch.zeros(N, H)
    for n in range(N):
        for k in range(K):
            e = int(ids[n, k])
            gate, up = (layer.w13_weight[e] @ x[n]).split(inter)
            want[n] += w[n, k] * (layer.w2_weight[e] @ (F.silu(gate) * up))

    # SGLang's own function: once the plugin's hooks are applied in this process (an earlier
    # in-process server test), the module attribute is our wrapper around it.
    moe_forward_native = inspect.unwrap(fused_moe_native.moe_forward_native)
    scaled = MoeRunnerConfig(activation="silu", routed_scaling_factor=2.5)
    plain = MoeRunnerConfig(activation="silu", routed_scaling_factor=None)
    torch.testing.assert_close(moe_forward_native(layer, x, topk, scaled), want)  # the factor dropped
    torch.testing.assert_close(scale_routed_output(moe_forward_native, layer, x, topk, scaled), 2.5 * want)
    torch.testing.assert_close(scale_routed_output(moe_forward_native, layer, x, topk, plain), want)
    if fused_moe_native.moe_forward_native is not moe_forward_native:  # the hook is applied
        torch.testing.assert_close(fused_moe_native.moe_forward_native(layer, x, topk, scaled), 2.5 * want)
    layer.should_fuse_routed_scaling_factor_in_topk = True  # the top-k weights already carry it
    torch.testing.assert_close(scale_routed_output(moe_forward_native, layer, x, topk, scaled), want)
