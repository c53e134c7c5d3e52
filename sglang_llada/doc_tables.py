"""The docs' reference tables, rendered from the objects that define them.

Why this exists: the algorithm names, their knobs' defaults and ranges, the keys a request may set,
the mode presets, the generation-detection rules and the seams are each defined once in code
(`CLASS_PATHS` and each algorithm class's `SUMMARY` / `KNOBS` / `REQUEST_KNOBS` / `MODES`,
startup/generation.py's `RULES` / `DEFAULT_DECODING`, seams.py's `SEAMS`). A hand-copied table
drifts from them silently; these functions render each table, `MARKED` says where each one lives
(between `<!-- table:NAME -->` and `<!-- /table:NAME -->` in README.md or docs/), and
tests/units/test_doc_tables.py fails when a file's copy differs from its rendering. Other prose
links to the tables instead of repeating their numbers.

    python -m sglang_llada.doc_tables --write   # rewrite every marked table
    python -m sglang_llada.doc_tables --check   # exit 1 naming each stale table

Dependencies run one way: this module imports the algorithms, startup/generation.py and seams.py;
nothing in the package imports it (its test and its __main__ do).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from sglang_llada import seams
from sglang_llada.algorithms import CLASS_PATHS, algorithm_class
from sglang_llada.algorithms.edit import MODE_KNOBS, MODE_SOURCES
from sglang_llada.algorithms.knobs import REQUEST_KEY, Knob, Value
from sglang_llada.startup.generation import DEFAULT_DECODING, RULES

# The repository root (the package is installed editable; README.md and docs/ sit beside it).
ROOT = Path(__file__).resolve().parents[1]


# -- cells ------------------------------------------------------------------------------------------


def _value(value: Value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def knob_range(knob: Knob) -> str:
    """The values a knob accepts, compactly: `none / Q / S`, `[0, 1]`, `int >= 1`, `> 0`."""
    if knob.kind is str:
        return " / ".join(knob.choices)
    prefix = "int " if knob.kind is int else ""
    low = "" if knob.low is None else f"{knob.low:g}"
    high = "" if knob.high is None else f"{knob.high:g}"
    if knob.low is not None and knob.high is not None:
        return f"{prefix}{'(' if knob.low_open else '['}{low}, {high}]"
    if knob.low is not None:
        return f"{prefix}{'>' if knob.low_open else '>='} {low}"
    if knob.high is not None:
        return f"{prefix}<= {high}"
    return f"{prefix}any".strip()


def _knob_cell(knob: Knob) -> str:
    return f"`{knob.name}: {_value(knob.default)}` {knob_range(knob)}"


def _decoding(algorithm: str, config: Mapping[str, Any]) -> str:
    return ", ".join([f"`{algorithm}`", *(f"`{k}: {v}`" for k, v in config.items())])


def _classes() -> list[Any]:
    return [algorithm_class(name) for name in CLASS_PATHS]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# -- tables ---------------------------------------------------------------------------------------


def algorithm_table() -> str:
    """One row per registered algorithm (README.md, Decoding algorithms): what it commits per step,
    its `--dllm-algorithm-config` knobs with their defaults and allowed values, and the
    generations it decodes by default."""
    rows = []
    for cls in _classes():
        default_of = [
            f"LLaDA{generation}" + (f" ({', '.join(f'`{k}: {v}`' for k, v in config.items())})" if config else "")
            for generation, (algorithm, config) in DEFAULT_DECODING.items()
            if algorithm == cls.NAME
        ]
        rows.append([
            f"`{cls.NAME}`",
            cls.SUMMARY,
            "; ".join(_knob_cell(k) for k in cls.KNOBS),
            ", ".join(default_of) or "-",
        ])
    return _table(
        ["name", "what it commits per step", "knobs: `default` and allowed values", "default for"], rows
    )


def modes_table() -> str:
    """The `mode` presets of the editing algorithms (README.md): each mode's values, which
    algorithm offers it (and whose default it is), and where its values come from."""
    offering = [cls for cls in _classes() if getattr(cls, "MODES", None)]
    values: dict[str, tuple[float, float, int]] = {}
    for cls in offering:
        for mode, preset in cls.MODES.items():
            if values.setdefault(mode, preset) != preset:
                raise ValueError(f"mode {mode!r} has different values in {cls.NAME}: {preset} vs {values[mode]}")

    def offered(cls: Any, mode: str) -> str:
        if mode not in cls.MODES:
            return "-"
        return "default" if next(k for k in cls.KNOBS if k.name == "mode").default == mode else "yes"

    rows = [
        [f"`{mode}`", *(_value(v) for v in preset), *(offered(cls, mode) for cls in offering), MODE_SOURCES.get(mode, "")]
        for mode, preset in values.items()
    ]
    return _table(["mode", *(f"`{k}`" for k in MODE_KNOBS), *(f"`{cls.NAME}`" for cls in offering), "source"], rows)


def request_keys_table() -> str:
    """The keys a request may set in `custom_params.dllm`, per server algorithm, with the values each
    accepts (docs/llada2-generations.md, Per request)."""
    rows = [
        [f"`{cls.NAME}`", "; ".join(f"`{k.name}` {knob_range(k)}" for k in cls.REQUEST_KNOBS) or "-"]
        for cls in _classes()
    ]
    return _table(["server algorithm", f"keys a request may set (`custom_params.{REQUEST_KEY}`)"], rows)


def generation_table() -> str:
    """The generation-detection rules in order, each with the decoding it implies
    (docs/llada2-generations.md)."""
    rows = []
    for i, rule in enumerate(RULES, 1):
        if rule.generation is None:
            decoding = "that generation's (rows below)"
        else:
            decoding = _decoding(*DEFAULT_DECODING[rule.decoding or rule.generation])
            if rule.decoding:
                decoding += f" (as {rule.decoding})"
        rows.append([str(i), rule.carries, rule.generation or "as given", decoding])
    return _table(["#", "what the checkpoint carries", "generation", "default `--dllm-algorithm`"], rows)


RENDERERS: dict[str, Callable[[], str]] = {
    "algorithms": algorithm_table,
    "modes": modes_table,
    "request-keys": request_keys_table,
    "generations": generation_table,
    "seams": seams.markdown_table,
}

# table -> (file relative to the repository root, marker name)
MARKED: dict[str, tuple[Path, str]] = {
    "algorithms": (Path("README.md"), "algorithms"),
    "modes": (Path("README.md"), "modes"),
    "request-keys": (Path("docs/llada2-generations.md"), "request-keys"),
    "generations": (Path("docs/llada2-generations.md"), "generations"),
    "seams": (Path("docs/structures.md"), "seams"),
}


def render_all() -> dict[str, str]:
    """{table: its Markdown}, for every table of `MARKED`."""
    return {name: RENDERERS[name]() for name in MARKED}


# -- markers ------------------------------------------------------------------------------------


def _block(marker: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- table:{re.escape(marker)} -->\n)(.*?)(<!-- /table:{re.escape(marker)} -->)", re.DOTALL)


def marked_text(text: str, marker: str) -> str:
    """The text between a marker pair (KeyError when the file has no such pair)."""
    match = _block(marker).search(text)
    if match is None:
        raise KeyError(f"no <!-- table:{marker} --> ... <!-- /table:{marker} --> pair")
    return match.group(2)


def _between(table: str) -> str:
    """What sits between the markers: the table set off by blank lines (so Markdown ends it)."""
    return "\n" + table + "\n"


def with_table(text: str, marker: str, table: str) -> str:
    """`text` with the marker pair's contents replaced by `table`."""
    marked_text(text, marker)  # the pair must exist
    return _block(marker).sub(lambda m: m.group(1) + _between(table) + m.group(3), text, count=1)


def stale(root: Path = ROOT) -> list[str]:
    """'table (file)' for each marked table whose file's copy differs from its rendering or lacks its markers."""
    out = []
    for name, table in render_all().items():
        path, marker = MARKED[name]
        try:
            current = marked_text((root / path).read_text(encoding="utf-8"), marker)
        except (KeyError, FileNotFoundError):
            current = None
        if current != _between(table):
            out.append(f"{name} ({path})")
    return out


def write(root: Path = ROOT) -> list[str]:
    """Rewrites every stale marked table; the 'table (file)' it changed."""
    changed = []
    for name, table in render_all().items():
        path, marker = MARKED[name]
        text = (root / path).read_text(encoding="utf-8")
        new = with_table(text, marker, table)
        if new != text:
            (root / path).write_text(new, encoding="utf-8")
            changed.append(f"{name} ({path})")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sglang_llada.doc_tables", description="Render the docs' reference tables from the code.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite the tables between their markers")
    action.add_argument("--check", action="store_true", help="exit 1 naming each stale table")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository root (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.write:
        for entry in write(args.root):
            print(f"rewrote {entry}")
        return 0
    bad = stale(args.root)
    for entry in bad:
        print(f"stale: {entry}; run `python -m sglang_llada.doc_tables --write`", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
