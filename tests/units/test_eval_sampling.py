"""`sglang-llada eval --temperature`: every request sampled at the temperature, request i seeded with
`sampling_seed` = seed + i (repeatable), and greedy requests left as they were."""

from __future__ import annotations

from typing import Any

import pytest

import sglang_llada.eval as ev
from sglang_llada.toy.tasks import split


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    def fake_post(url: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        sent.append(payload)
        return {"text": "x", "meta_info": {"completion_tokens": 1, "dllm_forwards": 1}}

    monkeypatch.setattr(ev, "_post", fake_post)
    return sent


def test_sampled_requests_carry_temperature_and_one_seed_each(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _capture(monkeypatch)
    summary, _ = ev.evaluate("http://x", "heldout-small", limit=6, progress=False, temperature=2.0, seed=10,
                             params={"max_new_tokens": 8})
    by_prompt = {p["text"]: p["sampling_params"] for p in sent}
    prompts = ev.render_prompts(split("heldout-small")[:6])
    assert [by_prompt[p]["sampling_seed"] for p in prompts] == list(range(10, 16))
    assert all(by_prompt[p]["temperature"] == 2.0 and by_prompt[p]["max_new_tokens"] == 8 for p in prompts)
    assert summary["temperature"] == 2.0 and summary["seed"] == 10
    assert "temperature 2.0" in ev.format_report("http://x", "heldout-small", 1, summary)


def test_greedy_requests_have_no_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _capture(monkeypatch)
    summary, _ = ev.evaluate("http://x", "heldout-small", limit=3, progress=False)
    assert all(p["sampling_params"]["temperature"] == 0.0 and "sampling_seed" not in p["sampling_params"] for p in sent)
    assert summary["seed"] is None and "greedy" in ev.format_report("http://x", "heldout-small", 1, summary)


def test_negative_temperature_is_refused() -> None:
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        ev._sampled(None, -1.0, 0)


def test_cli_refuses_a_negative_temperature_before_sending_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    from sglang_llada.cli import main

    sent = _capture(monkeypatch)
    with pytest.raises(SystemExit, match="--temperature must be >= 0"):
        main(["eval", "--url", "http://x", "--temperature", "-0.5"])
    assert sent == []
