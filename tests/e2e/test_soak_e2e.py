"""Soak: hundreds of mixed good and bad requests against one server, on loopback (CPU, tiny random
LLaDA2, small max_new_tokens), with SGLang's strict idle leak check on.

`test_soak_mixed_requests_no_5xx_no_hang_no_leak`: 324 requests, 16 at a time: `/generate` (text,
token ids, batched), streaming (to the end, and client disconnects after the first chunk),
`/abort_request` by rid, `/v1/chat/completions`, `/v1/completions` with a token-id prompt, and 18
kinds of bad input (token ids outside the vocabulary or negative, a batch with one bad id, a bad
token-id prompt on /v1/completions, input_embeds of the wrong width and well-shaped ones, negative
max_new_tokens and temperature, an unparsable `regex`, a bad `custom_params.dllm` knob, malformed JSON, empty
input_ids, out-of-vocabulary stop_token_ids with min_new_tokens on /generate and on chat, a
custom_logit_processor, session_params, an invalid stop_regex, an out-of-vocabulary logit_bias key).
Every request has a timeout and the soak must finish within SOAK_BUDGET_S. Asserted: no 5xx, no
timeout or connection error, every good request complete with exactly `max_new_tokens` tokens
(`ignore_eos`), every bad one a 400 naming its field, every aborted one finished with `abort`, and
then the scheduler idle with nothing leaked (`idle_and_clean`).

Both servers commit a whole block per forward (`threshold: 0.0`; the tiny random model is never
confident, and the default 0.95 takes 33 forwards per 32-token block), so the soak fits on 2 cores.
The soak server runs with `--disable-radix-cache` (with the radix cache on, SGLang refuses
input_embeds itself, before the plugin's checks; the radix cache under mixed load and aborts is
covered by test_scheduling_e2e.py, and below by the aborted failed batch) and
`--enable-custom-logit-processor` (without it SGLang refuses custom_logit_processor first; with it,
a malformed processor used to reach the scheduler).

The same soak must fail when the plugin's request validation is off
(`SGLANG_LLADA_DISABLE_REQUEST_VALIDATION=1`, a switch for this test only): on such a server
`test_forward_failure_aborts_its_batch_and_the_server_keeps_serving` first shows that a forward that
fails on one batch's data (token ids outside the vocabulary, on top of a prompt taken from the radix
cache) costs only that batch a 500, with nothing leaked (scheduler/fault_isolation.py's run_batch hook), and
`test_soak_without_validation_fails` then runs a short soak and sees 5xx answers and the scheduler
die (the stop ids / custom logit processor kinds raise while a batch is built, which nothing but the
validation prevents).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import requests

from sglang_llada.server_process import Server, launch
from sglang_llada.testing.server_checks import idle_and_clean

CONCURRENCY = 16
SOAK_REQUESTS = 324  # 9 rounds of the 36-kind cycle below
SOAK_BUDGET_S = 240.0
SHORT_SOAK_REQUESTS = 72
REQUEST_TIMEOUT = (10.0, 60.0)  # (connect, read) seconds, for every request
LONG = 3000  # max_new_tokens of the requests that are aborted or disconnected
STRICT = {"SGLANG_ENABLE_STRICT_MEM_CHECK_DURING_IDLE": "1"}
NO_VALIDATION = {**STRICT, "SGLANG_LLADA_DISABLE_REQUEST_VALIDATION": "1"}
MAX_RUNNING = 8  # fewer than CONCURRENCY: requests queue, and queued ones are aborted too


def _config(model: Path) -> dict[str, Any]:
    return json.loads((model / "config.json").read_text())


def _launch(tmp_path_factory, neutral_dir: Path, model: Path, args: list[str], env: dict[str, str], name: str) -> Server:
    """The server, decoding a whole block per forward: the tiny random model is never confident, and
    with the default threshold 0.95 it would take 33 forwards per 32-token block."""
    workdir = tmp_path_factory.mktemp(name)
    config = workdir / "one_step.yaml"
    config.write_text("threshold: 0.0\n")
    args = [*args, "--dllm-algorithm", "llada2_threshold", "--dllm-algorithm-config", str(config)]
    return launch(model, args, neutral_dir, workdir / f"{name}.log", env_overrides=env)


# ------------------------------------------------------------------------------------------------
# the request mix
# ------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str
    status: Optional[int]  # HTTP status (None: no answer: timeout or connection error)
    problem: Optional[str] = None  # a failed expectation
    error: Optional[str] = None  # the exception, when there was no answer


@dataclass
class Soak:
    url: str
    vocab: int
    hidden: int
    seed: int = 0
    stop_on_no_answer: bool = False  # stop sending once a request got no answer (server dead or hung)
    timeout: tuple[float, float] = REQUEST_TIMEOUT
    stop: threading.Event = field(default_factory=threading.Event)

    # --- helpers ---------------------------------------------------------------------------------

    def _post(self, path: str, **kw: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=self.timeout, **kw)

    def _ids(self, rng: random.Random, n: int) -> list[int]:
        return [rng.randrange(0, self.vocab) for _ in range(n)]

    @staticmethod
    def _length_problem(out: dict, n: int, ids: bool = True) -> Optional[str]:
        meta = out.get("meta_info", {})
        n_ids = len(out.get("output_ids", [])) if ids else n
        if meta.get("completion_tokens") != n or n_ids != n:
            return f"wanted {n} tokens, got {meta.get('completion_tokens')} / {n_ids} ids: {meta}"
        if meta.get("finish_reason") != {"type": "length", "length": n}:
            return f"finish_reason {meta.get('finish_reason')}, wanted length {n}"
        return None

    @staticmethod
    def _bad(r: requests.Response, word: str) -> Optional[str]:
        if r.status_code != 400:
            return f"wanted a 400 naming {word!r}, got {r.status_code}: {r.text[:300]}"
        if word.lower() not in r.text.lower():
            return f"400 without {word!r}: {r.text[:300]}"
        return None

    # --- good requests ---------------------------------------------------------------------------

    def generate_text(self, i: int, rng: random.Random) -> tuple[int, Optional[str]]:
        n = rng.choice([1, 4, 8, 17, 33])
        r = self._post("/generate", json={"text": f"soak {i} " * rng.randrange(1, 8),
                                          "sampling_params": {"max_new_tokens": n, "ignore_eos": True}})
        return r.status_code, (self._length_problem(r.json(), n) if r.status_code == 200 else r.text[:300])

    def generate_ids(self, i: int, rng: random.Random) -> tuple[int, Optional[str]]:
        n = rng.choice([1, 5, 8, 32, 40])
        ids = self._ids(rng, rng.randrange(1, 70)) + [0, self.vocab - 1]  # the edges of the vocabulary
        r = self._post("/generate", json={"input_ids": ids, "sampling_params": {"max_new_tokens": n, "ignore_eos": True}})
        return r.status_code, (self._length_problem(r.json(), n) if r.status_code == 200 else r.text[:300])

    def generate_batch(self, i: int, rng: random.Random) -> tuple[int, Optional[str]]:
        n = rng.choice([3, 8, 16])
        ids = [self._ids(rng, rng.randrange(2, 40)) for _ in range(2)]
        r = self._post("/generate", json={"input_ids": ids, "sampling_params": {"max_new_tokens": n, "ignore_eos": True}})
        if r.status_code != 200:
            return r.status_code, r.text[:300]
        outs = r.json()
        if len(outs) != 2:
            return r.status_code, f"batch of 2 gave {len(outs)} answers"
        return r.status_code, next((p for p in (self._length_problem(o, n) for o in outs) if p), None)

    def stream(self, i: int, rng: random.Random) -> tuple[int, Optional[str]]:
        n = rng.choice([8, 33, 64])
        body = {"text": f"stream {i}", "stream": True, "sampling_params": {"max_new_tokens": n, "ignore_eos": True}}
        with self._post("/generate", json=body, stream=True) as r:
            if r.status_code != 200:
                return r.status_code, r.text[:300]
            chunks = [json.loads(line[6:]) for line in r.iter_lines()
                      if line.startswith(b"data: ") and line != b"data: [DONE]"]
        if not chunks or "error" in chunks[-1]:
            return r.status_code, f"stream ended with {chunks[-1:]}"
        return r.status_code, self._length_problem(chunks[-1], n, ids=False)

    def stream_disconnect(self, i: int, rng: random.Random) -> tuple[int, Optional[str]]:
        body = {"text": f"leave {i}", "stream": True, "sampling_params": {"max_new_tokens": LONG, "ignore_eos": True}}
        with self._post("/generate", json=body, stream=True) as r:
            status = r.status_code
            for line in r.iter_lines():
                if line.startswith(b"data: "):
                    break  # the client leaves after the first chunk; SGLang aborts the request
        return status, None if status == 200 else f"stream answered {status}"

    def abort(self, i: int, rng: random.Random) -> tuple[int, Optional[str]]:
        rid = f"soak-abort-{self.seed:02d}-{i:05d}"  # fixed width: no rid is a prefix of another
        def send_abort() -> None:
            try:
                requests.post(self.url + "/abort_request", json={"rid": rid}, timeout=30)
            except requests.RequestException:
                pass  # the request's own answer tells

        aborts = [threading.Timer(t, send_abort) for t in (0.3, 1.5)]
        for t in aborts:
            t.start()
        try:
            r = self._post("/generate", json={"text": f"abort {i}", "rid": rid,
                                              "sampling_params": {"max_new_tokens": LONG, "ignore_eos": True}})
        finally:
            for t in aborts:
                t.join()
        if r.status_code != 200:
            return r.status_code, r.text[:300]
        reason = r.json()["meta_info"]["finish_reason"]
        return r.status_code, None if reason.get("type") == "abort" else f"not aborted: {reason}"

    def chat(self, i: int, rng: random.Random) -> tuple[int, Optional[str]]:
        n = rng.choice([2, 8, 20])
        r = self._post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": f"hello {i}"}], "max_tokens": n, "ignore_eos": True, "temperature": 0})
        if r.status_code != 200:
            return r.status_code, r.text[:300]
        body = r.json()
        if body["usage"]["completion_tokens"] != n or body["choices"][0]["finish_reason"] != "length":
            return r.status_code, f"chat wanted {n} tokens: {body['usage']}, {body['choices'][0]['finish_reason']}"
        return r.status_code, None

    def completions_ids(self, i: int, rng: random.Random) -> tuple[int, Optional[str]]:
        n = rng.choice([4, 12])
        r = self._post("/v1/completions", json={"prompt": self._ids(rng, rng.randrange(1, 30)), "max_tokens": n,
                                                "ignore_eos": True, "temperature": 0})
        if r.status_code != 200:
            return r.status_code, r.text[:300]
        usage = r.json()["usage"]
        return r.status_code, None if usage["completion_tokens"] == n else f"completions wanted {n}: {usage}"

    # --- bad requests: (endpoint, body or raw text, a word the 400 must contain) ------------------

    def bad_requests(self, rng: random.Random) -> dict[str, tuple[str, Any, str]]:
        v, sp = self.vocab, {"max_new_tokens": 8}
        ids = self._ids(rng, 6)
        vocab_word = "outside this model's vocabulary"
        chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        return {
            "bad_oov_id": ("/generate", {"input_ids": ids + [10**9], "sampling_params": sp}, vocab_word),
            "bad_negative_id": ("/generate", {"input_ids": [-1] + ids, "sampling_params": sp}, vocab_word),
            "bad_batch_one_id": ("/generate", {"input_ids": [ids, ids[:3] + [v]], "sampling_params": sp}, vocab_word),
            "bad_completions_ids": ("/v1/completions", {"prompt": ids + [v + 7], "max_tokens": 4}, vocab_word),
            "bad_embeds_shape": ("/generate", {"input_embeds": [[0.5] * 3] * 4, "sampling_params": sp}, "hidden size"),
            "bad_embeds_diffusion": ("/generate", {"input_embeds": [[0.01] * self.hidden] * 4, "sampling_params": sp},
                                     "input_embeds is not supported"),
            "bad_max_new_tokens": ("/generate", {"text": "x", "sampling_params": {"max_new_tokens": -3}}, "max_new_tokens"),
            "bad_temperature": ("/generate", {"text": "x", "sampling_params": {**sp, "temperature": -0.5}}, "temperature"),
            "bad_regex": ("/generate", {"text": "x", "sampling_params": {**sp, "regex": "(unclosed"}}, "regex"),
            "bad_knob": ("/generate", {"text": "x", "sampling_params": {**sp, "custom_params": {"dllm": {"threshold": 2}}}},
                         "threshold"),
            "bad_json": ("/generate", '{"text": "x", "sampling_params": {', "JSON"),
            "bad_empty_ids": ("/generate", {"input_ids": [], "sampling_params": sp}, "empty"),
            "bad_stop_ids": ("/generate", {"text": "x", "sampling_params": {**sp, "stop_token_ids": [v + 5], "min_new_tokens": 2}},
                             "stop_token_ids"),
            "bad_chat_stop_ids": ("/v1/chat/completions", {**chat, "stop_token_ids": [-2], "min_tokens": 2}, "stop_token_ids"),
            "bad_logit_processor": ("/generate", {"text": "x", "custom_logit_processor": "not-a-processor", "sampling_params": sp},
                                    "custom_logit_processor"),
            "bad_session": ("/generate", {"text": "x", "session_params": {"id": "no-such-session"}, "sampling_params": sp},
                            "session_params"),
            "bad_stop_regex": ("/generate", {"text": "x", "sampling_params": {**sp, "stop_regex": "(unclosed"}}, "stop_regex"),
            "bad_logit_bias": ("/generate", {"text": "x", "sampling_params": {**sp, "logit_bias": {str(v + 1): 1.0}}}, "logit_bias"),
        }

    # --- running ---------------------------------------------------------------------------------

    GOOD = ("generate_text", "generate_ids", "generate_batch", "stream", "stream_disconnect", "abort", "chat",
            "completions_ids", "generate_text")

    def kinds(self) -> list[str]:
        """One cycle: each good kind twice (generate_text four times), each bad kind once."""
        return [*self.GOOD, *self.GOOD, *self.bad_requests(random.Random(0))]

    def one(self, i: int, kind: str) -> Outcome:
        if self.stop.is_set():
            return Outcome(kind, None, error="not sent: the soak stopped")
        rng = random.Random(self.seed * 1_000_003 + i)
        try:
            if kind.startswith("bad_"):
                path, body, word = self.bad_requests(rng)[kind]
                if isinstance(body, str):
                    r = self._post(path, data=body, headers={"Content-Type": "application/json"})
                else:
                    r = self._post(path, json=body)
                return Outcome(kind, r.status_code, self._bad(r, word))
            status, problem = getattr(self, kind)(i, rng)
            return Outcome(kind, status, problem)
        except (requests.RequestException, ValueError, KeyError) as exc:
            if self.stop_on_no_answer:
                self.stop.set()
            return Outcome(kind, None, error=repr(exc)[:300])

    def run(self, n: int) -> tuple[list[Outcome], float]:
        cycle = self.kinds()
        order = [cycle[i % len(cycle)] for i in range(n)]
        random.Random(self.seed).shuffle(order)
        start = time.monotonic()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            outcomes = list(pool.map(self.one, range(n), order))
        return outcomes, time.monotonic() - start


def _summary(outcomes: list[Outcome]) -> str:
    statuses = Counter((o.kind.startswith("bad_"), o.status) for o in outcomes)
    lines = [f"{'bad' if bad else 'good'} -> {status}: {count}" for (bad, status), count in sorted(statuses.items(), key=str)]
    return "; ".join(lines)


def _failures(outcomes: list[Outcome]) -> list[str]:
    out = []
    for o in outcomes:
        if o.status is None:
            out.append(f"{o.kind}: no answer ({o.error})")
        elif o.status >= 500:
            out.append(f"{o.kind}: {o.status} {o.problem or ''}")
        elif o.problem:
            out.append(f"{o.kind}: {o.problem}")
    return out


# ------------------------------------------------------------------------------------------------
# with validation (the plugin as shipped)
# ------------------------------------------------------------------------------------------------

SOAK_ARGS = ["--disable-radix-cache", "--enable-custom-logit-processor", "--max-running-requests", str(MAX_RUNNING)]


@pytest.fixture()
def soak_server(tmp_path_factory, neutral_dir: Path, tiny_checkpoint: Path) -> Iterator[Server]:
    srv = _launch(tmp_path_factory, neutral_dir, tiny_checkpoint, SOAK_ARGS, STRICT, "soak")
    try:
        yield srv
    finally:
        srv.stop()


def test_soak_mixed_requests_no_5xx_no_hang_no_leak(soak_server: Server, tiny_checkpoint: Path) -> None:
    config = _config(tiny_checkpoint)
    soak = Soak(soak_server.url, config["vocab_size"], config["hidden_size"], seed=1, stop_on_no_answer=True)
    assert len(set(soak.bad_requests(random.Random(0)))) >= 10
    outcomes, seconds = soak.run(SOAK_REQUESTS)
    print(f"\nsoak: {len(outcomes)} requests in {seconds:.1f} s at concurrency {CONCURRENCY}: {_summary(outcomes)}")
    failures = _failures(outcomes)
    assert not failures, f"{len(failures)} failed ({_summary(outcomes)}):\n" + "\n".join(failures[:30])
    assert seconds < SOAK_BUDGET_S, f"the soak took {seconds:.0f} s"
    kinds = Counter(o.kind for o in outcomes)
    assert len(kinds) == len(set(soak.kinds())) and min(kinds.values()) >= 5, kinds
    assert soak_server.proc.poll() is None, soak_server.log()[-4000:]
    idle_and_clean(soak_server)
    assert "Scheduler hit an exception" not in soak_server.log()


# ------------------------------------------------------------------------------------------------
# without validation (test-only switch): a forward failure is contained, the soak fails
# ------------------------------------------------------------------------------------------------

UNVALIDATED_ARGS = ["--enable-custom-logit-processor", "--max-running-requests", str(MAX_RUNNING)]


@pytest.fixture(scope="module")
def unvalidated_server(tmp_path_factory, neutral_dir: Path, tiny_checkpoint: Path) -> Iterator[Server]:
    """Radix cache on (SGLang's default): the failed batch below holds a prefix from the tree."""
    srv = _launch(tmp_path_factory, neutral_dir, tiny_checkpoint, UNVALIDATED_ARGS, NO_VALIDATION, "unvalidated")
    try:
        yield srv
    finally:
        srv.stop()


def _generate(url: str, body: dict) -> requests.Response:
    return requests.post(url + "/generate", json=body, timeout=REQUEST_TIMEOUT)


def test_forward_failure_aborts_its_batch_and_the_server_keeps_serving(unvalidated_server: Server, tiny_checkpoint: Path) -> None:
    srv, vocab = unvalidated_server, _config(tiny_checkpoint)["vocab_size"]
    rng = random.Random(3)
    prefix = [rng.randrange(0, vocab) for _ in range(70)]  # two full blocks go to the radix cache
    good = {"input_ids": prefix, "sampling_params": {"max_new_tokens": 8, "ignore_eos": True}}
    r = _generate(srv.url, good)
    assert r.status_code == 200 and r.json()["meta_info"]["completion_tokens"] == 8, r.text

    # Alone: the prompt's cached blocks are matched (and locked), its forward fails on the bad id.
    r = _generate(srv.url, {"input_ids": prefix + [10**9], "sampling_params": {"max_new_tokens": 8}})
    assert r.status_code == 500 and "internal error while running" in r.text, r.text
    assert _generate(srv.url, good).json()["output_ids"]  # still serving

    # Mixed with good requests, 8 at a time: a bad one costs the requests of its batch a 500 (here
    # nearly every batch holds one), nothing else.
    bodies: list[tuple[bool, dict]] = []
    for i in range(24):
        if i % 4 == 3:
            bad_ids = [rng.randrange(0, vocab) for _ in range(rng.randrange(5, 50))]
            bad_ids[rng.randrange(len(bad_ids))] = rng.choice([vocab, -1, 10**9])
            bodies.append((False, {"input_ids": bad_ids, "sampling_params": {"max_new_tokens": 8}}))
        else:
            ids = (prefix if i % 2 else []) + [rng.randrange(0, vocab) for _ in range(rng.randrange(5, 50))]
            bodies.append((True, {"input_ids": ids, "sampling_params": {"max_new_tokens": 16, "ignore_eos": True}}))
    with ThreadPoolExecutor(MAX_RUNNING) as pool:
        answers = list(pool.map(lambda b: _generate(srv.url, b[1]), bodies))
    for (is_good, _), r in zip(bodies, answers):
        if is_good and r.status_code == 200:
            assert r.json()["meta_info"]["completion_tokens"] == 16
        else:  # a bad request, or a good one that shared its batch
            assert r.status_code == 500 and "internal error while running" in r.text, r.text
    assert all(r.status_code == 500 for (is_good, _), r in zip(bodies, answers) if not is_good)
    assert srv.proc.poll() is None
    # Then a full batch of good requests (with the cached prefix too) is served whole.
    wave = [{"input_ids": prefix[: 10 * (i + 1)] + [i], "sampling_params": {"max_new_tokens": 16, "ignore_eos": True}}
            for i in range(MAX_RUNNING)]
    with ThreadPoolExecutor(MAX_RUNNING) as pool:
        answers = list(pool.map(lambda b: _generate(srv.url, b), wave))
    assert [r.status_code for r in answers] == [200] * MAX_RUNNING, [r.text[:200] for r in answers]
    assert all(r.json()["meta_info"]["completion_tokens"] == 16 for r in answers)
    idle_and_clean(srv)  # KV and request slots all back, strict leak check silent, still answers
    assert "Scheduler hit an exception" not in srv.log()
    assert srv.log().count("a diffusion batch failed and was aborted") >= 2


def test_soak_without_validation_fails(unvalidated_server: Server, tiny_checkpoint: Path) -> None:
    """The soak's bad inputs are what the validation stops: without it, 5xx answers and a dead scheduler."""
    config = _config(tiny_checkpoint)
    srv = unvalidated_server
    soak = Soak(srv.url, config["vocab_size"], config["hidden_size"], seed=2, stop_on_no_answer=True,
                timeout=(5.0, 20.0))  # a session request is never answered there; the dead server answers nothing
    start = time.monotonic()
    outcomes, _ = soak.run(SHORT_SOAK_REQUESTS)
    deadline = time.monotonic() + 60
    while srv.proc.poll() is None and "Scheduler hit an exception" not in srv.log() and time.monotonic() < deadline:
        time.sleep(0.5)
    five_xx = [o for o in outcomes if o.status is not None and o.status >= 500]
    died = srv.proc.poll() is not None or "Scheduler hit an exception" in srv.log()
    print(f"\nwithout validation: {_summary(outcomes)}; 5xx: {len(five_xx)} "
          f"({sorted(Counter(o.kind for o in five_xx).items())}); scheduler died: {died}; "
          f"{time.monotonic() - start:.0f} s")
    assert five_xx or died
    assert _failures(outcomes), "the soak passed without validation: it does not exercise it"
