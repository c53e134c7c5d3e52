"""The docs' reference tables (algorithms, modes, request keys, generations, seams) are rendered from
the code by sglang_llada/doc_tables.py: these tests fail when a marked copy in README.md or docs/
differs from its rendering, or when the rendering leaves out an algorithm, a knob or a rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sglang_llada import doc_tables
from sglang_llada.algorithms import CLASS_PATHS, algorithm_class
from sglang_llada.startup.generation import DEFAULT_DECODING, GENERATIONS, RULES, Facts

ROOT = Path(__file__).resolve().parents[2]
FIX = "run `python -m sglang_llada.doc_tables --write`"


@pytest.mark.parametrize("name", sorted(doc_tables.MARKED))
def test_marked_table_is_its_rendering(name: str) -> None:
    path, marker = doc_tables.MARKED[name]
    text = (ROOT / path).read_text(encoding="utf-8")
    try:
        current = doc_tables.marked_text(text, marker)
    except KeyError:
        pytest.fail(f"{path} lacks the markers <!-- table:{marker} --> ... <!-- /table:{marker} -->; add them, then {FIX}")
    assert current == "\n" + doc_tables.RENDERERS[name]() + "\n", f"{path}: table `{name}` is stale; {FIX}"


def test_check_agrees() -> None:
    assert doc_tables.stale(ROOT) == [], FIX


def test_every_table_has_a_renderer_and_a_place() -> None:
    assert set(doc_tables.MARKED) == set(doc_tables.RENDERERS)
    assert len({(path, marker) for path, marker in doc_tables.MARKED.values()}) == len(doc_tables.MARKED)


def _rows(table: str) -> dict[str, str]:
    """{first cell: the row} for a rendered table's body rows."""
    body = table.strip().splitlines()[2:]
    return {row.split(" | ")[0].removeprefix("| "): row for row in body}


def test_every_algorithm_and_knob_is_in_the_tables() -> None:
    algorithms = _rows(doc_tables.algorithm_table())
    requests = _rows(doc_tables.request_keys_table())
    assert list(algorithms) == [f"`{name}`" for name in CLASS_PATHS]
    assert list(requests) == list(algorithms)
    for name in CLASS_PATHS:
        cls = algorithm_class(name)
        assert cls.NAME == name
        assert cls.SUMMARY and cls.SUMMARY in algorithms[f"`{name}`"], f"{name}: SUMMARY missing"
        for knob in cls.KNOBS:
            assert f"`{knob.name}: " in algorithms[f"`{name}`"], f"{name}: knob {knob.name} missing"
            assert doc_tables.knob_range(knob) in algorithms[f"`{name}`"]
        for knob in cls.REQUEST_KNOBS:
            assert f"`{knob.name}` {doc_tables.knob_range(knob)}" in requests[f"`{name}`"], f"{name}: {knob.name}"


def test_every_mode_preset_is_in_the_mode_table() -> None:
    modes = _rows(doc_tables.modes_table())
    for name in CLASS_PATHS:
        cls = algorithm_class(name)
        for mode, preset in getattr(cls, "MODES", {}).items():
            assert f"`{mode}`" in modes
            assert " | ".join(repr(v) if isinstance(v, float) else str(v) for v in preset) in modes[f"`{mode}`"]


def test_every_rule_and_generation_is_in_the_generation_table() -> None:
    rows = doc_tables.generation_table().strip().splitlines()[2:]
    assert len(rows) == len(RULES)
    for row, rule in zip(rows, RULES):
        assert rule.carries in row
    assert set(DEFAULT_DECODING) == set(GENERATIONS)
    for algorithm, _ in DEFAULT_DECODING.values():
        assert algorithm in CLASS_PATHS
    # the last rule catches every checkpoint the others leave
    assert RULES[-1].generation == "2.0" and RULES[-1].applies(Facts({}, "", None, False, False))


def test_write_rewrites_only_between_markers(tmp_path: Path) -> None:
    for path, _ in doc_tables.MARKED.values():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text((ROOT / path).read_text(encoding="utf-8"), encoding="utf-8")
    path, marker = doc_tables.MARKED["algorithms"]
    text = (tmp_path / path).read_text(encoding="utf-8")
    stale_text = doc_tables.with_table(text, marker, "| old |\n")
    (tmp_path / path).write_text(stale_text, encoding="utf-8")
    assert doc_tables.stale(tmp_path) == [f"algorithms ({path})"]
    assert doc_tables.main(["--check", "--root", str(tmp_path)]) == 1
    assert doc_tables.write(tmp_path) == [f"algorithms ({path})"]
    assert (tmp_path / path).read_text(encoding="utf-8") == text
    assert doc_tables.main(["--check", "--root", str(tmp_path)]) == 0


def test_nothing_in_the_package_imports_doc_tables() -> None:
    """doc_tables depends on the algorithms, startup and seams, never the other way round."""
    importers = []
    for path in (ROOT / "sglang_llada").rglob("*.py"):
        if path.name == "doc_tables.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{a.name}" for a in node.names]
            if any("doc_tables" in n for n in names):
                importers.append(str(path.relative_to(ROOT)))
    assert importers == []
