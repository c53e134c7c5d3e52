"""scheduler/rounds.py: where whole-prompt prefill and KV admission meet at one SGLang function, the
single wrapper calls both in a fixed order; this pins it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from sglang_llada.scheduler import admission, prefill, rounds


def _recording(monkeypatch: pytest.MonkeyPatch, calls: list[str], module: Any, name: str, returns: Any = None) -> None:
    def fake(*args: Any) -> Any:
        calls.append(f"{module.__name__.rsplit('.', 1)[1]}.{name}")
        return args[-1] if returns == "last" else returns

    monkeypatch.setattr(module, name, fake)


def test_process_dllm_batches_order(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    _recording(monkeypatch, calls, admission, "clear_batch_full")
    _recording(monkeypatch, calls, prefill, "whole_prompt_mode", "last")
    _recording(monkeypatch, calls, admission, "decode_when_no_prompt_admitted", "last")

    def original(self: Any, adder: Any, running_batch: Any) -> str:
        calls.append("sglang")
        return "DLLM_EXTEND"

    assert rounds.process_dllm_batches_around(original, "scheduler", "adder", "running") == "DLLM_EXTEND"
    assert calls == [
        "admission.clear_batch_full",  # a stale "batch is full" must not block this round
        "sglang",
        "prefill.whole_prompt_mode",  # the mode prefill leaves ...
        "admission.decode_when_no_prompt_admitted",  # ... is what admission decides on
    ]


def test_add_dllm_req_order_and_budgets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both concerns see the budgets as they were before SGLang charged the request."""
    config = SimpleNamespace(block_size=32, requires_separate_context_encoding=False, algorithm="llada2_threshold")
    budget = SimpleNamespace(total_offset=100)
    adder = SimpleNamespace(rem_dllm_tokens=128, dllm_block_size=32, dllm_config=config, memory_budget=budget, page_size=1)
    req = SimpleNamespace(origin_input_ids=[0] * 200, output_ids=[], prefix_len=0, extend_len=0,
                          sampling_params=SimpleNamespace(max_new_tokens=40))
    monkeypatch.setattr(prefill, "_algorithm_allows", lambda name: True)

    def original(self: Any, r: Any) -> str:  # SGLang: charges a 192-token extend and 6 blocks
        r.extend_len = 192
        self.rem_dllm_tokens -= 192
        self.memory_budget.total_offset += 192 + 1
        return "added"

    assert rounds.add_dllm_req_around(original, adder, req) == "added"
    assert adder.rem_dllm_tokens == 128 - 32  # prefill: one block of the round, not six
    # admission: the request's whole future (ceil(240 / 32) * 32 = 256 tokens, + a page), not just its extend
    assert budget.total_offset == 100 + 256 + 1
