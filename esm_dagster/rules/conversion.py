"""Shared plumbing for the column converters.

A converter turns one extracted column (a Python list, one entry per record, None for missing)
into converted values; a NaN (how data frames spell "missing") also becomes NULL. A value that
cannot be converted becomes an `Invalid` marker in place, so a converter is a single
comprehension and the plan collects the failures afterwards with `split_invalid` instead of
every converter keeping its own error bookkeeping. `Invalid` is an immutable tuple, so
per-value functions that return it can sit behind `functools.lru_cache`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, NamedTuple


class Invalid(NamedTuple):
    rule: str
    message: str


RowErrors = list[tuple[int, Invalid]]


def is_nan(value: Any) -> bool:
    """True for float / Decimal / numpy NaN, which data frames use for "missing"."""
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return False


def show(value: Any, limit: int = 120) -> str:
    """repr() of a value for an error message, shortened."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def positions_of(values: list[Any], marker: Any) -> list[int]:
    """Positions of the items equal to `marker`, found by `list.index` (a C scan between hits)."""
    found: list[int] = []
    position = -1
    try:
        while True:
            position = values.index(marker, position + 1)
            found.append(position)
    except ValueError:
        return found


def split_invalid(values: list[Any]) -> RowErrors:
    """Replace every `Invalid` in `values` by None (in place) and return them with positions."""
    classes = list(map(type, values))
    if Invalid not in classes:  # C-speed scan; the common case
        return []
    errors = [(i, values[i]) for i in positions_of(classes, Invalid)]
    for i, _ in errors:
        values[i] = None
    return errors


def map_distinct(values: list[Any], fn: Callable[..., Any], *args: Any) -> list[Any]:
    """`[fn(v, *args) for v in values]`, calling `fn` once per distinct value.

    None and `Invalid` markers map to themselves. Values must be hashable and must not mix
    types that compare equal (1, 1.0 and True): callers pass columns already normalised to str.
    """
    table: dict[Hashable, Any] = {
        u: (u if u.__class__ is Invalid else fn(u, *args)) for u in set(values) if u is not None
    }
    table[None] = None
    return list(map(table.__getitem__, values))
