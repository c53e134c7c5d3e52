"""Our state on SGLang's objects: one typed record per (object, owner), one naming convention.

The plugin keeps a little state on objects SGLang creates and passes around (a request's forward
counts, the prefill adder's admission figures, a forward's logprob rows). Each owner module defines
a dataclass; `record(obj, Kind)` returns the object's record of that kind, creating it on first use,
and `peek(obj, Kind)` returns it or None. The record lives in one attribute,
`_sglang_llada_<Kind>`, so `vars(req)` shows at a glance what the plugin attached and who owns it.
"""

from __future__ import annotations

from typing import TypeVar

R = TypeVar("R")

PREFIX = "_sglang_llada_"


def _attr(kind: type) -> str:
    return PREFIX + kind.__name__


def record(obj: object, kind: type[R]) -> R:
    """`obj`'s record of type `kind`, created with `kind()` on first use."""
    value = getattr(obj, _attr(kind), None)
    if value is None:
        value = kind()
        setattr(obj, _attr(kind), value)
    return value


def peek(obj: object, kind: type[R]) -> R | None:
    """`obj`'s record of type `kind`, or None when nothing was attached."""
    return getattr(obj, _attr(kind), None)


def attach(obj: object, value: R) -> R:
    """Sets `obj`'s record of `type(value)` (replacing any earlier one)."""
    setattr(obj, _attr(type(value)), value)
    return value


def discard(obj: object, kind: type) -> None:
    """Removes `obj`'s record of type `kind`, if any."""
    if hasattr(obj, _attr(kind)):
        delattr(obj, _attr(kind))
