"""Parity of the `select_commit` Triton kernel with its torch twin, and of both with a plain definition
(`select_commit_reference` in kernels/select_commit.py).

On a GPU-less machine the kernel runs in the Triton interpreter via `interpreted(...)`; on a CUDA
machine the compiled kernel runs on the GPU. See kernels/testing.py for why TRITON_INTERPRET is not
simply set.
"""

from __future__ import annotations

import pytest
import torch

import sglang_llada.kernels.select_commit as sc
from sglang_llada.kernels.testing import host_syncs, interpreted

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
MASK_ID = 156895


# ----------------------------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------------------------


def _case(b: int, s: int, seed: int):
    """Random blocks with many ties; block 0 has nothing masked, block 1 one masked position, block 2 all."""
    g = torch.Generator().manual_seed(seed)
    is_masked = torch.rand(b, s, generator=g) < torch.rand(b, 1, generator=g)
    is_masked[0] = False
    if b > 1:
        is_masked[1] = False
        is_masked[1, s // 2] = True
    if b > 2:
        is_masked[2] = True
    levels = torch.tensor([0.05, 0.3, 0.3, 0.5, 0.9, 0.95, 0.95, 1.0])
    prob = levels[torch.randint(0, len(levels), (b, s), generator=g)]
    prob = torch.where(is_masked, prob, float("-inf"))  # what confidence() writes for unmasked rows
    token = torch.randint(0, 1000, (b, s), generator=g)
    input_ids = torch.where(is_masked, MASK_ID, torch.randint(0, 1000, (b, s), generator=g))
    threshold = torch.tensor([0.9, 0.95, 0.96, 1.0, 0.0, 2.0, 0.5, 0.99] * b)[:b]
    k = torch.tensor([1, 0, 3, 40, 2, -5, 5, 1] * b, dtype=torch.int32)[:b]
    to = lambda t: t.reshape(-1).to(DEVICE) if t.dim() == 2 else t.to(DEVICE)  # noqa: E731
    return to(input_ids), to(token), to(prob), to(is_masked), to(threshold), to(k)


def _garbage_out(b: int, s: int):
    return (
        torch.ones(b * s, dtype=torch.bool, device=DEVICE),
        torch.full((b,), -7, dtype=torch.int32, device=DEVICE),
        torch.zeros(b, dtype=torch.bool, device=DEVICE),
    )


def _run_both(case, s: int):
    input_ids, token, prob, is_masked, threshold, k = case
    b = threshold.shape[0]
    ids_tri, ids_ref = input_ids.clone(), input_ids.clone()
    out_tri, out_ref = _garbage_out(b, s), _garbage_out(b, s)
    with interpreted(sc):
        got = sc.select_commit_triton(ids_tri, token, prob, is_masked, threshold, k, s, out=out_tri)
    ref = sc.select_commit_torch(ids_ref, token, prob, is_masked, threshold, k, s, out=out_ref)
    assert all(a is o for a, o in zip(got, out_tri)) and all(a is o for a, o in zip(ref, out_ref))
    return (ids_tri, *got), (ids_ref, *ref)


# ----------------------------------------------------------------------------------------------
# parity
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("b,s", [(1, 32), (7, 32), (33, 32), (5, 20), (4, 4), (3, 1)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parity_with_twin_and_definition(b: int, s: int, seed: int) -> None:
    case = _case(b, s, seed)
    got, ref = _run_both(case, s)
    want = sc.select_commit_reference(*case, s)
    for name, g, r, w in zip(("input_ids", "committed", "count", "done"), got, ref, want):
        assert torch.equal(g.cpu(), w), (name, g, w)
        assert torch.equal(r.cpu(), w), (name, r, w)


def test_rules_on_hand_made_blocks() -> None:
    s = 8
    inf = float("-inf")
    is_masked = torch.tensor(
        [
            [1, 1, 1, 1, 0, 0, 0, 0],  # two pass the threshold
            [1, 1, 1, 1, 1, 0, 0, 0],  # none pass: k=2, ties at 0.4 -> positions 1 and 2
            [0, 0, 0, 0, 0, 0, 0, 0],  # nothing masked
            [0, 0, 0, 0, 0, 0, 0, 1],  # one masked, below threshold, k=0 -> clamped to 1
            [1, 1, 0, 0, 0, 0, 0, 0],  # k above the masked count -> all of them
        ],
        dtype=torch.bool,
    )
    prob = torch.tensor(
        [
            [0.97, 0.2, 0.95, 0.96, inf, inf, inf, inf],
            [0.1, 0.4, 0.4, 0.3, 0.4, inf, inf, inf],
            [inf] * 8,
            [inf] * 7 + [0.01],
            [0.5, 0.6] + [inf] * 6,
        ]
    )
    threshold = torch.tensor([0.95, 0.95, 0.95, 0.95, 0.95])
    k = torch.tensor([1, 2, 3, 0, 9], dtype=torch.int32)
    token = torch.arange(40).view(5, 8) + 100
    input_ids = torch.where(is_masked, MASK_ID, torch.arange(40).view(5, 8))
    case = tuple(t.reshape(-1).to(DEVICE) if t.dim() == 2 else t.to(DEVICE) for t in (input_ids, token, prob, is_masked, threshold, k))
    got, ref = _run_both(case, s)
    committed = got[1].view(5, 8).cpu()
    assert committed[0].tolist() == [True, False, True, True] + [False] * 4
    assert committed[1].tolist() == [False, True, True, False, False] + [False] * 3
    assert not committed[2].any() and committed[3].tolist() == [False] * 7 + [True]
    assert committed[4].tolist() == [True, True] + [False] * 6
    assert got[2].tolist() == [3, 2, 0, 1, 2]
    assert got[3].tolist() == [False, False, True, True, True]
    for g, r in zip(got, ref):
        assert torch.equal(g, r)
    ids = got[0].view(5, 8).cpu()
    assert torch.equal(ids, torch.where(committed, token, input_ids))  # nothing else written


def test_non_masked_probabilities_are_ignored() -> None:
    """Garbage (even 1.0) in unmasked slots must neither pass the threshold nor win the fallback."""
    input_ids, token, prob, is_masked, threshold, k = _case(6, 32, seed=9)
    prob = torch.where(is_masked, prob, 1.0)
    got, ref = _run_both((input_ids, token, prob, is_masked, threshold, k), 32)
    assert not (got[1] & ~is_masked).any()
    for g, r in zip(got, ref):
        assert torch.equal(g, r)


# ----------------------------------------------------------------------------------------------
# no host synchronisation, dispatch
# ----------------------------------------------------------------------------------------------



def test_torch_path_has_no_host_sync() -> None:
    case = tuple(t.cpu() for t in _case(32, 32, seed=4))
    assert host_syncs(lambda: sc.select_commit_torch(case[0].clone(), *case[1:])) == []
    assert host_syncs(lambda: sc.select_commit(case[0].clone(), *case[1:])) == []
    assert host_syncs(lambda: case[2][case[3]].sum().item()) != []  # the recorder catches what it must


def test_torch_path_runs_on_meta() -> None:
    b, s = 32, 32
    input_ids = torch.empty(b * s, dtype=torch.int64, device="meta")
    token = torch.empty(b * s, dtype=torch.int64, device="meta")
    prob = torch.empty(b * s, device="meta")
    is_masked = torch.empty(b * s, dtype=torch.bool, device="meta")
    threshold = torch.empty(b, device="meta")
    k = torch.empty(b, dtype=torch.int32, device="meta")
    committed, count, done = sc.select_commit(input_ids, token, prob, is_masked, threshold, k)
    assert committed.device.type == "meta" and count.shape == (b,) and done.dtype == torch.bool


def test_dispatch_uses_torch_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a, **kw):
        raise AssertionError("triton path used for CPU tensors")

    monkeypatch.setattr(sc, "select_commit_triton", boom)
    case = tuple(t.cpu() for t in _case(3, 32, seed=5))
    ids = case[0].clone()
    sc.select_commit(ids, *case[1:])
    assert torch.equal(ids, sc.select_commit_reference(*case, 32)[0])


def test_rejects_wrong_shapes() -> None:
    case = list(_case(3, 32, seed=6))
    with pytest.raises(ValueError):
        sc.select_commit_torch(case[0][:-1].clone(), *case[1:])
    with pytest.raises(ValueError):
        sc.select_commit_torch(case[0].clone(), *case[1:5], case[5][:2])
