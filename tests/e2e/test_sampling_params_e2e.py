"""logit_bias, min_p and the repetition / frequency / presence penalties through a real server (CPU).

These request parameters used to be accepted with a 200 and silently ignored by our diffusion
decoders; each test checks that the parameter now changes the output the way it should.

One server for most tests: the shipped trained toy, fp32, SGLang's defaults (`llada2_threshold`,
FDFO scheduling: every round is one step of a freshly built batch). A second one with
`--no-dllm-fdfo` (synchronous blocks: one batch for all the steps of a block) checks that the
other scheduling path decodes the same way. The toy was trained on chat-templated prompts; raw
prompts such as "Lower: ABC" or "Upper: abc" make it ramble with heavy repeats, which is what the
penalties are meant to curb. `ignore_eos` keeps every output 64 tokens long
(3 blocks: the penalties must also count the tokens of earlier blocks).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

from sglang_llada.server_process import Server, generate
from sglang_llada.testing.server_checks import served
from sglang_llada.toy import TRAINED_TOY_DIR

PROMPT = "Lower: ABC"
MASK_ID = 260  # the toy's <|mask|>
CANDIDATES = (120, 113, 122, 106, 107, 118)  # "x", "q", "z", "j", "k", "v": rare letters for the greedy output
BASE = {"max_new_tokens": 64, "ignore_eos": True, "temperature": 0}
# llada2_threshold with threshold 0 commits every masked position of a block in its first step
ALL_AT_ONCE = {"dllm": {"threshold": 0.0}}


def _serve(tmp_path_factory: pytest.TempPathFactory, neutral_dir: Path, args: list[str], name: str) -> Iterator[Server]:
    yield from served(TRAINED_TOY_DIR, ["--dtype", "float32", *args], neutral_dir, tmp_path_factory.mktemp("logs") / f"{name}.log")


@pytest.fixture(scope="module")
def server(tmp_path_factory, neutral_dir: Path) -> Iterator[Server]:
    yield from _serve(tmp_path_factory, neutral_dir, [], "sampling-params")


def _ids(server: Server, prompt: str = PROMPT, timeout: float = 180.0, **params: Any) -> list[int]:
    out = generate(server.url, {"text": prompt, "sampling_params": {**BASE, **params}}, timeout=timeout)
    return out["output_ids"]


@pytest.fixture(scope="module")
def greedy(server: Server) -> list[int]:
    ids = _ids(server)
    assert len(ids) == 64
    return ids


@pytest.fixture(scope="module")
def X(greedy: list[int]) -> int:  # noqa: N802  (a token id, named as the tests use it)
    """A token the greedy output never uses."""
    return next(t for t in CANDIDATES if t not in greedy)


def test_logit_bias_forces_a_token_and_removes_one(server: Server, greedy: list[int], X: int) -> None:  # noqa: N803
    assert X not in greedy
    assert _ids(server, logit_bias={str(X): 100.0}) == [X] * 64
    # sampling too: the bias is applied before the temperature
    assert _ids(server, temperature=1.0, sampling_seed=5, logit_bias={str(X): 100.0}) == [X] * 64
    top, _ = Counter(greedy).most_common(1)[0]
    banned = _ids(server, logit_bias={str(top): -100.0})
    assert top not in banned and len(banned) == 64
    # a zero bias changes nothing (the fast path is not taken, the result is the same)
    assert _ids(server, logit_bias={str(X): 0.0}) == greedy


def test_logit_bias_on_the_mask_token_cannot_hang_a_request(server: Server) -> None:
    """Committing the mask id leaves a position masked for ever; no step ever writes it (base.py `scored`)."""
    ids = _ids(server, timeout=120.0, logit_bias={str(MASK_ID): 100.0})
    assert len(ids) == 64 and MASK_ID not in ids


def test_min_new_tokens_keeps_stop_tokens_out_of_the_first_outputs(server: Server) -> None:
    """The trained toy answers "Add: 012+034" with "0046" and an end-of-text token; with
    min_new_tokens it may not stop before that many tokens (as SGLang's autoregressive penalizer)."""
    from sglang_llada.eval import render_prompts
    from sglang_llada.toy.tasks import Example

    prompt = render_prompts([Example("add", "Add: 012+034", "0046")])[0]
    eos = {257, 265}  # the toy's <|endoftext|> / <|role_end|>
    params = {"max_new_tokens": 40, "temperature": 0}
    short = generate(server.url, {"text": prompt, "sampling_params": params}, timeout=180)
    assert short["text"].strip() == "0046" and len(short["output_ids"]) <= 5
    for n in (10, 33):  # within the first block, and across two blocks
        out = generate(server.url, {"text": prompt, "sampling_params": {**params, "min_new_tokens": n}}, timeout=180)
        ids = out["output_ids"]
        assert len(ids) >= n and not eos & set(ids[:n]), (n, ids)
        assert out["text"].startswith("0046")


def test_hot_sampling_never_writes_the_mask_token(server: Server) -> None:
    """At temperature 2 the trained toy draws the mask id itself now and then; before the mask id
    was excluded from every step's candidates, seed 3 on this prompt re-ran its block for ever."""
    for seed in (3, 4, 5):
        ids = _ids(server, "Lower: ABC", timeout=120.0, temperature=2.0, sampling_seed=seed)
        assert len(ids) == 64 and MASK_ID not in ids, seed


# The penalties' prompt: the toy of 2026-12-07 rambles on it over 11 distinct tokens in 64, its
# most repeated letter 14 times. The toy falls back on spaces when its letters are penalised (a space
# may even grow more frequent), so the spread is measured on the other tokens. The arithmetic of
# each penalty is checked exactly by tests/kernels/test_logit_adjust.py.
PENALTY_PROMPT = "Upper: abc"
SPACE = 32


@pytest.mark.parametrize(
    "penalty",
    [{"repetition_penalty": 1.3}, {"frequency_penalty": 0.5}, {"presence_penalty": 2.0}],
    ids=["repetition", "frequency", "presence"],
)
def test_penalties_reduce_repeats(server: Server, penalty: dict[str, float]) -> None:
    greedy = _ids(server, PENALTY_PROMPT)
    top, count = next((t, n) for t, n in Counter(greedy).most_common() if t != SPACE)
    assert count >= 10 and len(set(greedy)) <= 16  # the unpenalised toy repeats a few letters heavily
    ids = _ids(server, PENALTY_PROMPT, **penalty)
    assert len(ids) == 64
    assert ids.count(top) < count, (penalty, ids.count(top), count)
    assert len(set(ids)) > len(set(greedy)), (penalty, len(set(ids)), len(set(greedy)))  # spread over more tokens


def test_neutral_penalty_values_change_nothing(server: Server, greedy: list[int]) -> None:
    assert _ids(server, repetition_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0) == greedy


def test_min_p_one_samples_the_argmax(server: Server) -> None:
    """min_p = 1 keeps only the most probable token: at any temperature and seed the sampled output
    is the argmax at every commit. Sampled rows report the probability renormalised over the kept
    tokens (1 here), so every masked position of a block passes the 0.95 threshold at once: the
    greedy twin is the same request with threshold 0 (all positions committed in the first step)."""
    greedy_all = _ids(server, custom_params=ALL_AT_ONCE)
    assert _ids(server, temperature=1.5, sampling_seed=1) != greedy_all  # without min_p it differs
    for seed in (1, 2, 3):
        assert _ids(server, temperature=1.5, sampling_seed=seed, min_p=1.0) == greedy_all


def test_min_p_keeps_every_greedy_draw(server: Server) -> None:
    """Same seed, same noise: with all positions of the first block committed in one step (so every
    position draws from the same distribution with and without min_p), a position whose unfiltered
    draw was the argmax still draws it under min_p (the argmax always passes), and min_p only turns
    low-probability draws into likelier ones."""
    params = {"max_new_tokens": 16, "custom_params": ALL_AT_ONCE}  # 10 prompt tokens: one block
    argmax = _ids(server, **params)
    kept_free = kept_min_p = 0
    for seed in range(1, 7):
        free = _ids(server, temperature=1.0, sampling_seed=seed, **params)
        filtered = _ids(server, temperature=1.0, sampling_seed=seed, min_p=0.3, **params)
        for a, f, g in zip(argmax, free, filtered):
            assert f != a or g == a
        kept_free += sum(f == a for a, f in zip(argmax, free))
        kept_min_p += sum(g == a for a, g in zip(argmax, filtered))
    assert kept_min_p > kept_free


def test_batch_rows_do_not_leak_into_each_other(server: Server, greedy: list[int], X: int) -> None:  # noqa: N803
    penalised = _ids(server, presence_penalty=2.0)
    biased = _ids(server, "hello", logit_bias={str(X): 100.0})
    plain = _ids(server, "hello")
    out = generate(server.url, {
        "text": [PROMPT, "hello", PROMPT, "hello"],
        "sampling_params": [{**BASE, "presence_penalty": 2.0}, BASE, BASE, {**BASE, "logit_bias": {str(X): 100.0}}],
    }, timeout=300.0)
    assert [o["output_ids"] for o in out] == [penalised, plain, greedy, biased]


def test_synchronous_blocks_decode_the_same(tmp_path_factory, neutral_dir: Path, server: Server, X: int) -> None:  # noqa: N803
    """`--no-dllm-fdfo`: one batch for all the steps of a block (the counts are built once per
    block); the outputs equal the FDFO server's, parameter for parameter."""
    cases = [{}, {"repetition_penalty": 1.3}, {"frequency_penalty": 0.5}, {"presence_penalty": 2.0},
             {"logit_bias": {str(X): 5.0, "112": -3.0}}, {"temperature": 1.5, "sampling_seed": 3, "min_p": 0.3}]
    want = [_ids(server, **c) for c in cases]
    for sync in _serve(tmp_path_factory, neutral_dir, ["--no-dllm-fdfo"], "sampling-params-sync"):
        assert [_ids(sync, **c) for c in cases] == want
