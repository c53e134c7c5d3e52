"""Folded store (`fold_store`, on by default on the CPU platform) through the stock server on the
shipped trained toy: token for token the output of the same algorithm with `fold_store: off` on the
held-out splits, alone, batched, from the radix cache and in follow-up turns that reuse the tree, in
SGLang's FDFO loop and its synchronous one and under `--tp 2`, with exactly one forward fewer per
decoded block, and no KV leaked."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from sglang_llada.eval import render_prompts
from sglang_llada.server_process import Server, generate
from sglang_llada.testing.server_checks import idle_and_clean, served, strict_server
from sglang_llada.toy import TRAINED_TOY_DIR
from sglang_llada.toy.tasks import heldout_split

EXAMPLES = heldout_split()[:15]  # 3 of each task
PROMPTS = render_prompts(EXAMPLES)
MAX_NEW = 96
BLOCK = 32


def _run(server: Server, prompt: str, **extra: object) -> dict:
    return generate(server.url, {"text": prompt, "sampling_params": {"max_new_tokens": MAX_NEW, "temperature": 0, **extra}})


def _batched(server: Server, prompts: list[str]) -> list[dict]:
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        return list(pool.map(lambda p: _run(server, p), prompts))


def _blocks(out: dict) -> int:
    """Blocks the request decoded: from the block holding its first output token to its last."""
    p, c = out["meta_info"]["prompt_tokens"], out["meta_info"]["completion_tokens"]
    return -(-(p + c) // BLOCK) - p // BLOCK


def _follow_ups(firsts: list[dict]) -> list[str]:
    """A second turn after each first answer: the prompt, its answer, the next prompt of the list."""
    return [PROMPTS[i] + out["text"] + PROMPTS[(i + 1) % len(PROMPTS)] for i, out in enumerate(firsts)]


@pytest.fixture(scope="module")
def unfolded(tmp_path_factory: pytest.TempPathFactory, neutral_dir: Path) -> Iterator[dict[str, list[dict]]]:
    """The yardstick: the default algorithm with fold_store off, each prompt alone, then follow-ups."""
    cfg = tmp_path_factory.mktemp("algo") / "algorithm.yaml"
    cfg.write_text("fold_store: 'off'\n")
    args = ["--dllm-algorithm", "llada2_threshold", "--dllm-algorithm-config", str(cfg)]
    for server in served(TRAINED_TOY_DIR, args, neutral_dir, tmp_path_factory.mktemp("logs") / "unfolded.log"):
        assert "folds each finished block" not in server.log()
        firsts = [_run(server, p) for p in PROMPTS]
        yield {"first": firsts, "second": [_run(server, p) for p in _follow_ups(firsts)]}


@pytest.fixture(scope="module")
def folded_server(tmp_path_factory: pytest.TempPathFactory, neutral_dir: Path) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("logs") / "folded.log"
    yield from strict_server(TRAINED_TOY_DIR, [], neutral_dir, log)


def test_folded_equals_unfolded_in_one_forward_fewer_per_block(folded_server: Server, unfolded: dict[str, list[dict]]) -> None:
    assert "llada2_threshold folds each finished block's KV store" in folded_server.log()
    alone = [_run(folded_server, p) for p in PROMPTS]
    for ex, got, want in zip(EXAMPLES, alone, unfolded["first"]):
        assert got["output_ids"] == want["output_ids"], (ex.task, ex.prompt)
        # the store forward of every decoded block is folded into the next block's first forward
        # (the last block's is not run at all: its KV is freed, not published)
        blocks = _blocks(want)
        assert got["meta_info"]["dllm_forwards"] == want["meta_info"]["dllm_forwards"] - blocks, ex.task
        # the same positions but one: each fold carries the previous block (32) in the next forward
        assert got["meta_info"]["dllm_positions"] == want["meta_info"]["dllm_positions"] - BLOCK, ex.task
    ours = sum(o["meta_info"]["dllm_forwards"] for o in alone)
    theirs = sum(o["meta_info"]["dllm_forwards"] for o in unfolded["first"])
    assert ours <= 0.85 * theirs, (ours, theirs)  # bench/results/forwards.md has the measured ratio
    idle_and_clean(folded_server)


def test_folded_batched_cached_and_follow_up_turns(folded_server: Server, unfolded: dict[str, list[dict]]) -> None:
    batched = _batched(folded_server, PROMPTS)  # all 15 share batches; their prompts may be cached
    assert [b["output_ids"] for b in batched] == [w["output_ids"] for w in unfolded["first"]]
    again = _batched(folded_server, PROMPTS)  # prompts cached by now
    assert sum(b["meta_info"]["cached_tokens"] for b in again) > 0
    assert [b["output_ids"] for b in again] == [w["output_ids"] for w in unfolded["first"]]
    # second turns match the tree on the first turn's answer blocks: what the tree holds must be
    # the blocks' final KV (a stale block there would change these answers)
    seconds = _batched(folded_server, _follow_ups(again))
    assert sum(s["meta_info"]["cached_tokens"] for s in seconds) > sum(len(p) for p in PROMPTS) // 4
    assert [s["output_ids"] for s in seconds] == [w["output_ids"] for w in unfolded["second"]]
    idle_and_clean(folded_server)


@pytest.mark.parametrize("mode", ["sync", "tp2"])
def test_folded_in_synchronous_mode_and_under_tensor_parallelism(
    mode: str, tmp_path_factory: pytest.TempPathFactory, neutral_dir: Path, unfolded: dict[str, list[dict]]
) -> None:
    """`--no-dllm-fdfo`: one run per block, several forwards; `--tp 2` (gloo on CPU): every rank
    folds the same blocks on its head shard."""
    args = ["--no-dllm-fdfo"] if mode == "sync" else ["--tp", "2"]
    for server in served(TRAINED_TOY_DIR, args, neutral_dir, tmp_path_factory.mktemp("logs") / f"folded-{mode}.log"):
        got = _batched(server, PROMPTS[:10])
        assert [g["output_ids"] for g in got] == [w["output_ids"] for w in unfolded["first"][:10]]
        alone = _run(server, PROMPTS[-1])
        want = unfolded["first"][-1]
        assert alone["output_ids"] == want["output_ids"]
        assert alone["meta_info"]["dllm_forwards"] == want["meta_info"]["dllm_forwards"] - _blocks(want)
