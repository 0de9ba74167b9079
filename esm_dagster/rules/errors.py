"""The two kinds of failure the rules layer reports.

`RulesError` is about the *document* (a catalog row's `mapping_rules` is wrong): it is raised,
and its message names the offending field path and value so the mapping can be put in error
with an actionable message while the other mappings keep running.

`FieldError` / `Rejection` are about *records*: they are never raised, because one bad record
must not stop a batch. They are collected, and the sync engine quarantines them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class RulesError(ValueError):
    """An invalid `mapping_rules` document.

    `problems` holds one "path: message" string per problem found (all of them, not only the
    first), and the exception message joins them.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class FieldError:
    """Why one value of one record was refused.

    `field` is the source path (e.g. ``billing_details.address.city``), `rule` a short
    machine-readable reason (required, type, email, phone_number, date_format, currency,
    timestamp, integer, decimal, boolean, ...), `message` a human sentence that quotes the
    value, and `value` the raw value (``"***"`` for secret-looking fields).
    """

    field: str
    rule: str
    message: str
    value: Any = None


@dataclass(slots=True)
class Rejection:
    """A record refused as a whole, with every error found in it."""

    index: int
    record: dict[str, Any]
    errors: list[FieldError] = field(default_factory=list)
