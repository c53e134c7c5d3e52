"""Every LLaDA2.X generation's tiny checkpoint: our model class vs the pure-torch reference and vs
SGLang 0.5.23's in-tree `LLaDA2MoeModelLM`, logits by logits (fp32, CPU).

The 2.2 checkpoint routes its MoE by blocks (`expert_capacity` 4 of 8 experts per 32-token block).
Our class runs `kernels/block_routing.py` (torch twin on CPU); SGLang's class runs its own two
block-routing Triton kernels, which its wrapper refuses to launch on CPU tensors, so this test
launches them on CPU inside the Triton interpreter (`kernels/testing.interpreted`).

The models are built in the process's one SGLang ModelRunner (sglang_llada/testing/sglang_inprocess.py): the
runner's model is swapped for the class under test while `forward_by_blocks` feeds the prompt
one block per forward (`DLLM_EXTEND`, the diffusion serving mode), or, for ours, the whole prompt
in one `EXTEND` forward (whole-prompt prefill: many routing blocks of one request per forward).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

import pytest
import torch

from sglang_llada.testing import reference_llada2 as ref
from sglang_llada.testing.gpu_path import build_model, in_tree_block_topk, serving
from sglang_llada.testing.sglang_inprocess import get_runner, rel_err

BLOCK = 32
T = 3 * BLOCK + 9  # three full blocks and a partial one
TOL = 1e-4


pytestmark = pytest.mark.usefixtures("few_threads")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sglang_llada.toy.checkpoint import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("generations")
    return {g: write_tiny_checkpoint(root / g, seed=0, generation=g) for g in ("2.0", "2.1", "2.2")}


@pytest.fixture(scope="module")
def prompt(checkpoints: dict[str, Path]) -> torch.Tensor:
    vocab = int(json.loads((checkpoints["2.0"] / "config.json").read_text())["vocab_size"])
    return torch.randint(0, vocab, (T,), generator=torch.Generator().manual_seed(3))


def _build(cls: type, model_dir: Path) -> torch.nn.Module:
    """`cls` loaded from model_dir as SGLang's loader does, fp32."""
    return build_model(cls, model_dir, torch.float32)


@contextlib.contextmanager
def _sglang_block_routing_on_cpu() -> Iterator[None]:
    """SGLang's `block_topk_triton` with its CUDA check skipped: its two kernels launched on CPU
    tensors in the Triton interpreter (libdevice's exp pointed at tl.math, which the interpreter
    implements; see ../shared/docs/sglang-0.5.23-notes.md), as sglang_llada/testing/gpu_path.py does."""
    import triton.language as tl
    from sglang.srt.models import llada2 as in_tree

    saved = in_tree.block_topk_triton, in_tree.libdevice
    in_tree.block_topk_triton, in_tree.libdevice = in_tree_block_topk, tl.math
    try:
        yield
    finally:
        in_tree.block_topk_triton, in_tree.libdevice = saved


def _in_tree_class() -> type:
    from sglang.srt.models import llada2 as in_tree

    assert in_tree.LLaDA2MoeModelLM.__module__ == "sglang.srt.models.llada2"
    return in_tree.LLaDA2MoeModelLM


def _ours_class() -> type:
    from sglang_llada.models.llada2 import LLaDA2MoeModelLM

    return LLaDA2MoeModelLM


def test_tiny_checkpoints_carry_their_generation(checkpoints: dict[str, Path]) -> None:
    from sglang_llada.startup.generation import checkpoint_generation
    from sglang_llada.toy.tokenizer import DELETE_TOKEN, SPLIT_TOKEN

    got = {g: checkpoint_generation(str(p)) for g, p in checkpoints.items()}
    assert {g: (x.name, x.algorithm) for g, x in got.items()} == {
        "2.0": ("2.0", "llada2_threshold"),
        "2.1": ("2.1", "llada2_edit"),
        "2.2": ("2.2", "llada2_levenshtein"),
    }
    config = json.loads((checkpoints["2.2"] / "config.json").read_text())
    tok = json.loads((checkpoints["2.2"] / "tokenizer.json").read_text())
    names = {t["id"]: t["content"] for t in tok["added_tokens"]}
    assert names[config["delete_token_id"]] == DELETE_TOKEN
    assert names[config["split_token_id"]] == SPLIT_TOKEN
    assert config["expert_capacity"] < config["num_experts"] and config["block_size"] == BLOCK


def test_block_routed_logits_match_reference(checkpoints: dict[str, Path], prompt: torch.Tensor) -> None:
    """Ours on the 2.2 checkpoint: by blocks (DLLM_EXTEND) and as one whole-prompt EXTEND forward
    (block boundaries inside the forward) equal the reference's block routing; and block routing
    changes the logits far beyond the tolerance (token-by-token routing of the same weights)."""
    runner = get_runner(checkpoints["2.0"])
    model = _build(_ours_class(), checkpoints["2.2"])
    want = ref.load_reference(checkpoints["2.2"]).forward(prompt, block_size=BLOCK)
    with serving(runner, model):
        by_blocks = runner.forward_by_blocks(prompt, BLOCK, dllm_extend=True)["logits"]
        whole = runner.forward_by_blocks(prompt, T)["logits"]
    err_blocks, err_whole = rel_err(by_blocks, want), rel_err(whole, want)
    print(f"2.2 ours vs reference: by blocks {err_blocks:.3e}, whole prompt {err_whole:.3e}")
    assert err_blocks <= TOL and err_whole <= TOL
    token_routed = ref.load_reference(checkpoints["2.0"]).forward(prompt, block_size=BLOCK)
    assert rel_err(token_routed, want) > 100 * TOL


@pytest.mark.parametrize("generation", ["2.0", "2.2"])
def test_in_tree_class_gives_our_logits(
    generation: str, checkpoints: dict[str, Path], prompt: torch.Tensor
) -> None:
    """SGLang's in-tree class and ours, same checkpoint, same DLLM_EXTEND forwards: same logits."""
    runner = get_runner(checkpoints["2.0"])
    path = checkpoints[generation]
    ours = _build(_ours_class(), path)
    with _sglang_block_routing_on_cpu():
        theirs = _build(_in_tree_class(), path)
        with serving(runner, theirs):
            got_theirs = runner.forward_by_blocks(prompt, BLOCK, dllm_extend=True)["logits"]
    with serving(runner, ours):
        got_ours = runner.forward_by_blocks(prompt, BLOCK, dllm_extend=True)["logits"]
    err = rel_err(got_ours, got_theirs)
    print(f"{generation}: ours vs SGLang in-tree rel err {err:.3e}")
    assert torch.isfinite(got_theirs).all()
    assert err <= TOL
    if generation == "2.2":  # SGLang's class really routed by blocks (not token by token)
        token_routed = ref.load_reference(checkpoints["2.0"]).forward(prompt, block_size=BLOCK)
        assert rel_err(got_theirs, token_routed) > 100 * TOL


def test_block_routing_refusals(checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """What SGLang refuses with block routing is refused when our class is built (start-up)."""
    from types import SimpleNamespace

    from sglang.srt.plugins import load_plugins
    from transformers import AutoConfig

    import sglang_llada.models.llada2 as ours

    load_plugins()  # the llada2_moe config class

    config = AutoConfig.from_pretrained(checkpoints["2.2"])
    monkeypatch.setattr(ours, "_on_cpu_platform", lambda: False)
    monkeypatch.setattr(ours, "get_parallel", lambda: SimpleNamespace(moe_ep_size=2, tp_size=1))
    with pytest.raises(ValueError, match=r"block routing .* does not support expert parallelism \(--ep 2\)"):
        ours.LLaDA2SparseMoe(config, 1, None, "mlp")
    monkeypatch.setattr(ours, "get_moe_a2a_backend", lambda: SimpleNamespace(is_deepep=lambda: True))
    with pytest.raises(ValueError, match="does not support --moe-a2a-backend deepep"):
        ours.LLaDA2SparseMoe(config, 1, None, "mlp")
    for flag in ("enable_return_routed_experts", "enable_return_indexer_topk"):
        monkeypatch.setattr(ours, "_runtime_features", lambda flag=flag: SimpleNamespace(**{flag: True}))
        with pytest.raises(ValueError, match=f"does not support --{flag.replace('_', '-')}"):
            ours._refuse_unsupported_runtime()
    monkeypatch.setattr(ours, "_runtime_features", lambda: None)
    ours._refuse_unsupported_runtime()  # neither flag: nothing refused
    for field, value, message in (
        ("score_function", "softmax", "needs score_function 'sigmoid'"),
        ("expert_capacity", 1, "num_experts_per_tok <= expert_capacity"),
        ("block_size", 24, "power-of-two block_size"),
    ):
        bad = AutoConfig.from_pretrained(checkpoints["2.2"], **{field: value})
        with pytest.raises(ValueError, match=message):
            ours.LLaDA2Router(bad)


def test_folded_forward_under_block_routing(checkpoints: dict[str, Path], prompt: torch.Tensor) -> None:
    """fold_store on a 2.2 checkpoint: the folded block is its own routing block (the forward's flat
    layout), so a stale block then a folded forward equals storing it and then the next block."""
    runner = get_runner(checkpoints["2.0"])
    model = _build(_ours_class(), checkpoints["2.2"])
    ids = prompt.reshape(-1)[: 3 * BLOCK].tolist()
    stale = ids[:BLOCK] + [0 if i % 2 else t for i, t in enumerate(ids[BLOCK : 2 * BLOCK])] + ids[2 * BLOCK :]
    with serving(runner, model):
        want = runner.forward_by_blocks(ids, BLOCK, dllm_extend=True, return_kv=True)
        got = runner.forward_by_blocks(stale, BLOCK, dllm_extend=True, return_kv=True, fold={2 * BLOCK: ids[BLOCK : 2 * BLOCK]})
    assert rel_err(got["kv"], want["kv"]) <= TOL
    assert rel_err(got["logits"][2 * BLOCK :], want["logits"][2 * BLOCK :]) <= TOL
