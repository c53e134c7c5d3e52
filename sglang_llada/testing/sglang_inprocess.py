"""Drive SGLang's own ModelRunner in the test process: no server, no scheduler, no HTTP.

What runs is what a scheduler rank runs: `ServerArgs` resolution (with our plugin's hooks and
CPU platform), `ModelConfig`, SGLang's model loader (`ModelRunner` -> `DefaultModelLoader` ->
`LLaDA2MoeModelLM.load_weights`), the KV pools, the torch-native attention backend, and
`ModelRunner.forward` on a `ForwardBatch` built by `ScheduleBatch.prepare_for_extend` /
`ForwardBatch.init_new`. It follows `sglang/benchmark/one_batch.py` (`load_model`, `extend`),
without importing it: that module pulls in the whole engine entrypoint, which costs seconds.

A sequence is fed one block per forward, the earlier blocks being the request's cached prefix
(`Req.prefix_len`, KV slots already in its `req_to_token` row), i.e. chunked prefill with chunk =
block. With LLaDA2's ENCODER_ONLY attention that is exactly block-causal attention.

SGLang builds its process groups once per process (`bootstrap.init_parallel_runtime` refuses a
second call), so there is one `InProcessRunner` per process: `get_runner()` caches it. Other
checkpoints with the same config are loaded into it with `reload_weights` (SGLang's
`update_weights_from_disk`, i.e. the same loader and `load_weights` again).
"""

from __future__ import annotations

import os
from array import array
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

_RUNNER: "InProcessRunner | None" = None


class _NoPrefixCache(SimpleNamespace):
    """The tree-cache stand-in of one_batch.py: allocation only, no radix prefix matching."""

    def supports_swa(self) -> bool:
        return False

    def supports_mamba(self) -> bool:
        return False

    def supports_prefix_sharing(self) -> bool:
        return True

    def evict(self, params: Any) -> None:
        pass

    def maybe_hand_to_session(self, req: Any) -> None:
        pass


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max|got - want| / max|want| (float64)."""
    got, want = got.double(), want.double()
    return float((got - want).abs().max() / want.abs().max())


class InProcessRunner:
    """One SGLang ModelRunner (tp 1) on a local checkpoint, fp32, CPU, torch-native attention."""

    def __init__(self, model_path: str | os.PathLike[str], **server_args: Any) -> None:
        from sglang.srt.plugins import load_plugins

        # Our entry points: llada2_moe HF config, LLaDA2MoeModelLM in the registry, hooks.
        load_plugins()

        from sglang.srt.arg_groups.overrides import resolving_view
        from sglang.srt.configs.model_config import ModelConfig
        from sglang.srt.distributed import bootstrap
        from sglang.srt.layers.moe import initialize_moe_config
        from sglang.srt.layers.quantization.fp8_utils import initialize_fp8_gemm_config
        from sglang.srt.layers.quantization.unquant import initialize_bf16_gemm_config
        from sglang.srt.model_executor.model_runner import ModelRunner
        from sglang.srt.runtime_context import (
            SpawnRanks,
            get_device,
            get_model,
            publish,
            spawn_world_rank,
        )
        from sglang.srt.server_args import PortArgs, ServerArgs

        kwargs: dict[str, Any] = dict(
            model_path=str(model_path),
            device="cpu",
            # `auto` would serve an fp32 checkpoint in fp16.
            dtype="float32",
            attention_backend="torch_native",
            max_total_tokens=4096,
        )
        kwargs.update(server_args)
        self.server_args = ServerArgs(**kwargs)
        # Runs our platform's apply_server_args_defaults (graph capture off) and plugin hooks.
        self.server_args.resolve_once()
        self.cfg = resolving_view(self.server_args)
        if self.cfg.tp_size != 1:
            raise ValueError("InProcessRunner runs one rank (tp 1) only")
        port_args = PortArgs.init_new(self.server_args)
        publish(
            self.server_args,
            role="scheduler",
            ranks=SpawnRanks(
                world_rank=spawn_world_rank(self.server_args, tp_rank=0, pp_rank=0), gpu_id=0
            ),
        )
        initialize_moe_config()
        initialize_fp8_gemm_config()
        initialize_bf16_gemm_config()

        self.model_config = ModelConfig.from_server_args(self.server_args)
        bootstrap.init_parallel_runtime(
            server_args=self.server_args, device=get_device().device, dist_port=port_args.nccl_port
        )
        bootstrap.init_layer_runtime(model_config=self.model_config)
        mr = ModelRunner(
            model_config=self.model_config,
            mem_fraction_static=self.cfg.mem_fraction_static,
            gpu_id=0,
            nccl_port=port_args.nccl_port,
            server_args=self.server_args,
        )
        if get_model().is_startup_weight_load_overlap:
            mr.start_startup_weight_load()
        mr.alloc_memory_pool()
        mr.init_attention_backends()
        mr.init_cuda_graphs()  # a no-op here: the CPU platform disables capture
        if get_model().is_startup_weight_load_overlap:
            mr.finalize_startup_weight_load()
        self.model_runner = mr
        self.model_path = str(model_path)

    @property
    def model(self) -> Any:  # our LLaDA2MoeModelLM (or the in-tree class), as SGLang built it
        return self.model_runner.model

    # ----------------------------------------------------------------------------------------

    def reload_weights(self, model_path: str | os.PathLike[str]) -> None:
        """Load another checkpoint (same config.json) with SGLang's loader into the live model.

        Every parameter is first overwritten with NaN, so a tensor the loader skips shows up as
        NaN logits instead of silently keeping the previous checkpoint's value.
        """
        with torch.no_grad():
            for p in self.model.parameters():
                if p.is_floating_point():
                    p.fill_(float("nan"))
        ok, message = self.model_runner.weight_updater.update_weights_from_disk(
            str(model_path), self.cfg.load_format
        )
        if not ok:
            raise RuntimeError(f"update_weights_from_disk({model_path}) failed: {message}")
        self.model_path = str(model_path)

    def clear_kv(self) -> None:
        """Free every request slot and KV slot (what one_batch's runner.clear() does)."""
        self.model_runner.req_to_token_pool.clear()
        self.model_runner.token_to_kv_pool_allocator.clear()

    @torch.no_grad()
    def forward_by_blocks(
        self,
        ids: torch.Tensor | list[int],
        block_size: int = 32,
        *,
        dllm_extend: bool = False,
        return_kv: bool = False,
        fold: dict[int, list[int]] | None = None,
    ) -> dict[str, Any]:
        """Feed ``ids`` one block per ModelRunner.forward, earlier blocks as KV-cached prefix.

        Returns ``logits`` [T, V] float32 for every position and, per forward, what SGLang's
        LogitsProcessor itself returned: ``sglang_logits`` (a list of [n, V] tensors).

        ``dllm_extend=False``: plain EXTEND forwards. The LogitsProcessor prunes to the last
        token (``next_token_logits`` [1, V]); the full final hidden states come back through
        ``CaptureHiddenMode.FULL`` and are multiplied by the loaded lm_head weight here.
        ``dllm_extend=True``: the same ForwardBatch relabelled ``ForwardMode.DLLM_EXTEND`` (the
        diffusion serving mode; positions are the same since each block starts at its offset),
        so the LogitsProcessor returns ``full_logits`` for every position of the forward.

        ``block_size`` is the number of tokens per forward. LLaDA2's attention is block-causal at
        the checkpoint's block (32) in EXTEND forwards whatever their length (the whole-prompt
        prefill path), and bidirectional over the forward's tokens in DLLM_EXTEND forwards.
        ``return_kv=True`` also returns ``kv``: [2, layers, T, nKV, D], the K and V the forwards
        wrote to SGLang's KV pool for the sequence, read back from the pool by slot.
        ``fold={start: tokens}`` (with ``dllm_extend``): the forward of the block at ``start`` is the
        folded one (`LLaDA2MoeModelLM.forward_folded`, fold_store) that also re-encodes the previous
        block as ``tokens`` [block_size] and stores their KV over what its own forward stored.
        """
        from sglang.srt.managers.schedule_batch import Req, ScheduleBatch
        from sglang.srt.model_executor.forward_batch_info import (
            CaptureHiddenMode,
            ForwardBatch,
            ForwardMode,
        )
        from sglang.srt.runtime_context import get_schedule
        from sglang.srt.sampling.sampling_params import SamplingParams
        from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

        mr = self.model_runner
        ids_list = [int(i) for i in torch.as_tensor(ids).reshape(-1).tolist()]
        T = len(ids_list)
        tree_cache = _NoPrefixCache(
            page_size=get_schedule().page_size,
            device=mr.device,
            token_to_kv_pool_allocator=mr.token_to_kv_pool_allocator,
        )
        req = Req(
            rid="parity",
            origin_input_text="",
            origin_input_ids=array("q", ids_list),
            sampling_params=SamplingParams(temperature=0, max_new_tokens=1),
        )
        req.full_untruncated_fill_ids = req.origin_input_ids
        req.logprob_start_len = -1

        logits: list[torch.Tensor] = []
        sglang_logits: list[torch.Tensor] = []
        forwards: list[dict[str, Any]] = []
        lm_head = self.model.lm_head.weight
        try:
            for start in range(0, T, block_size):
                end = min(start + block_size, T)
                # Tokens [0, start) are in the request's req_to_token row from the previous
                # forwards (the first forward allocates the row, later ones reuse it).
                req.prefix_len = start
                req.extend_end = end
                batch = ScheduleBatch.init_new(
                    reqs=[req],
                    req_to_token_pool=mr.req_to_token_pool,
                    token_to_kv_pool_allocator=mr.token_to_kv_pool_allocator,
                    tree_cache=tree_cache,
                    model_config=mr.model_config,
                    enable_overlap=False,
                    spec_algorithm=SpeculativeAlgorithm.NONE,
                )
                batch.prepare_for_extend()
                if batch.input_ids is None and getattr(batch, "prefill_input_ids_cpu", None) is not None:
                    batch.input_ids = batch.prefill_input_ids_cpu.to(batch.device)
                    batch.prefill_input_ids_cpu = None
                fb = ForwardBatch.init_new(
                    batch,
                    mr,
                    capture_hidden_mode=CaptureHiddenMode.FULL,
                    return_hidden_states_before_norm=False,
                )
                assert fb.forward_mode == ForwardMode.EXTEND, fb.forward_mode
                forwards.append(
                    dict(
                        prefix_len=int(fb.extend_prefix_lens[0]),
                        extend_len=int(fb.extend_seq_lens[0]),
                        seq_len=int(fb.seq_lens[0]),
                        positions=(int(fb.positions[0]), int(fb.positions[-1])),
                    )
                )
                if dllm_extend:
                    fb.forward_mode = ForwardMode.DLLM_EXTEND
                if fold and start in fold:
                    from sglang_llada.algorithms.base import in_forward_context
                    from sglang_llada.models.folded_blocks import folded_blocks

                    layout = folded_blocks(mr.req_to_token_pool.req_to_token, fb.req_pool_indices, [start], [0],
                                           [fold[start]], block_size)
                    out = in_forward_context(mr, fb, lambda m: m.forward_folded(fb, layout))
                else:
                    out = mr.forward(fb).logits_output
                if dllm_extend:
                    full = out.full_logits
                    assert full is not None and full.shape[0] == end - start, (
                        None if full is None else full.shape
                    )
                    logits.append(full.float())
                    sglang_logits.append(full.float())
                else:
                    hidden = out.hidden_states
                    assert hidden is not None and hidden.shape[0] == end - start, (
                        None if hidden is None else hidden.shape
                    )
                    logits.append(hidden.float() @ lm_head.float().T)
                    sglang_logits.append(out.next_token_logits.float())
            kv = None
            if return_kv:
                pool = mr.token_to_kv_pool
                slots = mr.req_to_token_pool.req_to_token[req.kv.req_pool_idx, :T].long()
                layers = range(self.model.config.num_hidden_layers)
                kv = torch.stack([
                    torch.stack([pool.get_key_buffer(i)[slots].clone() for i in layers]),
                    torch.stack([pool.get_value_buffer(i)[slots].clone() for i in layers]),
                ])
        finally:
            self.clear_kv()
        return dict(logits=torch.cat(logits), sglang_logits=sglang_logits, forwards=forwards, kv=kv)


def get_runner(model_path: str | os.PathLike[str], **server_args: Any) -> InProcessRunner:
    """The process's InProcessRunner; built on first call, later calls reload the weights."""
    global _RUNNER
    if _RUNNER is None:
        threads = torch.get_num_threads()
        try:
            _RUNNER = InProcessRunner(model_path, **server_args)
        finally:
            torch.set_num_threads(threads)  # SGLang may re-bind threads; keep the caller's
    elif server_args:
        raise RuntimeError("the in-process runner already exists; server args cannot change")
    if Path(_RUNNER.model_path) != Path(model_path):
        _RUNNER.reload_weights(model_path)
    return _RUNNER
