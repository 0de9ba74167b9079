"""The slice of SOQL the emulator understands: one object, AND-ed comparisons, ORDER BY, LIMIT.

`SELECT Id, Email FROM Contact WHERE SystemModstamp >= 2026-01-01T00:00:00Z AND
SystemModstamp < 2026-02-01T00:00:00Z ORDER BY SystemModstamp, Id LIMIT 500`. Datetime literals are
unquoted, strings single-quoted, as in SOQL. Anything else is `MALFORMED_QUERY`, as Salesforce says.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_QUERY = re.compile(
    r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<object>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?(?:\s+ORDER\s+BY\s+(?P<order>.+?))?(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_CONDITION = re.compile(r"^\s*(\w+)\s*(>=|<=|!=|=|>|<)\s*(.+?)\s*$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


class SoqlError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_time(value: str) -> float:
    """A Salesforce datetime (`...000+0000`) or a SOQL literal (`...Z`) as unix seconds."""
    return dt.datetime.fromisoformat(value).timestamp()


@dataclass(frozen=True, slots=True)
class Query:
    fields: tuple[str, ...]
    sobject: str
    conditions: tuple[tuple[str, str, Any], ...]
    order: tuple[str, ...]
    limit: int | None

    def matches(self, record: dict[str, Any], datetime_fields: frozenset[str]) -> bool:
        for name, op, value in self.conditions:
            actual = record.get(name)
            if name in datetime_fields and actual is not None:
                actual = parse_time(actual)
            if actual is None or value is None:
                if not (
                    (op == "=" and actual is value) or (op == "!=" and (actual is None) != (value is None))
                ):
                    return False
                continue
            if not _OPS[op](actual, value):
                return False
        return True


def parse(text: str, known_fields: dict[str, frozenset[str]]) -> Query:
    """The query, checked against `known_fields` (object -> field names), or `SoqlError`."""
    match = _QUERY.match(text or "")
    if match is None:
        raise SoqlError("MALFORMED_QUERY", "unexpected token: the query must be SELECT ... FROM ...")
    sobject = match["object"]
    if sobject not in known_fields:
        raise SoqlError("INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
    columns = known_fields[sobject]
    fields = tuple(f.strip() for f in match["fields"].split(","))

    def check(name: str) -> str:
        if name not in columns:
            raise SoqlError("INVALID_FIELD", f"No such column '{name}' on entity '{sobject}'.")
        return name

    for name in fields:
        check(name)
    conditions = []
    if match["where"]:
        for part in re.split(r"\s+AND\s+", match["where"], flags=re.IGNORECASE):
            cond = _CONDITION.match(part)
            if cond is None:
                raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{part.strip()[:40]}'")
            conditions.append((check(cond[1]), cond[2], _literal(cond[3])))
    order: tuple[str, ...] = ()
    if match["order"]:
        keys = []
        for item in match["order"].split(","):
            words = item.split()
            if not words or len(words) > 2 or (len(words) == 2 and words[1].upper() != "ASC"):
                raise SoqlError("MALFORMED_QUERY", f"unexpected token in ORDER BY: '{item.strip()[:40]}'")
            keys.append(check(words[0]))
        order = tuple(keys)
    limit = int(match["limit"]) if match["limit"] else None
    return Query(fields, sobject, tuple(conditions), order, limit)


def _literal(raw: str) -> Any:
    if raw.startswith("'") and raw.endswith("'") and len(raw) >= 2:
        return raw[1:-1].replace("\\'", "'")
    if raw.lower() == "null":
        return None
    if _DATETIME.match(raw):
        return parse_time(raw)
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    try:
        return float(raw)
    except ValueError:
        raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{raw[:40]}'") from None
