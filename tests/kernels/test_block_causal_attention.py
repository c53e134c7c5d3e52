"""Parity of the block-causal prefill attention kernel with its torch twin, and of the twin with the
plain definition (`block_causal_attention_reference` in kernels/block_causal_attention.py).

On a GPU-less machine the Triton kernel runs in the interpreter via `interpreted(...)` (see
kernels/testing.py for why TRITON_INTERPRET is not simply set); on a CUDA machine it is compiled.
"""

from __future__ import annotations

import math

import pytest
import torch

import sglang_llada.kernels.block_causal_attention as bca
from sglang_llada.kernels.testing import host_syncs, interpreted

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
S = 32


def _case(prefix_lens: list[int], extend_lens: list[int], h: int, hkv: int, d: int, seed: int):
    """A KV pool whose slots are shuffled (as after many requests), q for the new tokens."""
    g = torch.Generator().manual_seed(seed)
    b = len(prefix_lens)
    seqs = [p + e for p, e in zip(prefix_lens, extend_lens)]
    n_slots = sum(seqs) + 17
    slots = torch.randperm(n_slots, generator=g)
    req_to_token = torch.zeros(b + 2, max(seqs) + 8, dtype=torch.int32)
    pool_rows = torch.tensor([b + 1 - i for i in range(b)], dtype=torch.int64)  # not 0..B-1
    used = 0
    for i, seq in enumerate(seqs):
        req_to_token[pool_rows[i], :seq] = slots[used : used + seq].to(torch.int32)
        used += seq
    k_cache = torch.randn(n_slots, hkv, d, generator=g)
    v_cache = torch.randn(n_slots, hkv, d, generator=g)
    q = torch.randn(sum(extend_lens), h, d, generator=g)
    to = lambda t: t.to(DEVICE)  # noqa: E731
    return to(q), to(k_cache), to(v_cache), to(req_to_token), to(pool_rows)


CASES = [
    # (prefix_lens, extend_lens): whole prompts, prompts after a cached prefix, ragged tails
    ([0], [96]),
    ([0, 64, 32], [64, 96, 32]),
    ([32, 0], [45, 7]),
    ([0, 128], [160, 0]),
]


@pytest.mark.parametrize("prefix_lens,extend_lens", CASES)
@pytest.mark.parametrize("h,hkv,d", [(4, 2, 128), (2, 2, 24)])
def test_torch_twin_matches_definition(prefix_lens, extend_lens, h, hkv, d) -> None:
    args = _case(prefix_lens, extend_lens, h, hkv, d, seed=len(prefix_lens) + d)
    scale = d**-0.5
    got = bca.block_causal_attention_torch(*args, prefix_lens, extend_lens, S, scale)
    want = bca.block_causal_attention_reference(*args, prefix_lens, extend_lens, S, scale)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prefix_lens,extend_lens", CASES)
def test_triton_kernel_matches_torch_twin(prefix_lens, extend_lens) -> None:
    args = _case(prefix_lens, extend_lens, 4, 2, 128, seed=7)
    scale = 128**-0.5
    want = bca.block_causal_attention_torch(*args, prefix_lens, extend_lens, S, scale)
    with interpreted(bca):
        got = bca.block_causal_attention_triton(*args, prefix_lens, extend_lens, S, scale)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_one_block_equals_full_attention_and_later_blocks_do_not_leak() -> None:
    """Extend of one block over a cached prefix is plain (bidirectional) attention over all keys;
    changing a later block's keys changes nothing for earlier blocks."""
    q, k, v, r2t, rows = _case([64], [64], 2, 2, 32, seed=3)
    scale = 32**-0.5
    base = bca.block_causal_attention_torch(q, k, v, r2t, rows, [64], [64], S, scale)
    last_block = r2t[rows[0], 96:128].long()
    k2 = k.clone()
    k2[last_block] += 1.0
    changed = bca.block_causal_attention_torch(q, k2, v, r2t, rows, [64], [64], S, scale)
    assert torch.equal(changed[:32], base[:32])  # positions 64..95 never see 96..127
    assert not torch.allclose(changed[32:], base[32:])
    # the last block as a single-block forward: every key 0..127 visible
    one = bca.block_causal_attention_torch(q[32:], k, v, r2t, rows, [96], [32], S, scale)
    torch.testing.assert_close(one, base[32:])
    slots = r2t[rows[0], :128].long()
    dense = torch.softmax(torch.einsum("thd,shd->hts", q[32:], k[slots]) * scale, dim=-1)
    torch.testing.assert_close(torch.einsum("hts,shd->thd", dense, v[slots]), base[32:], rtol=1e-5, atol=1e-5)


def test_torch_twin_has_no_host_sync() -> None:
    args = _case([0, 32], [64, 40], 4, 2, 16, seed=5)
    syncs = host_syncs(lambda: bca.block_causal_attention_torch(*args, [0, 32], [64, 40], S, 0.25))
    assert syncs == [], syncs


def test_bad_shapes_are_reported() -> None:
    q, k, v, r2t, rows = _case([0], [32], 4, 2, 16, seed=1)
    with pytest.raises(ValueError, match="sum to T"):
        bca.block_causal_attention_torch(q, k, v, r2t, rows, [0], [31], S, 0.25)
    with pytest.raises(ValueError, match="multiple"):
        bca.block_causal_attention_torch(q[:, :3], k, v, r2t, rows, [0], [32], S, 0.25)


def test_dispatch_picks_torch_on_cpu() -> None:
    args = _case([0], [40], 2, 1, 16, seed=2)
    got = bca.block_causal_attention(*args, [0], [40], S, 1 / math.sqrt(16))
    want = bca.block_causal_attention_torch(*args, [0], [40], S, 1 / math.sqrt(16))
    assert torch.equal(got, want)
