"""pg8000 rewrites every statement's placeholders (`%s` to `$1`) with a Python loop over each character of
the SQL: for the console's small queries that loop was a third of the time spent in the driver. For
positional styles the rewritten text depends on the SQL alone, and SQLAlchemy sends the same few hundred
statement texts again and again, so the rewrite is cached (bounded; named styles still go to pg8000)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import pg8000.legacy as _legacy

_POSITIONAL = frozenset({"format", "qmark", "numeric"})
_original: Callable[[str, str, Any], tuple[str, Any]] = _legacy.convert_paramstyle


@lru_cache(maxsize=4096)
def _rewritten(style: str, query: str) -> str:
    return _original(style, query, ())[0]


def convert_paramstyle(style: str, query: str, args: Any) -> tuple[str, Any]:
    if style in _POSITIONAL:
        return _rewritten(style, query), args
    return _original(style, query, args)


def install() -> None:
    if getattr(_legacy, "convert_paramstyle", None) is _original:  # still the function measured here
        _legacy.convert_paramstyle = convert_paramstyle
