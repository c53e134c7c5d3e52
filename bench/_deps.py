"""Fail a bench before its first server starts when a module it needs at its end is missing.

A bench that plots runs for minutes before it imports matplotlib; without this check a missing
extra cost the whole run (imported as a sibling module: a script's own folder is sys.path[0]).
"""

from __future__ import annotations

import importlib.util
import sys

# What the `bench` extra of pyproject.toml installs (`bash .ci/setup` installs it).
BENCH_EXTRA = ("matplotlib",)


def require(*modules: str) -> None:
    """Exit with a message naming the install command if any of `modules` cannot be imported."""
    missing = [m for m in (modules or BENCH_EXTRA) if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"{sys.argv[0]}: missing {', '.join(missing)}; install the bench extra first: "
                 f"`.venv/bin/python -m pip install -e \".[bench]\"` (or `bash .ci/setup`)")
