"""The seam table (sglang_llada/seams.py) is the whole truth about how the plugin hooks into SGLang:
these tests fail when the installed hooks, pyproject.toml's entry points, docs/structures.md, our
source or SGLang 0.5.23's own functions disagree with it."""

from __future__ import annotations

import ast
import importlib
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest
import tomllib

from sglang_llada.seams import HOOK_KINDS, SEAMS, install, installed_seams, markdown_table

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_registries(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, dict[str, list[Any]]]]:
    """SGLang's hook registry and resolution-step table, emptied for one install() and restored."""
    from collections import defaultdict

    from sglang.srt.arg_groups import resolution_hooks
    from sglang.srt.plugins.hook_registry import HookRegistry

    monkeypatch.setattr(HookRegistry, "_hooks", defaultdict(list))
    steps: dict[str, list[Any]] = {}
    monkeypatch.setattr(resolution_hooks, "_HOOKS", steps)
    yield HookRegistry, steps


def test_install_registers_exactly_the_table(fresh_registries: tuple[Any, dict[str, list[Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    registry, steps = fresh_registries
    monkeypatch.delenv("SGLANG_EXTERNAL_MODEL_PACKAGE", raising=False)
    install()
    installed = {(target, hook_type.name, hook) for target, hooks in registry._hooks.items() for hook_type, hook, _ in hooks}
    expected = {(s.target, s.kind, s.function()) for s in SEAMS if s.kind in HOOK_KINDS}
    assert installed == expected
    assert {(name, fn) for name, fns in steps.items() for fn in fns} == {
        (s.target, s.function()) for s in SEAMS if s.kind == "resolution"
    }
    import os

    assert os.environ["SGLANG_EXTERNAL_MODEL_PACKAGE"] == next(s.ours for s in SEAMS if s.kind == "env")
    from transformers import AutoConfig

    config = next(s.function() for s in SEAMS if s.kind == "config")
    assert AutoConfig.for_model(config.model_type).__class__ is config


def test_at_most_one_of_our_functions_per_sglang_function() -> None:
    counts = Counter(s.target for s in SEAMS)
    assert [t for t, n in counts.items() if n > 1] == []


def test_every_target_exists_in_the_pinned_sglang() -> None:
    """A hook on a function SGLang renamed would be applied to nothing; this names it first."""
    for seam in installed_seams():
        if seam.kind not in HOOK_KINDS:
            continue
        parts = seam.target.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            try:
                obj: Any = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
            assert callable(obj), seam.target
            break
        else:
            pytest.fail(f"cannot import {seam.target}")
    from sglang.srt.arg_groups.resolution_hooks import _OVERRIDABLE_HOOKS

    assert {s.target for s in SEAMS if s.kind == "resolution"} <= set(_OVERRIDABLE_HOOKS)


def test_entry_points_match_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {(group, value) for group, entries in project["entry-points"].items() for value in entries.values()}
    assert declared == {(s.target, s.ours) for s in SEAMS if s.kind == "entry point"}
    for seam in SEAMS:
        if seam.kind != "env":
            assert callable(seam.function()), seam.ours


def test_nothing_else_registers_hooks() -> None:
    """Only seams.py talks to SGLang's registries: no module installs a hook of its own."""
    calls = []
    for path in (ROOT / "sglang_llada").rglob("*.py"):
        if path.name == "seams.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name.endswith(("HookRegistry.register", "register_resolution_hook", "AutoConfig.register")):
                    calls.append(f"{path.relative_to(ROOT)}: {name}")
    assert calls == []


def test_docs_show_the_table() -> None:
    doc = (ROOT / "docs" / "structures.md").read_text()
    assert markdown_table() in doc, "docs/structures.md is stale: paste `python -m sglang_llada.seams`"
