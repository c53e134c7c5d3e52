"""CUDA-graph safety of the denoising forward, checked on CPU.

On CUDA, SGLang captures denoising (`DLLM_EXTEND`) forwards in its decode CUDA graph
(`DecodeCudaGraphRunner`: capture mode `DLLM_EXTEND` for a dLLM server) and replays them. A replay
re-runs the captured kernels only: a host sync inside breaks capture, a tensor made from host
data (or a size read from the data) keeps its capture-time value forever. So the code of ours that
runs inside that graph -- `LLaDA2MoeModelLM.forward` in `DLLM_EXTEND` mode: embeddings, norms, our
router and LLaDA2.2 block routing (the flat block layout), the shared experts, the LM head --
must do none of that. `kernels/testing.py` `graph_hazards` records it while the forward runs here.

Stubbed, because they are SGLang's graph-safe GPU code whose CPU stand-ins are not: the attention
backend behind `RadixAttention` (FlashInfer on CUDA; torch-native here reads lengths on the host)
and `FusedMoE`'s experts (the fused Triton runner on CUDA; a per-expert loop here). Both stubs
return a tensor of the right shape without reading data.

Prompt (`EXTEND`) forwards read per-request lengths on the host by design (whole-prompt block-causal
attention); the plugin turns prefill graph capture off for LLaDA2 servers
(tests/units/test_gpu_server_args.py), and this test shows the contrast: the same recorder finds
those host reads in an `EXTEND` forward.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from sglang_llada.kernels.testing import graph_hazards
from sglang_llada.testing.sglang_inprocess import get_runner

BLOCK = 32


pytestmark = pytest.mark.usefixtures("few_threads")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sglang_llada.toy.checkpoint import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("graph_safety")
    return {g: write_tiny_checkpoint(root / g, seed=0, generation=g) for g in ("2.0", "2.2")}


@contextlib.contextmanager
def _recording(model: torch.nn.Module, hazards: list[list[str]]) -> Iterator[None]:
    """Each `model.forward` call runs under `graph_hazards`, with attention and experts stubbed."""
    from sglang.srt.layers.moe.fused_moe_triton.layer import FusedMoE
    from sglang.srt.layers.radix_attention import RadixAttention

    inner = model.forward

    def recorded(input_ids: torch.Tensor, positions: torch.Tensor, forward_batch: Any, *args: Any, **kwargs: Any) -> Any:
        # A replay has no host-side copy of this batch's lengths: hide SGLang's (`*_cpu` fields), so
        # that code reading them falls back to reading the device tensors, which is recorded.
        host = {k: v for k, v in vars(forward_batch).items() if k.endswith("_cpu") and v is not None}
        for name in host:
            setattr(forward_batch, name, None)
        out: list[Any] = []
        try:
            hazards.append(graph_hazards(lambda: out.append(inner(input_ids, positions, forward_batch, *args, **kwargs))))
        finally:
            for name, value in host.items():
                setattr(forward_batch, name, value)
        return out[0]

    def attention_stub(self: Any, q: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.zeros_like(q)  # [T, nH * D]

    def experts_stub(self: Any, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.zeros_like(hidden_states)  # [T, H]

    model.forward = recorded  # type: ignore[method-assign]
    saved = RadixAttention.forward, FusedMoE.forward
    RadixAttention.forward, FusedMoE.forward = attention_stub, experts_stub  # type: ignore[method-assign]
    try:
        yield
    finally:
        RadixAttention.forward, FusedMoE.forward = saved  # type: ignore[method-assign]
        del model.forward


@pytest.mark.parametrize("generation", ["2.0", "2.2"])
def test_denoising_forward_is_graph_safe(generation: str, checkpoints: dict[str, Path]) -> None:
    from sglang_llada.models.llada2 import LLaDA2Attention, LLaDA2MoeModelLM
    from sglang_llada.testing.gpu_path import build_model, serving

    runner = get_runner(checkpoints["2.0"])
    model = build_model(LLaDA2MoeModelLM, checkpoints[generation], torch.float32)
    for module in model.modules():
        if isinstance(module, LLaDA2Attention):
            module.own_block_attention = False  # the CUDA branch: RadixAttention
    prompt = torch.arange(3 * BLOCK) % 50 + 10
    hazards: list[list[str]] = []
    with serving(runner, model), _recording(model, hazards):
        runner.forward_by_blocks(prompt, BLOCK, dllm_extend=True)
    assert len(hazards) == 3  # one denoising forward per block, the later ones over a cached prefix
    assert hazards == [[], [], []], hazards


def test_prompt_forward_reads_host_lengths() -> None:
    """The contrast: the routing blocks of a whole-prompt EXTEND forward (many blocks per request,
    cut at each request's block boundaries) come from per-request lengths read on the host -- the
    recorder sees it, which is why prefill capture is off for LLaDA2 servers."""
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    from sglang_llada.models.llada2 import routing_blocks

    class _Batch:  # the fields routing_blocks reads, device-only as in a captured replay
        forward_mode = ForwardMode.EXTEND
        extend_prefix_lens_cpu = None
        extend_seq_lens_cpu = None
        extend_prefix_lens = torch.tensor([0, 32])
        extend_seq_lens = torch.tensor([64, 40])

    prompt_hazards = graph_hazards(lambda: routing_blocks(_Batch(), 104, BLOCK, torch.device("cpu")))  # type: ignore[arg-type]
    assert {"tolist", "aten.lift_fresh"} <= set(prompt_hazards)  # lengths read, the layout built on the host
    _Batch.forward_mode = ForwardMode.DLLM_EXTEND  # one block per request: the flat layout
    assert graph_hazards(lambda: routing_blocks(_Batch(), 64, BLOCK, torch.device("cpu"))) == []  # type: ignore[arg-type]
