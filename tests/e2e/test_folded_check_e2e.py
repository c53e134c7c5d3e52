"""The editing decoders' folded final check (fold_store, on by default on the CPU platform;
algorithms/folded_check.py) through the stock server on the shipped 2.1 and 2.2 toys, which it
detects as LLaDA2.1 (llada2_edit) and LLaDA2.2 (llada2_levenshtein): token for token the output of
`fold_store: off` on held-out prompts, greedy and seeded-sampled (`sglang-llada eval --temperature`
requests: one seed each), alone and batched, in FDFO and synchronous mode and under `--tp 2`, with
the same logprobs and trajectory, and exactly one forward fewer per block boundary.

Each server runs its requests and is stopped before the next starts (one at a time on 2 cores)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sglang_llada.eval import render_prompts
from sglang_llada.server_process import Server, generate
from sglang_llada.testing.server_checks import idle_and_clean, served, strict_server
from sglang_llada.toy import TOY_21_DIR, TOY_22_DIR
from sglang_llada.toy.tasks import heldout_split

EXAMPLES = heldout_split()[:10]  # 2 of each task
PROMPTS = render_prompts(EXAMPLES)
MAX_NEW = 96
BLOCK = 32
TEMPERATURE = {"2.1": 2.0, "2.2": 1.0}  # 2.1 at 2.0: most checks edit; the 2.2 toy at 2.0 is slow
TOYS = {"2.1": TOY_21_DIR, "2.2": TOY_22_DIR}


def _params(temperature: float, i: int, traced: bool) -> dict[str, Any]:
    params: dict[str, Any] = {"max_new_tokens": MAX_NEW, "temperature": temperature, "skip_special_tokens": False}
    if temperature > 0:
        params["sampling_seed"] = 11 + i  # as `sglang-llada eval --temperature T --seed 11`
    if traced:
        params["custom_params"] = {"dllm_trace": True}
    return params


def _one(server: Server, i: int, temperature: float, traced: bool = False) -> dict:
    payload = {"text": PROMPTS[i], "sampling_params": _params(temperature, i, traced), "return_logprob": traced}
    return generate(server.url, payload)


def _runs(server: Server, temperature: float, batched: bool, traced: bool = False) -> list[dict]:
    if not batched:
        return [_one(server, i, temperature, traced) for i in range(len(PROMPTS))]
    with ThreadPoolExecutor(max_workers=len(PROMPTS)) as pool:
        return list(pool.map(lambda i: _one(server, i, temperature, traced), range(len(PROMPTS))))


def _blocks(out: dict) -> int:
    """Blocks the request decoded: from the block holding its first output token to its last."""
    p, c = out["meta_info"]["prompt_tokens"], out["meta_info"]["completion_tokens"]
    return -(-(p + c) // BLOCK) - p // BLOCK


def _decode_all(server: Server, generation: str, batched: bool) -> dict[str, list[dict]]:
    t = TEMPERATURE[generation]
    return {
        "greedy": _runs(server, 0.0, batched),
        "sampled": _runs(server, t, batched, traced=not batched),
    }


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory, neutral_dir: Path) -> dict[str, Any]:
    """Per toy: `fold_store: off` alone; the default (folded) server alone and batched, with its log."""
    logs = tmp_path_factory.mktemp("logs")
    cfg = tmp_path_factory.mktemp("algo") / "algorithm.yaml"
    cfg.write_text("fold_store: 'off'\n")
    out: dict[str, Any] = {}
    for generation, toy in TOYS.items():
        for server in served(toy, ["--dllm-algorithm-config", str(cfg)], neutral_dir, logs / f"off-{generation}.log"):
            out[generation, "off"] = _decode_all(server, generation, batched=False)
        for server in strict_server(toy, [], neutral_dir, logs / f"on-{generation}.log"):
            out[generation, "on"] = _decode_all(server, generation, batched=False)
            out[generation, "on-batched"] = _decode_all(server, generation, batched=True)
            out[generation, "log"] = server.log()
            idle_and_clean(server)
    return out


def _same_tokens(got: list[dict], want: list[dict]) -> None:
    for ex, g, w in zip(EXAMPLES, got, want):
        assert g["output_ids"] == w["output_ids"], (ex.task, g["text"], w["text"])
        assert g["meta_info"]["finish_reason"] == w["meta_info"]["finish_reason"]


@pytest.mark.parametrize("generation", ["2.1", "2.2"])
def test_folded_check_equals_unfolded_in_one_forward_fewer_per_block(outputs: dict[str, Any], generation: str) -> None:
    log = outputs[generation, "log"]
    algorithm = "llada2_edit" if generation == "2.1" else "llada2_levenshtein"
    assert f"{algorithm} folds each finished block's KV store" in log
    if generation == "2.1":  # sampled at 2.0, checks find edits: the rollback path ran
        assert "changed by its check, checked again" in log
    saved = theirs = 0
    for kind in ("greedy", "sampled"):
        want = outputs[generation, "off"][kind]
        for got in (outputs[generation, "on"][kind], outputs[generation, "on-batched"][kind]):
            _same_tokens(got, want)
            for ex, g, w in zip(EXAMPLES, got, want):
                # FDFO: a request's forwards are its own steps, whatever shares its batch; each block
                # boundary saves its check's forward (it rides in the next block's first forward)
                fewer = w["meta_info"]["dllm_forwards"] - g["meta_info"]["dllm_forwards"]
                assert fewer == _blocks(w) - 1, (ex.task, kind, fewer, _blocks(w))
                saved, theirs = saved + fewer, theirs + w["meta_info"]["dllm_forwards"]
    assert saved > 0.1 * theirs, (saved, theirs)  # bench/results/forwards_folded_check.md has the ratios


@pytest.mark.parametrize("generation", ["2.1", "2.2"])
def test_folded_check_keeps_logprobs_and_trajectory(outputs: dict[str, Any], generation: str) -> None:
    """Sampled requests with `return_logprob` and `dllm_trace`: the same logprobs; the trajectory's
    forward numbers those of the unfolded decoder less the forwards folding saved before each block
    (0 in the first block, +1 per boundary), its rewrites at the same tokens."""
    for g, w in zip(outputs[generation, "on"]["sampled"], outputs[generation, "off"]["sampled"]):
        gm, wm = g["meta_info"], w["meta_info"]
        # float32 noise only: a folded forward computes the block's logits in a forward of another
        # shape (the held block beside it), so the last bits of a logprob differ (2.1e-4 at most
        # seen, on the 2.1 toy of 2026-12-07, at a logprob of -0.028); the tokens are identical
        assert [x[0] for x in gm["output_token_logprobs"]] == pytest.approx([x[0] for x in wm["output_token_logprobs"]], abs=5e-4)
        shift = [b - a for a, b in zip(gm["dllm_committed_at"], wm["dllm_committed_at"])]
        assert shift[0] == 0 and all(d - c in (0, 1) for c, d in zip(shift, shift[1:])), shift
        for a, b, d in zip(gm["dllm_rewritten_at"], wm["dllm_rewritten_at"], shift):
            assert (a is None) == (b is None) and (a is None or b - a == d)


def test_folded_check_in_synchronous_mode_under_tensor_parallelism(
    tmp_path_factory: pytest.TempPathFactory, neutral_dir: Path, outputs: dict[str, Any]
) -> None:
    """`--no-dllm-fdfo --tp 2` (gloo on CPU): one run per block, every rank holds back, checks and
    rolls back the same blocks on its head shard; batched, greedy and sampled."""
    log = tmp_path_factory.mktemp("logs") / "on-sync-tp2.log"
    for server in served(TOY_21_DIR, ["--no-dllm-fdfo", "--tp", "2"], neutral_dir, log):
        got = _decode_all(server, "2.1", batched=True)
        for kind in ("greedy", "sampled"):
            _same_tokens(got[kind], outputs["2.1", "off"][kind])
