"""Who changed which field: a three-way comparison of internal row, external record and shadow.

Pure functions, no I/O. Values are compared in a canonical text form, because the same value
comes back from the two sides in different Python shapes (SQLite hands back `Decimal("19.990")`
or a naive datetime where the rules give `Decimal("19.99")` and an aware one): comparing them
raw would see a change in every round and never reach a fixed point.

The decision per field, against the shadow `base` (the value both sides last agreed on):

- neither side differs from `base`, or both changed to the same value: nothing to do;
- one side changed: that side's value is taken, whatever the policy (non-overlapping changes from
  both sides are all kept, field by field);
- both changed, differently: a conflict, settled by the mapping's `conflict_resolution`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

Side = Literal["internal", "external"]
Policy = Literal["external_wins", "internal_wins", "latest_wins", "manual"]


def canonical(value: Any) -> Any:
    """A JSON-safe form that is equal exactly when the values mean the same."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        text = format(value.normalize(), "f")
        return "0" if text in ("-0", "0") else text
    if isinstance(value, int):
        return format(Decimal(value), "f")
    if isinstance(value, float):  # never produced by the rules; kept exact if it ever is
        return canonical(Decimal(repr(value)))
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return aware.astimezone(dt.UTC).isoformat(timespec="microseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def canonical_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: canonical(value) for name, value in values.items()}


def digest(fields: Mapping[str, Any]) -> str:
    """SHA-256 of canonical fields (already canonical: the shadow's `fields`)."""
    return hashlib.sha256(json.dumps(dict(fields), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Conflict:
    field: str
    base: Any
    internal: Any
    external: Any


@dataclass(frozen=True, slots=True)
class Decision:
    """One settled conflict: which side won and why (recorded in `esm_sync_conflict`)."""

    conflict: Conflict
    winner: Side
    reason: str


@dataclass
class Merge:
    """The outcome for one record: the agreed values and what each side must be told."""

    agreed: dict[str, Any]  # canonical values both sides hold after the round (shadow-to-be)
    to_internal: dict[str, Any]  # canonical fields the internal row must take
    to_external: dict[str, Any]  # canonical fields the provider must take
    decisions: list[Decision]
    pending: list[Conflict]  # manual conflicts: left as they are until a person decides


def _when(moment: dt.datetime | None) -> dt.datetime:
    return moment if moment is not None else dt.datetime.min.replace(tzinfo=dt.UTC)


def settle(
    conflict: Conflict,
    policy: Policy,
    *,
    internal_at: dt.datetime | None,
    external_at: dt.datetime | None,
    decided: Side | None = None,
) -> Decision | None:
    """The winner of one conflict under `policy`, or None when it waits for a person (`manual`).

    `latest_wins` compares each side's modification time; a tie (or two unknown times) goes to
    the external side, so both engines, every re-run and every replica decide the same way.
    `decided` is a person's earlier choice for this conflict, which any policy obeys.
    """
    if decided is not None:
        return Decision(conflict, decided, "manual")
    if policy == "external_wins":
        return Decision(conflict, "external", "external_wins")
    if policy == "internal_wins":
        return Decision(conflict, "internal", "internal_wins")
    if policy == "latest_wins":
        if _when(internal_at) > _when(external_at):
            return Decision(conflict, "internal", "latest_wins: internal is newer")
        reason = (
            "latest_wins: external is newer"
            if _when(external_at) > _when(internal_at)
            else "latest_wins: tie"
        )
        return Decision(conflict, "external", reason)
    return None


def merge(
    base: Mapping[str, Any] | None,
    internal: Mapping[str, Any] | None,
    external: Mapping[str, Any] | None,
    policy: Policy,
    *,
    internal_at: dt.datetime | None = None,
    external_at: dt.datetime | None = None,
    decided: Mapping[str, Side] | None = None,
) -> Merge:
    """Merge one record, all values canonical. A missing side (None) has not got the record yet.

    Without a shadow (`base` None) the first agreement is being made: fields the two sides hold
    differently are conflicts, since neither can be shown to be the older one.
    """
    decided = decided or {}
    names = list(dict.fromkeys([*(internal or {}), *(external or {}), *(base or {})]))
    agreed: dict[str, Any] = {}
    to_internal: dict[str, Any] = {}
    to_external: dict[str, Any] = {}
    decisions: list[Decision] = []
    pending: list[Conflict] = []
    for name in names:
        b = (base or {}).get(name)
        i = (internal or {}).get(name) if internal is not None else None
        e = (external or {}).get(name) if external is not None else None
        if internal is None:
            value: Any = e
        elif external is None or i == e:
            value = i
        elif base is not None and i == b:
            value = e
        elif base is not None and e == b:
            value = i
        else:
            conflict = Conflict(name, b, i, e)
            decision = settle(
                conflict, policy, internal_at=internal_at, external_at=external_at, decided=decided.get(name)
            )
            if decision is None:
                pending.append(conflict)
                agreed[name] = b  # unagreed: the shadow keeps the last agreement
                continue
            decisions.append(decision)
            value = i if decision.winner == "internal" else e
        agreed[name] = value
        if internal is None or i != value:
            to_internal[name] = value
        if external is None or e != value:
            to_external[name] = value
    return Merge(agreed, to_internal, to_external, decisions, pending)
