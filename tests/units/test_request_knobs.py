"""Per-request decoding knobs (`custom_params: {"dllm": {...}}`): validation, per-row decoding, e2e.

Unit part: the same fake forward batches as tests/units/test_algorithms_units.py, with the requests' knobs
on the batch's sampling info (`BatchKnobs`, one entry per row, as the scheduler hook pins it). A
batch whose rows carry different knobs must decode each row exactly as that row alone on a server
configured with the row's resolved knobs (lock-step against single-row runs, synchronous and FDFO
regrouping), with no host sync but the done list. V = 16 with DELETE 13, SPLIT 14, MASK 15 set in
every DllmConfig (a LLaDA2.2 checkpoint), so the trajectories also check that no algorithm but
llada2_levenshtein ever writes a control token.

E2E part: one CPU fp32 tiny-toy server (conftest's `fp32_server`, default algorithm
llada2_threshold): a request's threshold changes its own forward count and output, concurrent
requests without knobs keep their solo outputs, bad knobs are a 400 naming the knob and the server
keeps serving, batched /generate items and the OpenAI chat endpoint go through the same path.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Optional, Sequence

import pytest
import torch
from sglang.srt.dllm.config import DllmConfig

from sglang_llada.algorithms.edit import EditAlgorithm
from sglang_llada.algorithms.knobs import REQUEST_STEP_CAP
from sglang_llada.algorithms.levenshtein import LevenshteinAlgorithm
from sglang_llada.algorithms.unmask import (
    FactorAlgorithm,
    StaticAlgorithm,
    ThresholdAlgorithm,
)
from sglang_llada.kernels.testing import host_syncs
from sglang_llada.testing.batch_knobs import with_request_knobs

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
V = 16
D, P, M = 13, 14, 15  # DELETE, SPLIT, MASK
ALL = (ThresholdAlgorithm, StaticAlgorithm, FactorAlgorithm, EditAlgorithm, LevenshteinAlgorithm)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def make(cls: type, knobs: Optional[dict[str, Any]] = None, s: int = 8) -> Any:
    return cls(DllmConfig(algorithm=cls.NAME, algorithm_config=knobs or {}, block_size=s, mask_id=M,
                          max_running_requests=8, delete_token_id=D, split_token_id=P))


def info(custom: Sequence[Any], temps: Optional[Sequence[float]] = None) -> SimpleNamespace:
    """A SamplingBatchInfo stand-in: the rows' custom_params; greedy unless `temps` is given."""
    if temps is None:
        return with_request_knobs(SimpleNamespace(is_all_greedy=True), custom)
    n = len(temps)
    return with_request_knobs(SimpleNamespace(
        temperatures=torch.tensor(temps, device=DEVICE).view(-1, 1),
        top_ps=torch.ones(n, device=DEVICE),
        top_ks=torch.full((n,), 1 << 30, dtype=torch.int32, device=DEVICE),
        sampling_seed=None, is_all_greedy=False, need_top_p_sampling=False, need_top_k_sampling=False,
    ), custom)


def dllm(knobs: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    return None if knobs is None else {"dllm": knobs}


def batch(ids: Sequence[Sequence[int]], positions: Optional[torch.Tensor] = None, rids: Optional[list[str]] = None,
          sampling_info: Any = None) -> SimpleNamespace:
    t = torch.tensor(ids, dtype=torch.int64, device=DEVICE)
    b, s = t.shape
    return SimpleNamespace(
        input_ids=t.reshape(-1).clone(), batch_size=b, dllm_prompt_mask=None,
        positions=torch.arange(b * s, dtype=torch.int32, device=DEVICE) if positions is None else positions,
        sampling_info=sampling_info, rids=rids or [f"r{i}" for i in range(b)],
    )


def ids_of(fb: SimpleNamespace) -> list[list[int]]:
    return fb.input_ids.view(fb.batch_size, -1).tolist()


def random_logits(g: torch.Generator, n: int, cls: type) -> torch.Tensor:
    """[n, V], often confident, DELETE / SPLIT favoured. MASK is -inf except for llada2_levenshtein
    (which excludes it itself): the other algorithms may commit a literal mask id, which would only
    make a random trajectory longer."""
    x = torch.randn(n, V, generator=g) * (torch.rand(n, 1, generator=g) * 8)
    x[:, [D, P]] += torch.rand(n, 2, generator=g) * 6
    if cls is not LevenshteinAlgorithm:
        x[:, M] = float("-inf")
    return x.to(DEVICE)


def random_blocks(g: torch.Generator, b: int, s: int) -> list[list[int]]:
    out = []
    for _ in range(b):
        p = int(torch.randint(0, s - 1, (1,), generator=g))
        out.append(torch.randint(0, D, (p,), generator=g).tolist() + [M] * (s - p))
    return out


def solo_config(algo: Any, knobs: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The server config under which a request with `knobs` decodes alone: every knob explicit."""
    return dict(algo.resolve_request(algo.check_request_knobs(knobs)))


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------


def test_request_knobs_declared_per_algorithm() -> None:
    names = {cls.NAME: [k.name for k in cls.REQUEST_KNOBS] for cls in ALL}
    assert names == {
        "llada2_threshold": ["threshold"],
        "llada2_static": ["tokens_per_step"],
        "llada2_factor": ["factor"],
        "llada2_edit": ["mode", "threshold", "edit_threshold", "max_edit_steps"],
        "llada2_levenshtein": ["mode", "threshold", "edit_threshold", "max_edit_steps", "max_indel_steps"],
    }
    for cls in ALL:  # the same Knob objects as the server's, step budgets capped
        server = {k.name: k for k in cls.KNOBS}
        for k in cls.REQUEST_KNOBS:
            assert k == server[k.name] or (k.name.endswith("_steps") and k.high == REQUEST_STEP_CAP)


@pytest.mark.parametrize(
    ("cls", "dllm_value", "words"),
    [
        (ThresholdAlgorithm, {"threshold": 1.5}, ["custom_params.dllm.threshold", "a number in [0, 1]", "1.5"]),
        (ThresholdAlgorithm, {"threshold": "0.9"}, ["custom_params.dllm.threshold", "a number", "'0.9'"]),
        (ThresholdAlgorithm, {"threshold": None}, ["custom_params.dllm.threshold", "None"]),
        (ThresholdAlgorithm, {"treshold": 0.9}, ["`treshold`", "not a per-request knob", "may set: threshold"]),
        (ThresholdAlgorithm, {"sampling": "greedy"}, ["`sampling`", "server-wide"]),
        (ThresholdAlgorithm, [0.9], ["custom_params.dllm must be a JSON object", "list"]),
        (ThresholdAlgorithm, 0.9, ["custom_params.dllm must be a JSON object", "float"]),
        (StaticAlgorithm, {"tokens_per_step": 2.5}, ["tokens_per_step", "an integer in [1, inf)"]),
        (StaticAlgorithm, {"tokens_per_step": True}, ["tokens_per_step", "True"]),
        (StaticAlgorithm, {"tokens_per_step": 0}, ["tokens_per_step", "[1, inf)"]),
        (FactorAlgorithm, {"factor": 0}, ["custom_params.dllm.factor", "(0, inf)"]),
        (FactorAlgorithm, {"factor": float("nan")}, ["factor"]),
        (EditAlgorithm, {"mode": "X"}, ["mode", "one of 'none', 'Q', 'S'"]),
        (EditAlgorithm, {"max_edit_steps": REQUEST_STEP_CAP + 1}, ["max_edit_steps", "an integer in [0, 64]"]),
        (EditAlgorithm, {"edit_threshold": -0.1}, ["edit_threshold", "[0, 1]"]),
        (EditAlgorithm, {"max_indel_steps": 3}, ["`max_indel_steps`", "not a per-request knob",
                                                 "mode, threshold, edit_threshold, max_edit_steps"]),
        (LevenshteinAlgorithm, {"mode": "none"}, ["mode", "one of 'Q', 'S'"]),
        (LevenshteinAlgorithm, {"max_indel_steps": 65}, ["max_indel_steps", "[0, 64]"]),
    ],
)
def test_invalid_request_knobs_name_knob_range_and_algorithm(cls: type, dllm_value: Any, words: list[str]) -> None:
    with pytest.raises(ValueError) as err:
        cls.check_request_knobs(dllm_value)
    msg = str(err.value)
    assert all(w in msg for w in words), msg
    assert f"server algorithm {cls.NAME}" in msg
    # the scheduler-side check (SGLang's DllmAlgorithm.validate_request) refuses it too
    req = SimpleNamespace(sampling_params=SimpleNamespace(custom_params={"dllm": dllm_value}))
    assert cls.validate_request(req) == msg


def test_valid_request_knobs_are_converted() -> None:
    assert ThresholdAlgorithm.check_request_knobs({"threshold": 1}) == {"threshold": 1.0}
    assert isinstance(ThresholdAlgorithm.check_request_knobs({"threshold": 0})["threshold"], float)
    assert ThresholdAlgorithm.check_request_knobs(None) == {} == ThresholdAlgorithm.check_request_knobs({})
    assert LevenshteinAlgorithm.check_request_knobs({"max_indel_steps": 64, "mode": "S"}) == {
        "max_indel_steps": 64, "mode": "S"}
    for custom in (None, {}, {"thinking_budget": 3}, {"dllm": {"threshold": 0.5}}, "not a dict"):
        assert ThresholdAlgorithm.validate_request(SimpleNamespace(sampling_params=SimpleNamespace(custom_params=custom))) is None


def test_mode_precedence_request_keys_then_request_mode_then_server() -> None:
    algo = make(EditAlgorithm, {"threshold": 0.8, "max_edit_steps": 7})  # mode none: edit_threshold 0.9

    def resolved(knobs: dict[str, Any]) -> tuple[Any, ...]:
        r = algo.resolve_request(algo.check_request_knobs(knobs))
        return r["mode"], r["threshold"], r["edit_threshold"], r["max_edit_steps"]

    assert resolved({}) == ("none", 0.8, 0.9, 7)
    assert resolved({"mode": "Q"}) == ("Q", 0.7, 0.5, 16)  # the request's preset beats the server's keys
    assert resolved({"mode": "S", "threshold": 0.9}) == ("S", 0.9, 0.0, 16)
    assert resolved({"edit_threshold": 0.1}) == ("none", 0.8, 0.1, 7)
    lev = make(LevenshteinAlgorithm, {"mode": "S", "max_indel_steps": 100})
    r = lev.resolve_request(lev.check_request_knobs({"mode": "Q", "max_edit_steps": 2}))
    assert (r["threshold"], r["edit_threshold"], r["max_edit_steps"], r["max_indel_steps"]) == (0.7, 0.5, 2, 100)


def test_request_policy_refuses_bad_knobs_with_a_400_message() -> None:
    from sglang_llada.tokenizer.request_checks import validate_one_request_after

    def manager(algorithm: Optional[str]) -> SimpleNamespace:
        return SimpleNamespace(server_args=SimpleNamespace(dllm_algorithm=algorithm),
                               model_config=SimpleNamespace(get_default_sampling_params=lambda: {}))

    def req(custom: Any) -> SimpleNamespace:
        return SimpleNamespace(sampling_params={"max_new_tokens": 8, "custom_params": custom}, return_logprob=False,
                               logprob_start_len=-1, top_logprobs_num=0, token_ids_logprob=None)

    validate_one_request_after(None, manager("llada2_threshold"), req({"dllm": {"threshold": 0.5}}), [1])
    validate_one_request_after(None, manager("llada2_threshold"), req({"other": 1}), [1])
    with pytest.raises(ValueError, match=r"custom_params\.dllm\.threshold must be a number in \[0, 1\], got 2"):
        validate_one_request_after(None, manager("llada2_threshold"), req({"dllm": {"threshold": 2}}), [1])
    with pytest.raises(ValueError, match="server algorithm llada2_edit"):
        validate_one_request_after(None, manager("llada2_edit"), req({"dllm": {"max_edit_steps": 65}}), [1])
    with pytest.raises(ValueError, match="need one of sglang-llada's algorithms.*LowConfidence"):
        validate_one_request_after(None, manager("LowConfidence"), req({"dllm": {"threshold": 0.5}}), [1])
    validate_one_request_after(None, manager("LowConfidence"), req({"dllm": {}}), [1])  # nothing asked
    validate_one_request_after(None, manager(None), req({"dllm": {"threshold": 7}}), [1])  # not a diffusion server


def test_knobs_are_validated_once_and_travel_as_records() -> None:
    """The scheduler's check validates a request's knobs once and keeps them on it as a frozen
    `RequestKnobs`; the batch hook pins the rows' records (`BatchKnobs`, row order) on diffusion
    batches in which some request sets any; a step reads them without parsing custom_params again."""
    import dataclasses

    from sglang_llada.algorithms.knobs import BatchKnobs, RequestKnobs
    from sglang_llada.scheduler.batch_policy import from_schedule_batch_after
    from sglang_llada.state import peek

    def reqs(*customs: Any) -> list[SimpleNamespace]:
        out = [SimpleNamespace(sampling_params=SimpleNamespace(custom_params=c, sampling_seed=None)) for c in customs]
        for r in out:
            assert ThresholdAlgorithm.validate_request(r) is None
        return out

    def sb(customs: list[SimpleNamespace], dllm_batch: bool = True) -> SimpleNamespace:
        return SimpleNamespace(reqs=customs, is_dllm=lambda: dllm_batch)

    rs = reqs(None, {"dllm": {"threshold": 0}})
    assert peek(rs[0], RequestKnobs) is None
    knobs = peek(rs[1], RequestKnobs)
    assert knobs is not None and dict(knobs.values) == {"threshold": 0.0} and isinstance(knobs.values["threshold"], float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        knobs.values = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        knobs.values["threshold"] = 0.5  # type: ignore[index]
    result = SimpleNamespace(custom_params=None, sampling_seed=None)
    assert from_schedule_batch_after(result, None, sb(rs)) is result
    assert peek(result, BatchKnobs) == BatchKnobs((None, knobs)) and result.custom_params is None
    # the step reads the records only: custom_params changed after the check are not read again
    rs[1].sampling_params.custom_params = {"dllm": {"threshold": 7}}
    algo = make(ThresholdAlgorithm)
    fb = batch([[M] * 8] * 2, sampling_info=result)
    assert algo.row_knobs(fb)["threshold"].tolist() == [0.949999988079071, 0.0]
    for customs, is_dllm in (((None, {"x": 1}), True), ((None, {"dllm": {"threshold": 0.1}}), False)):
        result = SimpleNamespace(custom_params=None, sampling_seed=None)
        from_schedule_batch_after(result, None, sb(reqs(*customs), is_dllm))
        assert peek(result, BatchKnobs) is None and result.sampling_seed is None
    # an editing decoder's request `mode` is resolved then too: its preset under the request's own keys
    edit_req = SimpleNamespace(sampling_params=SimpleNamespace(custom_params={"dllm": {"mode": "S", "threshold": 0.6}}))
    assert EditAlgorithm.validate_request(edit_req) is None
    assert dict(peek(edit_req, RequestKnobs).values) == {  # type: ignore[union-attr]
        "mode": "S", "threshold": 0.6, "edit_threshold": 0.0, "max_edit_steps": 16,
    }


# ----------------------------------------------------------------------------------------------
# per-row decoding
# ----------------------------------------------------------------------------------------------

ROW_KNOBS: dict[type, tuple[dict[str, Any], list[Optional[dict[str, Any]]]]] = {
    # class: (server config, one request's knobs per row)
    ThresholdAlgorithm: ({}, [None, {"threshold": 0.3}, {"threshold": 0}, {"threshold": 1}, {}]),
    StaticAlgorithm: ({"tokens_per_step": 2}, [{"tokens_per_step": 1}, None, {"tokens_per_step": 5},
                                               {"tokens_per_step": 10**12}]),
    FactorAlgorithm: ({}, [None, {"factor": 0.1}, {"factor": 3.0}, {"factor": 1e300}]),
    EditAlgorithm: ({"mode": "Q"}, [None, {"mode": "S"}, {"mode": "none", "max_edit_steps": 0},
                                    {"edit_threshold": 0.2, "max_edit_steps": 64}, {"threshold": 0.5}]),
    LevenshteinAlgorithm: ({}, [None, {"mode": "S"}, {"max_indel_steps": 0}, {"max_indel_steps": 64, "max_edit_steps": 2},
                                {"threshold": 0.9, "edit_threshold": 0.3, "max_edit_steps": 0}]),
}


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.NAME)
def test_rows_decode_as_if_alone_with_their_knobs(cls: type, seed: int, sampled: bool) -> None:
    """Lock-step: the batch and, per row, a single-row run under the row's resolved knobs as server
    config, fed the same logits: same tokens and done flags at every step. Also: no control token
    is ever written (llada2_levenshtein consumes them in the step that writes them)."""
    server, row_knobs = ROW_KNOBS[cls]
    s, b = 8, len(row_knobs)
    g = torch.Generator().manual_seed(seed)
    algo = make(cls, server, s)
    blocks = random_blocks(g, b, s)
    temps = [0.7 + 0.1 * i for i in range(b)] if sampled else None
    fb = batch(blocks, sampling_info=info([dllm(k) for k in row_knobs], temps))
    states = algo.init_step_state(fb)
    solos = []
    for r, knobs in enumerate(row_knobs):
        solo = make(cls, solo_config(algo, knobs), s)
        sfb = batch([blocks[r]], positions=fb.positions[r * s:(r + 1) * s], rids=[f"r{r}"],
                    sampling_info=info([None], None if temps is None else [temps[r]]))
        solos.append((solo, sfb, solo.init_step_state(sfb)))
    prompt_lens = [sum(1 for t in blk if t != M) for blk in blocks]
    for _ in range(algo.max_steps(s)):
        logits = random_logits(g, b * s, cls)
        before = logits.clone()
        done = algo.step(fb, logits, states)
        assert torch.equal(logits, before)  # excluded logit columns are restored
        after = ids_of(fb)
        for r, (solo, sfb, sst) in enumerate(solos):
            sdone = solo.step(sfb, logits[r * s:(r + 1) * s].clone(), sst)
            assert ids_of(sfb)[0] == after[r] and sdone == [done[r]], (r, row_knobs[r])
            assert not any(t in (D, P) for t in after[r][prompt_lens[r]:])
        if all(done):
            break
    assert all(done)


def test_rows_of_one_batch_really_differ() -> None:
    """A 0 threshold commits the whole block at once; the server's 0.95 one position per step."""
    algo = make(ThresholdAlgorithm)
    fb = batch([[M] * 8] * 2, sampling_info=info([None, dllm({"threshold": 0.0})]))
    logits = torch.zeros(16, V, device=DEVICE)
    logits[:, 3] = 1.0  # token 3 everywhere, never confident
    logits[:, [D, P]] = 9.0  # control tokens would win, were they not excluded
    algo.step(fb, logits, [None] * 2)
    assert ids_of(fb) == [[3] + [M] * 7, [3] * 8]


def test_fdfo_rows_keep_state_and_read_knobs_in_batch_order() -> None:
    """FDFO rounds regroup requests (carried states, fresh rows, another order); each round's
    custom_params follows that order. Every request decodes as alone under its own knobs."""
    s = 6
    g = torch.Generator().manual_seed(7)
    for cls in (EditAlgorithm, LevenshteinAlgorithm):
        algo = make(cls, {}, s)
        knobs = [None, {"max_edit_steps": 1}, {"mode": "S", "max_edit_steps": 3}, {"threshold": 0.2}]
        blocks = random_blocks(g, len(knobs), s)
        steps = 2 * algo.max_steps(s)
        logits = [[random_logits(g, s, cls) for _ in range(steps)] for _ in knobs]
        positions = [torch.arange(r * 100, r * 100 + s, dtype=torch.int32, device=DEVICE) for r in range(len(knobs))]
        # alone
        alone = []
        for r, k in enumerate(knobs):
            solo = make(cls, solo_config(algo, k), s)
            sfb = batch([blocks[r]], positions=positions[r], rids=[f"q{r}"], sampling_info=info([None]))
            sst = solo.init_step_state(sfb)
            trace = []
            for t in range(steps):
                d = solo.step(sfb, logits[r][t].clone(), sst)
                trace.append((ids_of(sfb)[0], d[0]))
                if d[0]:
                    break
            alone.append(trace)
        # FDFO rounds: requests 0, 1 start; 2 joins in round 2; 3 in round 3; orders rotate
        current = {r: list(blocks[r]) for r in range(len(knobs))}
        state: dict[int, Any] = {}
        taken = {r: 0 for r in range(len(knobs))}
        finished: set[int] = set()
        for rnd in range(steps):
            live = [r for r in range(min(len(knobs), rnd + 2)) if r not in finished]
            if not live:
                break
            order = live[rnd % len(live):] + live[:rnd % len(live)]
            fb = batch([current[r] for r in order], positions=torch.cat([positions[r] for r in order]),
                       rids=[f"q{r}" for r in order], sampling_info=info([dllm(knobs[r]) for r in order]))
            fresh = algo.init_step_state(fb) if any(r not in state for r in order) else None
            states = [state[r] if r in state else fresh[i] for i, r in enumerate(order)]
            done = algo.step(fb, torch.cat([logits[r][taken[r]] for r in order]), states)
            for i, r in enumerate(order):
                current[r] = ids_of(fb)[i]
                assert (current[r], done[i]) == alone[r][taken[r]], (cls.NAME, rnd, r)
                taken[r] += 1
                state[r] = states[i]
                if done[i]:
                    finished.add(r)
        assert finished == set(range(len(knobs)))
        assert all(taken[r] == len(alone[r]) for r in range(len(knobs)))


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.NAME)
def test_steps_with_row_knobs_read_device_data_once(cls: type) -> None:
    server, row_knobs = ROW_KNOBS[cls]
    algo = make(cls, server, 6)
    fb = batch([[5, M, M, M, M, M], [M] * 6], sampling_info=info([dllm(row_knobs[1]), dllm(row_knobs[2])], [1.0, 0.7]))
    states = algo.init_step_state(fb)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):  # the first step builds the per-row tensors, the next ones reuse them
        logits = random_logits(g, 12, cls)
        assert host_syncs(lambda: algo.step(fb, logits, states)) == ["tolist"]
    assert algo.row_knobs(fb) is algo.row_knobs(fb)


def test_fast_path_when_no_row_sets_a_knob() -> None:
    for cls in ALL:
        algo = make(cls)
        for custom in ([None, None], [{"x": 1}, {"dllm": {}}], [{"dllm": None}, None]):
            assert algo.row_knobs(batch([[M] * 8] * 2, sampling_info=info(custom))) is None
        assert algo.row_knobs(batch([[M] * 8] * 2, sampling_info=None)) is None
        # a list that does not match the batch (never produced by SGLang for diffusion batches): ignored
        assert algo.row_knobs(batch([[M] * 8] * 2, sampling_info=info([dllm(ROW_KNOBS[cls][1][1])]))) is None
    algo = make(ThresholdAlgorithm)
    custom = [dllm({"threshold": 0.5}), None]
    a = algo.row_knobs(batch([[M] * 8] * 2, sampling_info=info(custom)))
    b = algo.row_knobs(batch([[M] * 8] * 2, sampling_info=info([dllm({"threshold": 0.5}), None])))
    assert a is b  # same values, another batch: no new host->device copy
    assert a["threshold"].tolist() == [0.5, 0.949999988079071]


# ----------------------------------------------------------------------------------------------
# end to end: one server
# ----------------------------------------------------------------------------------------------


def test_constraint_refusals_give_each_decoders_reason() -> None:
    """A decoder that does not constrain refuses `regex` / `json_schema` with its own reason and names
    the ones that do."""
    from sglang_llada.algorithms.exact import ExactAlgorithm

    for cls, why in ((EditAlgorithm, "edits can rewrite committed tokens"),
                     (LevenshteinAlgorithm, "edits can rewrite committed tokens"),
                     (ExactAlgorithm, "drafted commits are verified unconstrained")):
        message = cls.constraint_refusal()
        assert why in message and cls.NAME in message and "llada2_threshold" in message, message
    assert ThresholdAlgorithm.CONSTRAINS and not ExactAlgorithm.CONSTRAINS
