"""Logits parity: our `LLaDA2MoeModelLM` run by SGLang itself vs the pure-torch reference.

SGLang side (sglang_llada/testing/sglang_inprocess.py): ServerArgs resolution with our plugin and CPU platform,
SGLang's model loader, KV pools, torch-native attention backend, and `ModelRunner.forward` on
`ForwardBatch`es; fp32. The prompt is fed one 32-token block per forward, each forward having
the previous blocks as its KV-cached prefix (chunked prefill, chunk = block), so every block
but the first reads its context from the KV cache. The last block is partial (9 tokens).

Reference side: `sglang_llada/testing/reference_llada2.py`, one forward over the whole prompt with an explicit
block-causal mask. Both sides read the same random toy checkpoint (per-expert, fused-expert and
2-shard layouts of the same weights).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from sglang_llada.testing import reference_llada2 as ref
from sglang_llada.testing.sglang_inprocess import get_runner, rel_err

BLOCK = 32
T = 3 * BLOCK + 9  # three full blocks and a partial one
TOL = 1e-4  # max|sglang - ref| / max|ref|, fp32 on both sides
VARIANTS: dict[str, dict[str, Any]] = {
    "per_expert": {},
    "fused_experts": {"fused_experts": True},
    "two_shards": {"num_shards": 2},
}


pytestmark = pytest.mark.usefixtures("few_threads")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sglang_llada.toy.checkpoint import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("parity")
    return {
        name: write_tiny_checkpoint(root / name, seed=0, **kwargs) for name, kwargs in VARIANTS.items()
    }


@pytest.fixture(scope="module")
def mask_id(checkpoints: dict[str, Path]) -> int:
    from sglang_llada.startup.checkpoint_tokens import resolve_diffusion_tokens

    return int(resolve_diffusion_tokens(str(checkpoints["per_expert"]), None, None).mask_id)


@pytest.fixture(scope="module")
def prompt(checkpoints: dict[str, Path], mask_id: int) -> torch.Tensor:
    """T random ids over the whole vocab, the last 5 being the mask token (as in a dLLM step)."""
    vocab = int(json.loads((checkpoints["per_expert"] / "config.json").read_text())["vocab_size"])
    ids = torch.randint(0, vocab, (T,), generator=torch.Generator().manual_seed(1))
    ids[-5:] = mask_id
    return ids


@pytest.fixture(scope="module")
def reference_logits(checkpoints: dict[str, Path], prompt: torch.Tensor) -> torch.Tensor:
    return ref.load_reference(checkpoints["per_expert"]).forward(prompt, block_size=BLOCK)


def _check_forwards(forwards: list[dict[str, Any]], block: int, total: int) -> None:
    """Each forward extended one block on top of a prefix of all earlier blocks."""
    starts = list(range(0, total, block))
    assert [f["prefix_len"] for f in forwards] == starts
    assert [f["extend_len"] for f in forwards] == [min(block, total - s) for s in starts]
    assert [f["seq_len"] for f in forwards] == [min(s + block, total) for s in starts]
    assert [f["positions"] for f in forwards] == [(s, min(s + block, total) - 1) for s in starts]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_block_by_block_logits_match_reference(
    variant: str, checkpoints: dict[str, Path], prompt: torch.Tensor
) -> None:
    path = checkpoints[variant]
    want = ref.load_reference(path).forward(prompt, block_size=BLOCK)  # [T, V]
    runner = get_runner(path)
    assert type(runner.model).__module__ == "sglang_llada.models.llada2"
    assert type(runner.model).__name__ == "LLaDA2MoeModelLM"
    assert runner.model.lm_head.weight.dtype == torch.float32

    # Plain EXTEND forwards: all positions' final hidden states (CaptureHiddenMode.FULL) times
    # the loaded lm_head, plus the LogitsProcessor's own last-token logits of every forward.
    out = runner.forward_by_blocks(prompt, BLOCK)
    _check_forwards(out["forwards"], BLOCK, T)
    got = out["logits"]
    assert got.shape == want.shape == (T, runner.model.config.vocab_size)
    assert torch.isfinite(got).all()
    err = rel_err(got, want)
    print(f"[{variant}] EXTEND by blocks: rel err {err:.3e}")
    assert err <= TOL, f"{variant}: rel err {err:.3e} > {TOL}"
    ends = [min(s + BLOCK, T) for s in range(0, T, BLOCK)]
    for end, last in zip(ends, out["sglang_logits"]):
        assert last.shape == (1, want.shape[1])
        assert rel_err(last[0], want[end - 1]) <= TOL, f"LogitsProcessor logits at {end - 1}"

    # The diffusion serving mode: the LogitsProcessor returns every position's logits.
    out = runner.forward_by_blocks(prompt, BLOCK, dllm_extend=True)
    _check_forwards(out["forwards"], BLOCK, T)
    err = rel_err(out["logits"], want)
    print(f"[{variant}] DLLM_EXTEND by blocks: rel err {err:.3e}")
    assert err <= TOL, f"{variant} (DLLM_EXTEND): rel err {err:.3e} > {TOL}"


@pytest.mark.parametrize("block", [16, 128])
def test_other_block_sizes_match_reference(
    block: int, checkpoints: dict[str, Path], prompt: torch.Tensor, reference_logits: torch.Tensor
) -> None:
    """DLLM_EXTEND forwards are bidirectional over their own tokens, so feeding `block` tokens per
    forward is block-causal attention at `block`. 16: prefixes that end mid KV page (page size 32);
    128: one bidirectional forward."""
    path = checkpoints["per_expert"]
    want = ref.load_reference(path).forward(prompt, block_size=block)
    out = get_runner(path).forward_by_blocks(prompt, block, dllm_extend=True)
    _check_forwards(out["forwards"], block, T)
    err = rel_err(out["logits"], want)
    print(f"block {block}: rel err {err:.3e}")
    assert err <= TOL
    # The attention pattern matters far above the tolerance: a wrong mask / missing prefix fails.
    assert rel_err(out["logits"], reference_logits) > 100 * TOL


def test_tolerance_detects_wrong_attention(
    checkpoints: dict[str, Path], prompt: torch.Tensor, reference_logits: torch.Tensor
) -> None:
    """Control on the reference alone: dropping the cached prefix or the in-block bidirectional
    attention moves the logits by orders of magnitude more than TOL."""
    model = ref.load_reference(checkpoints["per_expert"])
    causal = model.forward(prompt, block_size=1)
    assert rel_err(causal, reference_logits) > 100 * TOL
    # Block 2 without blocks 0-1 in its context. Its positions start at 0 instead of 64, a
    # constant shift that RoPE attention is invariant to: what is measured is the prefix alone.
    no_prefix = model.forward(prompt[2 * BLOCK : 3 * BLOCK], block_size=BLOCK)
    assert rel_err(no_prefix, reference_logits[2 * BLOCK : 3 * BLOCK]) > 100 * TOL


@pytest.mark.parametrize("chunk", [T, 2 * BLOCK])
def test_whole_prompt_in_one_forward_writes_the_block_by_block_kv(
    chunk: int, checkpoints: dict[str, Path], prompt: torch.Tensor, reference_logits: torch.Tensor
) -> None:
    """The whole-prompt prefill path: an EXTEND forward over many blocks (all 105 tokens at once,
    or 64-token chunks) applies the block-causal mask itself (kernels/block_causal_attention.py),
    so its logits equal the reference's and the KV it writes equals the KV of one block per
    forward (SGLang 0.5.23's dLLM prefill), within fp32 tolerance."""
    runner = get_runner(checkpoints["per_expert"])
    whole = runner.forward_by_blocks(prompt, chunk, return_kv=True)
    assert [f["extend_len"] for f in whole["forwards"]] == [min(chunk, T - s) for s in range(0, T, chunk)]
    by_blocks = runner.forward_by_blocks(prompt, BLOCK, dllm_extend=True, return_kv=True)
    err = rel_err(whole["logits"], reference_logits)
    kv_err = rel_err(whole["kv"], by_blocks["kv"])
    print(f"one forward per {chunk} tokens: logits rel err {err:.3e}, KV rel err vs by-blocks {kv_err:.3e}")
    assert err <= TOL
    assert whole["kv"].shape == by_blocks["kv"].shape and whole["kv"].shape[2] == T
    assert kv_err <= TOL
    # Control: the same forward with a bidirectional mask (DLLM_EXTEND) writes other K/V.
    bidirectional = runner.forward_by_blocks(prompt, chunk, dllm_extend=True, return_kv=True)
    assert rel_err(bidirectional["kv"], by_blocks["kv"]) > 100 * TOL


def test_folded_forward_stores_the_previous_block_and_decodes_as_after_a_store(checkpoints: dict[str, Path], prompt: torch.Tensor) -> None:
    """fold_store: block 1 is first fed half masked (its stale KV), then the forward of block 2 folds
    block 1's final tokens in. Block 2's logits and every KV entry equal those of feeding block 1
    final and then block 2 (SGLang's way: a store forward, then the next block)."""
    runner = get_runner(checkpoints["per_expert"])
    ids = prompt.reshape(-1)[: 3 * BLOCK].tolist()
    mask = runner.model.config.vocab_size - 1  # any id: the stale K/V only have to differ
    stale = ids[:BLOCK] + [mask if i % 2 else t for i, t in enumerate(ids[BLOCK : 2 * BLOCK])] + ids[2 * BLOCK :]
    want = runner.forward_by_blocks(ids, BLOCK, dllm_extend=True, return_kv=True)
    unfolded = runner.forward_by_blocks(stale, BLOCK, dllm_extend=True, return_kv=True)
    got = runner.forward_by_blocks(stale, BLOCK, dllm_extend=True, return_kv=True, fold={2 * BLOCK: ids[BLOCK : 2 * BLOCK]})
    assert rel_err(unfolded["kv"], want["kv"]) > 1e-3  # the stale block's KV differs (the test can fail)
    assert rel_err(got["kv"], want["kv"]) <= TOL
    assert rel_err(got["logits"][2 * BLOCK :], want["logits"][2 * BLOCK :]) <= TOL
    assert got["logits"].shape == want["logits"].shape  # the folded block's logits are not returned


def test_folded_forward_also_returns_the_folded_blocks_logits(
    checkpoints: dict[str, Path], prompt: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The editing decoders' folded check (algorithms/folded_check.py) reads the folded block's
    logits: `folded_forward(..., folded_logits=True)` returns those of a forward of the block's own
    (its prefix and itself), and the batch's exactly as `forward_folded` computes them."""
    from sglang_llada.models.folded_blocks import folded_forward

    runner = get_runner(checkpoints["per_expert"])
    ids = prompt.reshape(-1)[: 3 * BLOCK].tolist()
    mask = runner.model.config.vocab_size - 1
    stale = ids[:BLOCK] + [mask if i % 2 else t for i, t in enumerate(ids[BLOCK : 2 * BLOCK])] + ids[2 * BLOCK :]
    fold = {2 * BLOCK: ids[BLOCK : 2 * BLOCK]}
    want = runner.forward_by_blocks(ids, BLOCK, dllm_extend=True)
    plain = runner.forward_by_blocks(stale, BLOCK, dllm_extend=True, fold=fold)
    folded_logits: list[torch.Tensor] = []

    def with_logits(self: Any, forward_batch: Any, layout: Any) -> Any:
        out, extra = folded_forward(self, forward_batch, layout, folded_logits=True)
        folded_logits.append(extra)
        return out

    monkeypatch.setattr(type(runner.model), "forward_folded", with_logits)
    got = runner.forward_by_blocks(stale, BLOCK, dllm_extend=True, fold=fold)
    assert torch.equal(got["logits"], plain["logits"])
    assert len(folded_logits) == 1 and folded_logits[0].shape == (BLOCK, want["logits"].shape[1])
    assert rel_err(folded_logits[0].float(), want["logits"][BLOCK : 2 * BLOCK]) <= TOL
