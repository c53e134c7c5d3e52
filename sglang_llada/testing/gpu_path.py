"""Run LLaDA2 model classes through their GPU branches on a machine without a GPU.

Why: every user serves on GPUs, CI has none, and a GPU-only branch that never ran is where a fault
hides (a MoE block whose shared expert read hidden states that SGLang's fused MoE kernel had
already overwritten in place went unseen this way). This module runs a model class, ours or
SGLang's in-tree one, through the branches its forward takes on CUDA, on CPU tensors:

* SGLang's `FusedMoE` through its GPU runner: `UnquantizedFusedMoEMethod.forward_cuda` -> the Triton
  `MoeRunner` -> `fused_experts` (in place, `MoeRunnerConfig.inplace` as on CUDA) ->
  `fused_experts_impl` -> the fused MoE Triton kernel, in the Triton interpreter;
* our Triton kernels where the model calls them on CUDA: `block_causal_attention_triton` (whole-
  prompt and folded forwards), `block_route_triton` with its libdevice branch (LLaDA2.2 block
  routing), in the interpreter; our attention takes its GPU branch (`RadixAttention` for
  denoising forwards, `own_block_attention` off);
* SGLang's in-tree class: its block-routing Triton kernels in the interpreter (its CUDA check
  skipped), and its experts through the same GPU runner.

The torch stand-ins, each only where the GPU code calls a CUDA-only op that has no CPU kernel
(`STAND_INS` lists them; nothing else is replaced):
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

# (what the GPU code calls, what runs here instead, why)
STAND_INS: tuple[tuple[str, str, str], ...] = (
    (
        "sgl_kernel moe_align_block_size (moe_align_block_size.sgl_moe_align_block_size)",
        "torch_moe_align_block_size below",
        "a CUDA-only op: sorts (token, expert) pairs by expert into BLOCK_SIZE_M-padded segments",
    ),
    (
        "torch.ops.sglang.inplace_fused_experts / outplace_fused_experts",
        "the registered functions' Python bodies (`__wrapped__`), i.e. fused_experts_impl",
        "SGLang registers them as custom ops with a CUDA kernel only",
    ),
    (
        "try_get_optimal_moe_config (tuned-config file lookup by GPU name)",
        "FUSED_MOE_CONFIG via triton_utils.override_config",
        "the lookup asks the CUDA driver for the device name",
    ),
    (
        "sgl_kernel activation / moe_sum_reduce inside fused_experts_impl",
        "fused_experts_impl's own non-CUDA branch (torch silu_and_mul, torch sum)",
        "chosen by SGLang at import from is_cuda(); the same maths",
    ),
    (
        "RMSNorm / SiluAndMul / rotary embedding forward_cuda (sgl_kernel)",
        "their forward_native (what SGLang runs on CPU)",
        "CUDA-only fused kernels; same maths",
    ),
    (
        "FlashInfer / Triton attention backend behind RadixAttention",
        "SGLang's torch_native attention backend",
        "the attention backends need CUDA; the model's own attention code (ours) is what is under test",
    ),
    (
        "SGLang's TopK.forward_cuda (fused sigmoid / grouped top-k, sgl_kernel)",
        "TopK.forward_native",
        "CUDA-only; our class computes its own top-k and does not use TopK",
    ),
)

__doc__ = (__doc__ or "") + "".join(f"\n* {gpu} -> {ours}: {why}" for gpu, ours, why in STAND_INS) + "\n"

# A fixed fused-MoE kernel config (the tuned table is looked up by GPU name). Small tiles keep the
# interpreter fast; BLOCK_SIZE_M 16 is the smallest the kernel's tl.dot accepts.
FUSED_MOE_CONFIG: dict[str, int] = {
    "BLOCK_SIZE_M": 16,
    "BLOCK_SIZE_N": 32,
    "BLOCK_SIZE_K": 32,
    "GROUP_SIZE_M": 1,
    "num_warps": 4,
    "num_stages": 1,
}


def torch_moe_align_block_size(
    topk_ids: torch.Tensor,
    num_buckets: int,
    block_size: int,
    sorted_ids: torch.Tensor,
    expert_ids: torch.Tensor,
    num_tokens_post_pad: torch.Tensor,
    cumsum_buffer: torch.Tensor,
    pad_sorted_ids: bool,
    *_: Any,
) -> None:
    """The sgl_kernel op's contract for valid expert ids (0 <= id < num_buckets - 1), written into
    the caller's buffers: flat (token, k) indices grouped by expert in ascending order, each
    expert's segment padded to a multiple of `block_size` with the index `topk_ids.numel()`
    (the kernel skips it), the expert of each `block_size` block, and the padded total."""
    flat = topk_ids.reshape(-1).long()
    n = flat.numel()
    num_experts = num_buckets - 1
    sorted_ids.fill_(n)
    expert_ids.fill_(-1)
    order = torch.argsort(flat, stable=True)  # [n] flat indices grouped by expert
    counts = torch.bincount(flat, minlength=num_experts)[:num_experts]  # [E]
    padded = (counts + block_size - 1) // block_size * block_size  # [E]
    starts = torch.cumsum(padded, 0) - padded  # [E]
    seg_starts = torch.cumsum(counts, 0) - counts  # [E] where each expert starts in `order`
    rank = torch.arange(n, device=flat.device) - seg_starts[flat[order]]  # rank within its expert
    sorted_ids[(starts[flat[order]] + rank)] = order.to(sorted_ids.dtype)
    blocks = padded // block_size  # [E]
    expert_ids[: int(blocks.sum())] = torch.repeat_interleave(
        torch.arange(num_experts, dtype=expert_ids.dtype, device=flat.device), blocks
    )
    num_tokens_post_pad[0] = int(padded.sum())
    cumsum_buffer.zero_()


@dataclass
class _Patch:
    obj: Any
    name: str
    value: Any


@contextlib.contextmanager
def _patched(patches: list[_Patch]) -> Iterator[None]:
    saved = [(p.obj, p.name, getattr(p.obj, p.name, None), hasattr(p.obj, p.name)) for p in patches]
    for p in patches:
        setattr(p.obj, p.name, p.value)
    try:
        yield
    finally:
        for obj, name, value, existed in reversed(saved):
            if existed:
                setattr(obj, name, value)
            else:
                delattr(obj, name)


def _fused_moe_layers(model: torch.nn.Module) -> list[Any]:
    from sglang.srt.layers.moe.fused_moe_triton.layer import FusedMoE

    return [m for m in model.modules() if isinstance(m, FusedMoE)]


@contextlib.contextmanager
def gpu_branches(model: torch.nn.Module) -> Iterator[None]:
    """Inside this block, `model` (ours or SGLang's in-tree `LLaDA2MoeModelLM`, built on CPU) runs
    the branches its forward takes on CUDA, as listed in the module docstring. A model on CUDA
    takes them anyway: nothing is replaced."""
    if next(model.parameters()).is_cuda:
        yield
        return
    from sglang.kernels.ops.moe import fused_moe_triton_kernels
    from sglang.srt.layers.moe.moe_runner.triton_utils import fused_moe as fm
    from sglang.srt.layers.moe.moe_runner.triton_utils import override_config

    from sglang_llada.kernels import block_causal_attention as bca
    from sglang_llada.kernels import block_routing as br
    from sglang_llada.kernels.testing import interpreted

    # The package re-exports a function under the module's name: import the module itself.
    ma = importlib.import_module("sglang.srt.layers.moe.moe_runner.triton_utils.moe_align_block_size")
    patches = [
        _Patch(ma, "sgl_moe_align_block_size", torch_moe_align_block_size),
        _Patch(fm, "inplace_fused_experts", fm.inplace_fused_experts.__wrapped__),
        _Patch(fm, "outplace_fused_experts", fm.outplace_fused_experts.__wrapped__),
    ]
    for layer in _fused_moe_layers(model):
        method = layer.quant_method
        # Looked up at call time, so that a counting wrapper on the class is seen (BranchCounter).
        patches.append(_Patch(method, "_forward_method", _call_forward_cuda(method)))
    patches += _model_patches(model)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_patched(patches))
        stack.enter_context(override_config(dict(FUSED_MOE_CONFIG)))
        for module in (fused_moe_triton_kernels, bca, br):
            stack.enter_context(interpreted(module))
        yield


def _model_patches(model: torch.nn.Module) -> list[_Patch]:
    """The model-class-specific switches: ours takes its CUDA attention and kernel branches;
    SGLang's in-tree class launches its block-routing kernels on CPU tensors."""
    import triton.language as tl

    from sglang_llada.kernels import block_causal_attention as bca
    from sglang_llada.kernels import block_routing as br
    from sglang_llada.models import llada2 as ours

    if isinstance(model, ours.LLaDA2MoeModelLM):
        patches = [
            _Patch(ours, "block_causal_attention", lambda *a: bca.block_causal_attention_triton(*a)),
            _Patch(ours, "block_route", _block_route_libdevice),
            # The interpreter implements tl.math but not libdevice (sglang notes, last section).
            _Patch(br, "libdevice", tl.math),
        ]
        for module in model.modules():
            if isinstance(module, ours.LLaDA2Attention):
                patches.append(_Patch(module, "own_block_attention", False))
        return patches
    from sglang.srt.models import llada2 as in_tree

    return [
        _Patch(in_tree, "block_topk_triton", in_tree_block_topk),
        _Patch(in_tree, "libdevice", tl.math),
    ]


def _call_forward_cuda(method: Any) -> Callable[..., Any]:
    def forward_cuda(*args: Any, **kwargs: Any) -> Any:
        return type(method).forward_cuda(method, *args, **kwargs)

    return forward_cuda


def _block_route_libdevice(*args: Any) -> tuple[torch.Tensor, torch.Tensor]:
    from sglang_llada.kernels import block_routing as br

    return br.block_route_triton(*args, use_libdevice=True)


def in_tree_block_topk(
    logits: torch.Tensor, bias: torch.Tensor, block_size: int, cap: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """SGLang's `block_topk_triton` without its CUDA check: its two kernels, launched as it does."""
    import triton
    from sglang.srt.models import llada2 as in_tree

    from sglang_llada.kernels.testing import interpreted

    t, e = logits.shape
    nb = triton.cdiv(t, block_size)
    allowed = torch.empty(nb, cap, dtype=torch.int32)
    ids = torch.empty(t, k, dtype=torch.int32)
    weights = torch.empty(t, k, dtype=torch.float32)
    with interpreted(in_tree):
        in_tree._block_aggregation_kernel[(nb,)](
            logits, bias, allowed, t, e, block_size, cap, logits.stride(0), logits.stride(1),
            bias.stride(0), BLOCK_SIZE_E=triton.next_power_of_2(e), BLOCK_SIZE_T=block_size,
        )
        in_tree._token_topk_kernel[(t,)](
            logits, bias, allowed, ids, weights, t, e, cap, block_size, k, logits.stride(0),
            logits.stride(1), bias.stride(0), BLOCK_SIZE_C=triton.next_power_of_2(cap),
            TOPK_POW2=triton.next_power_of_2(k),
        )
    return weights, ids


# ------------------------------------------------------------------------------------------------
# the comparison: ours through its GPU branches vs ours on its CPU path vs SGLang's in-tree class
# ------------------------------------------------------------------------------------------------

BLOCK = 32
PROMPT_LEN = 3 * BLOCK + 9  # three full blocks and a partial one


def build_model(cls: type, model_dir: Path, dtype: torch.dtype, device: str = "cpu") -> torch.nn.Module:
    """`cls` from model_dir's config.json and safetensors, as SGLang's loader builds it: parameters in
    `dtype`, `load_weights`, then each quant method's post-load processing."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(config).eval()
    finally:
        torch.set_default_dtype(previous)
    model.load_weights(iter(load_file(str(model_dir / "model.safetensors")).items()))
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        if method is not None and hasattr(method, "process_weights_after_loading"):
            method.process_weights_after_loading(module)
    return model


@contextlib.contextmanager
def serving(runner: Any, model: torch.nn.Module) -> Iterator[None]:
    """`runner`'s ModelRunner forwards `model` inside this block."""
    mr = runner.model_runner
    before = mr.model
    model.shared_experts_config = before.shared_experts_config  # set by SGLang's loader, read by forward
    mr.model = model
    try:
        yield
    finally:
        mr.model = before


class InputGuard:
    """Wraps `model.forward` and records every call that changed its tensor inputs (input_ids,
    positions, input_embeds): a forward must leave what it is given as it was."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.calls = 0
        self.mutated: list[str] = []

    def __enter__(self) -> "InputGuard":
        inner = self.model.forward

        def guarded(input_ids: torch.Tensor, positions: torch.Tensor, forward_batch: Any, *args: Any, **kwargs: Any) -> Any:
            watched = {"input_ids": input_ids, "positions": positions}
            embeds = kwargs.get("input_embeds", args[0] if args else None)
            if isinstance(embeds, torch.Tensor):
                watched["input_embeds"] = embeds
            before = {k: v.clone() for k, v in watched.items()}
            out = inner(input_ids, positions, forward_batch, *args, **kwargs)
            self.calls += 1
            self.mutated += [k for k, v in watched.items() if not torch.equal(v, before[k])]
            return out

        self.model.forward = guarded
        return self

    def __exit__(self, *exc: object) -> None:
        del self.model.forward  # back to the class's method


class BranchCounter:
    """Counts the GPU-only calls a forward made (proof that the harness took the GPU branches)."""

    TARGETS = (
        ("sglang.srt.layers.quantization.unquant", "UnquantizedFusedMoEMethod", "forward_cuda"),
        ("sglang.kernels.ops.moe.fused_moe_triton_kernels", None, "invoke_fused_moe_kernel"),
        ("sglang_llada.kernels.block_causal_attention", None, "block_causal_attention_triton"),
        ("sglang_llada.kernels.block_routing", None, "block_route_triton"),
    )

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        patches = []
        for module_name, cls_name, fn_name in self.TARGETS:
            owner: Any = importlib.import_module(module_name)
            if cls_name is not None:
                owner = getattr(owner, cls_name)
            original = getattr(owner, fn_name)
            patches.append(_Patch(owner, fn_name, self._wrap(fn_name, original)))
        # Callers that imported a function by name see the counting one too.
        from sglang.srt.layers.moe.moe_runner.triton_utils import fused_moe as fm

        patches.append(_Patch(fm, "invoke_fused_moe_kernel", patches[1].value))
        with _patched(patches):
            yield

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] = self.counts.get(name, 0) + 1
            return fn(*args, **kwargs)

        return counted


def compare(model_dir: Path, runner: Any, *, dtype: torch.dtype = torch.float16, device: str = "cpu") -> dict[str, Any]:
    """Logits of one checkpoint, the prompt fed block by block as denoising forwards (`DLLM_EXTEND`,
    the serving mode), as a whole-prompt `EXTEND` forward and as a folded forward, each as
    max|a - b| / max|b|:

    * ours_gpu_vs_ours_cpu, in_tree_gpu_vs_ours_cpu, ours_gpu_vs_in_tree_gpu: by blocks;
    * ours_gpu_extend_vs_ours_cpu: ours' whole-prompt forward (GPU branches) vs ours by blocks (CPU);
    * ours_gpu_folded_vs_ours_cpu_folded: a fold_store forward, both paths;
    * ours_gpu_vs_reference: vs the pure-torch reference in fp32 (sglang_llada/testing/reference_llada2.py);
    * inputs_mutated: forward inputs any class changed; gpu_calls: the GPU-only calls counted.

    device "cuda": both classes run natively on the GPU; the rows against our CPU path are None
    (that path does not exist there)."""
    import json

    from sglang.srt.models import llada2 as in_tree

    from sglang_llada.models import llada2 as ours_module
    from sglang_llada.testing import reference_llada2 as ref
    from sglang_llada.testing.sglang_inprocess import rel_err

    vocab = int(json.loads((model_dir / "config.json").read_text())["vocab_size"])
    prompt = torch.randint(0, vocab, (PROMPT_LEN,), generator=torch.Generator().manual_seed(3))
    ids = prompt.tolist()
    folded_at = 2 * BLOCK
    stale = ids[:BLOCK] + [0 if i % 2 else t for i, t in enumerate(ids[BLOCK:folded_at])] + ids[folded_at:]
    fold = {folded_at: ids[BLOCK:folded_at]}

    ours = build_model(ours_module.LLaDA2MoeModelLM, model_dir, dtype, device)
    theirs = build_model(in_tree.LLaDA2MoeModelLM, model_dir, dtype, device)
    on_cuda = device == "cuda"
    counter = BranchCounter()
    mutated: list[str] = []
    with serving(runner, ours), InputGuard(ours) as guard:
        cpu = runner.forward_by_blocks(prompt, BLOCK, dllm_extend=True)["logits"]
        cpu_folded = runner.forward_by_blocks(stale, BLOCK, dllm_extend=True, fold=fold)["logits"]
        with gpu_branches(ours), counter.counting():
            gpu = runner.forward_by_blocks(prompt, BLOCK, dllm_extend=True)["logits"]
            gpu_extend = runner.forward_by_blocks(prompt, PROMPT_LEN)["logits"]
            gpu_folded = runner.forward_by_blocks(stale, BLOCK, dllm_extend=True, fold=fold)["logits"]
        mutated += [f"ours.{name}" for name in guard.mutated]
    with serving(runner, theirs), InputGuard(theirs) as guard:
        with gpu_branches(theirs), counter.counting():
            theirs_gpu = runner.forward_by_blocks(prompt, BLOCK, dllm_extend=True)["logits"]
        mutated += [f"in_tree.{name}" for name in guard.mutated]
    want = ref.load_reference(model_dir).forward(prompt, block_size=BLOCK)
    gpu, gpu_extend, gpu_folded, theirs_gpu, cpu, cpu_folded = (
        t.float().cpu() for t in (gpu, gpu_extend, gpu_folded, theirs_gpu, cpu, cpu_folded)
    )
    errors: dict[str, float | None] = {
        "ours_gpu_vs_ours_cpu": None if on_cuda else rel_err(gpu, cpu),
        "in_tree_gpu_vs_ours_cpu": None if on_cuda else rel_err(theirs_gpu, cpu),
        "ours_gpu_vs_in_tree_gpu": rel_err(gpu, theirs_gpu),
        "ours_gpu_extend_vs_ours_cpu": rel_err(gpu_extend, gpu if on_cuda else cpu),
        "ours_gpu_folded_vs_ours_cpu_folded": None if on_cuda else rel_err(gpu_folded[folded_at:], cpu_folded[folded_at:]),
        "ours_gpu_vs_reference": rel_err(gpu, want),
        "ours_cpu_vs_reference": None if on_cuda else rel_err(cpu, want),
    }
    finite = bool(all(torch.isfinite(t).all() for t in (cpu, gpu, gpu_extend, gpu_folded, theirs_gpu)))
    return {"errors": errors, "finite": finite, "inputs_mutated": mutated, "gpu_calls": counter.counts}


def main(argv: list[str] | None = None) -> int:
    """`python -m sglang_llada.testing.gpu_path CKPT [CKPT ...] [--json OUT]`: compare() per checkpoint
    in one SGLang ModelRunner (fp16, CPU, torch-native attention backend), results as JSON."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, help="write the results here (default: stdout)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: GPU branches on CPU tensors (interpreter); cuda: the real GPU branches")
    args = parser.parse_args(argv)

    from sglang_llada.testing.sglang_inprocess import get_runner

    # One runner (SGLang builds its process groups once per process); its own model is only the
    # host of the KV pools and forward context: each class under test is swapped in.
    extra = {"device": "cuda", "attention_backend": "triton"} if args.device == "cuda" else {}
    runner = get_runner(args.checkpoints[0], dtype="float16", **extra)
    results = {str(path): compare(path, runner, device=args.device) for path in args.checkpoints}
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
