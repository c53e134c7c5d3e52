"""Unit tests of sglang_llada/tokenizer/field_checks.py and scheduler/fault_isolation.py: the 400s for values the scheduler would trust
blindly, and the decisions of the hook that aborts a failed diffusion batch (the abort itself runs
against a real scheduler in tests/e2e/test_soak_e2e.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Optional

import pytest
import torch

from sglang_llada.scheduler import fault_isolation as fi
from sglang_llada.tokenizer import field_checks as rv

VOCAB, HIDDEN = 320, 64


def manager(algorithm: Optional[str] = "llada2_threshold", **config: Any) -> SimpleNamespace:
    model_config = SimpleNamespace(vocab_size=VOCAB, hidden_size=HIDDEN, get_default_sampling_params=lambda: {})
    for key, value in config.items():
        setattr(model_config, key, value)
    return SimpleNamespace(server_args=SimpleNamespace(dllm_algorithm=algorithm), model_config=model_config)


def req(sampling: Optional[dict] = None, **fields: Any) -> SimpleNamespace:
    base = dict(
        sampling_params={"max_new_tokens": 8, **(sampling or {})}, return_logprob=False, logprob_start_len=-1,
        top_logprobs_num=0, token_ids_logprob=None, input_ids=None, input_embeds=None, custom_logit_processor=None,
        session_params=None, rid="r1",
    )
    return SimpleNamespace(**{**base, **fields})


@pytest.fixture(autouse=True)
def _validation_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(rv.DISABLE_ENV, raising=False)


# ------------------------------------------------------------------------------------------------
# field checks
# ------------------------------------------------------------------------------------------------


def test_token_ids_in_the_vocabulary_pass_and_the_first_bad_one_is_named() -> None:
    assert rv.token_ids_error([0, 5, VOCAB - 1], "input_ids", VOCAB) is None
    assert rv.token_ids_error([], "input_ids", VOCAB) is None and rv.token_ids_error(None, "input_ids", VOCAB) is None
    msg = rv.token_ids_error([1, 2, 10**9, -1], "input_ids", VOCAB, where="prompt position")
    assert msg == (
        "input_ids: token id 1000000000 at prompt position 2 is outside this model's vocabulary; "
        "token ids must be in [0, 320) (vocab_size 320)"
    )
    assert "token id -3 at index 1" in rv.token_ids_error([4, -3], "f", VOCAB)
    assert "token id 320 at index 0" in rv.token_ids_error([VOCAB], "f", VOCAB)
    assert "'a' at index 1 is not a token id" in rv.token_ids_error([1, "a"], "f", VOCAB)
    assert "1.5 at index 0 is not a token id" in rv.token_ids_error([1.5], "f", VOCAB)


def test_input_embeds_must_be_rows_of_the_hidden_size() -> None:
    assert rv.input_embeds_error(None, HIDDEN) is None
    assert rv.input_embeds_error([[0.0] * HIDDEN] * 3, HIDDEN) is None
    assert "non-empty list of rows of 64 numbers" in rv.input_embeds_error([], HIDDEN)
    assert rv.input_embeds_error([[0.0] * HIDDEN, [0.0] * 3], HIDDEN) == (
        "input_embeds[1] has 3 values; each row must have 64, this model's hidden size"
    )
    assert "input_embeds[0] is float" in rv.input_embeds_error([0.1] * HIDDEN, HIDDEN)


def test_stop_token_ids_and_stop_regex() -> None:
    assert rv.sampling_params_error({"stop_token_ids": [1, None, 2], "stop_regex": ["a+", "b"]}, VOCAB) is None
    assert "sampling_params.stop_token_ids: token id 400 at index 1" in rv.sampling_params_error(
        {"stop_token_ids": [3, 400]}, VOCAB)
    assert "token id -1" in rv.sampling_params_error({"stop_token_ids": {-1}}, VOCAB)
    assert "sampling_params.stop_regex = '(' is not a valid regular expression" in rv.sampling_params_error(
        {"stop_regex": "("}, VOCAB)
    assert "sampling_params.stop_regex[1] = '[a'" in rv.sampling_params_error({"stop_regex": ["ok", "[a"]}, VOCAB)
    assert "must be a string" in rv.sampling_params_error({"stop_regex": [5]}, VOCAB)
    # No vocabulary known: the stop ids are not judged, the patterns still are.
    assert rv.sampling_params_error({"stop_token_ids": [10**9]}, None) is None
    assert rv.sampling_params_error({"stop_regex": "("}, None) is not None
    assert rv.sampling_params_error(None, VOCAB) is None


def test_fields_a_diffusion_server_cannot_serve() -> None:
    assert rv.diffusion_unservable_error(req()) is None
    assert "custom_logit_processor is not supported by diffusion decoding" in rv.diffusion_unservable_error(
        req(custom_logit_processor='{"callable": "x"}'))
    assert "session_params is not supported" in rv.diffusion_unservable_error(req(session_params={"id": "s"}))
    assert "input_embeds is not supported" in rv.diffusion_unservable_error(req(input_embeds=[[0.0] * HIDDEN]))
    for name in ("return_sampling_mask", "return_routed_experts", "return_indexer_topk"):
        assert f"{name} is not supported" in rv.diffusion_unservable_error(req(**{name: True}))


def test_request_error_names_the_prompt_field() -> None:
    m = manager()
    assert rv.request_error(m, req(input_ids=[1, 2]), [1, 2], diffusion=True) is None
    assert rv.request_error(m, req(input_ids=[1, 999]), [1, 999], diffusion=True).startswith("input_ids: token id 999")
    # A text prompt whose tokenizer makes ids the model does not have.
    assert rv.request_error(m, req(text="hi"), [1, 999], diffusion=True).startswith("the tokenized text: token id 999")
    assert "stop_token_ids" in rv.request_error(m, req({"stop_token_ids": [VOCAB]}), [1], diffusion=False)
    assert "hidden size" in rv.request_error(m, req(input_embeds=[[0.0] * 2]), None, diffusion=False)
    # Refusals that are about diffusion decoding only apply to a diffusion server.
    clp = req(custom_logit_processor="p")
    assert rv.request_error(m, clp, [1], diffusion=False) is None
    assert "custom_logit_processor" in rv.request_error(m, clp, [1], diffusion=True)
    # A model config without the sizes (as in other unit tests): those checks are skipped.
    bare = SimpleNamespace(server_args=m.server_args, model_config=SimpleNamespace())
    assert rv.request_error(bare, req(input_ids=[10**9]), [10**9], diffusion=True) is None


def test_the_test_only_switch_turns_the_checks_off(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = req(input_ids=[10**9], custom_logit_processor="p")
    assert rv.request_error(manager(), bad, [10**9], diffusion=True) is not None
    monkeypatch.setenv(rv.DISABLE_ENV, "1")
    assert rv.validation_disabled()
    assert rv.request_error(manager(), bad, [10**9], diffusion=True) is None
    monkeypatch.setenv(rv.DISABLE_ENV, "0")
    assert rv.request_error(manager(), bad, [10**9], diffusion=True) is not None


def test_the_tokenizer_manager_hook_raises_a_400_for_any_generate_request() -> None:
    from sglang_llada.tokenizer.request_checks import validate_one_request_after

    for algorithm in ("llada2_threshold", None):  # diffusion or autoregressive: the same crash, the same 400
        with pytest.raises(ValueError, match=r"input_ids: token id -7 at prompt position 0 .* \[0, 320\)"):
            validate_one_request_after(None, manager(algorithm), req(input_ids=[-7]), [-7])
    with pytest.raises(ValueError, match="session_params is not supported"):
        validate_one_request_after(None, manager(), req(session_params={"id": "s"}), [1])
    r = req()
    validate_one_request_after(None, manager(), r, [1, 2])
    assert r.sampling_params["temperature"] == 0.0  # the policy still runs after the checks
    # Embedding requests (no sampling fields) are not generate requests.
    validate_one_request_after(None, manager(), SimpleNamespace(input_ids=[10**9]), [10**9])


# ------------------------------------------------------------------------------------------------
# forward failures
# ------------------------------------------------------------------------------------------------


class Batch:
    def __init__(self, dllm: bool = True) -> None:
        self.dllm = dllm
        self.reqs = [SimpleNamespace(rid="a"), SimpleNamespace(rid="b")]

    def is_dllm(self) -> bool:
        return self.dllm


def scheduler(**attrs: Any) -> SimpleNamespace:
    return SimpleNamespace(**{"dllm_config": object(), "tp_size": 1, "pp_size": 1, "require_mlp_sync": False, **attrs})


def failing(exc: BaseException):
    def original(self: Any, batch: Any, *args: Any, **kwargs: Any) -> Any:
        raise exc

    return original


@pytest.fixture()
def aborted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, str]]:
    calls: list[tuple[Any, str]] = []

    def fake_abort(sched: Any, batch: Any, message: str) -> list[str]:
        calls.append((batch, message))
        return [r.rid for r in batch.reqs]

    monkeypatch.setattr(fi, "abort_failed_batch", fake_abort)
    # Not inside a scheduler process: the ranks come from the scheduler object.
    import sglang.srt.runtime_context as runtime_context

    def unpublished() -> Any:
        raise ValueError("config namespace 'parallel' not published")

    monkeypatch.setattr(runtime_context, "get_parallel", unpublished)
    return calls


def test_a_failed_diffusion_forward_aborts_its_batch_and_returns_a_marker(aborted) -> None:
    batch = Batch()
    out = fi.run_batch_around(failing(IndexError("index out of range in self")), scheduler(), batch)
    assert isinstance(out, fi.FailedForward)
    assert aborted == [(batch, out.error)]
    assert "IndexError: index out of range in self" in out.error and "internal error" in out.error
    # ... and its result is not processed; any other result is.
    seen = []
    assert fi.process_batch_result_around(lambda *a: seen.append(a), "sched", batch, out) is None and not seen
    fi.process_batch_result_around(lambda *a: seen.append(a), "sched", batch, "result")
    assert seen == [("sched", batch, "result")]
    # A batch that runs is untouched.
    assert fi.run_batch_around(lambda self, b: "ok", scheduler(), batch) == "ok"


@pytest.mark.parametrize(
    "sched, batch, exc",
    [
        (scheduler(), Batch(dllm=False), IndexError("autoregressive batch")),
        (scheduler(dllm_config=None), Batch(), IndexError("not a diffusion server")),
        (scheduler(tp_size=2), Batch(), IndexError("tensor parallel: peers would wait in a collective")),
        (scheduler(pp_size=2), Batch(), IndexError("pipeline parallel")),
        (scheduler(require_mlp_sync=True), Batch(), IndexError("DP attention")),
        (scheduler(), Batch(), torch.AcceleratorError("CUDA error: device-side assert triggered")),
        (scheduler(), Batch(), torch.OutOfMemoryError("out of memory")),
        (scheduler(), Batch(), KeyboardInterrupt()),
    ],
)
def test_failures_left_to_sglangs_crash_path(aborted, sched: Any, batch: Batch, exc: BaseException) -> None:
    with pytest.raises(type(exc)):
        fi.run_batch_around(failing(exc), sched, batch)
    assert aborted == []


def test_when_the_abort_itself_fails_the_original_error_goes_on(monkeypatch: pytest.MonkeyPatch, aborted) -> None:
    def broken(*args: Any) -> list[str]:
        raise AssertionError("release failed")

    monkeypatch.setattr(fi, "abort_failed_batch", broken)
    with pytest.raises(IndexError, match="the original"):
        fi.run_batch_around(failing(IndexError("the original")), scheduler(), Batch())


def test_the_seam_table_wraps_run_batch_and_process_batch_result() -> None:
    from sglang_llada.seams import SEAMS

    rows = {(s.target, s.kind, s.function()) for s in SEAMS if s.ours.startswith("sglang_llada.scheduler.fault_isolation:")}
    assert rows == {
        ("sglang.srt.managers.scheduler.Scheduler.run_batch", "AROUND", fi.run_batch_around),
        ("sglang.srt.managers.scheduler.Scheduler.process_batch_result", "AROUND", fi.process_batch_result_around),
    }
