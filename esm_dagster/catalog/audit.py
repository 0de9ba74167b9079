"""The audit log: who (an operator or the system) did what to which mapping, and when.

Entries are written in the same transaction as the change they describe, so a change is never
made without its entry and an entry never describes a change that was rolled back. Refusals
(an access check, an endpoint the policy refused) are written in their own transaction: the
refused action did not happen, but the attempt did.

Who is acting comes from a context variable the entry points set (`acting_as`): the CLI sets the
operator it identified, Dagster runs set `system` with their run id. Code in between (mapping
edits, the engine) records entries without having the actor passed down to it.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import functools
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.models import AuditEntry, ExternalSystemMapping
from esm_dagster.catalog.types import utcnow
from esm_dagster.security.redact import redact_text

P = ParamSpec("P")
R = TypeVar("R")
SYSTEM = "system"
DAGSTER = "dagster"  # runs launched in Dagster: the webserver has no login, so no person is known

# The actions the log knows; `record` refuses others, so a typo cannot hide an entry from a filter.
ACTIONS = frozenset(
    {
        "mapping.created",
        "mapping.edited",
        "mapping.rules_changed",
        "mapping.enabled",
        "mapping.disabled",
        "credentials.changed",
        "credentials.read",
        "credentials.rotated",
        "sync.manual",
        "sync.backfill",
        "sync.scheduled",
        "connection.tested",
        "quarantine.replayed",
        "keys.rotated",
        "endpoint.refused",
        "access.denied",
        "operator.added",
        "operator.changed",
        "conflict.resolved",
    }
)
_MAX_DETAIL = 500


@dataclass(frozen=True, slots=True)
class Actor:
    name: str  # an operator's email, or "system"
    role: str | None
    source: str  # cli, dagster, webhooks, sensor
    run_id: str | None = None


_SYSTEM_ACTOR = Actor(SYSTEM, None, "system")
_current: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("esm_audit_actor", default=None)


def current_actor() -> Actor:
    return _current.get() or _SYSTEM_ACTOR


# The catalog that events from deep inside a call (an endpoint refused in the transport) are
# written to; set by the entry points that know it (the CLI, the engine).
_catalog: contextvars.ContextVar[str | None] = contextvars.ContextVar("esm_audit_catalog", default=None)


def current_catalog() -> str | None:
    return _catalog.get()


def catalog_of_first_argument(fn: Callable[Concatenate[str, P], R]) -> Callable[Concatenate[str, P], R]:
    """Run `fn(url, ...)` with `url` as the catalog its deep events are written to."""

    @functools.wraps(fn)
    def wrapper(url: str, *args: P.args, **kwargs: P.kwargs) -> R:
        with using_catalog(url):
            return fn(url, *args, **kwargs)

    return wrapper


@contextlib.contextmanager
def using_catalog(url: str) -> Iterator[str]:
    token = _catalog.set(url)
    try:
        yield url
    finally:
        _catalog.reset(token)


@contextlib.contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    """Entries recorded inside the block name `actor`."""
    token = _current.set(actor)
    try:
        yield actor
    finally:
        _current.reset(token)


def _clean(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """Details as JSON scalars and lists of them, secrets and credential-shaped strings masked."""
    cleaned: dict[str, Any] = {}
    for key, value in (details or {}).items():
        if isinstance(value, str):
            cleaned[key] = redact_text(value)[:_MAX_DETAIL]
        elif isinstance(value, (bool, int, float)) or value is None:
            cleaned[key] = value
        elif isinstance(value, (list, tuple, set, frozenset)):
            cleaned[key] = [redact_text(str(item))[:_MAX_DETAIL] for item in sorted(value, key=str)][:50]
        else:
            cleaned[key] = redact_text(str(value))[:_MAX_DETAIL]
    return cleaned


def record(
    session: Session,
    action: str,
    mapping: ExternalSystemMapping | None = None,
    *,
    details: Mapping[str, Any] | None = None,
    outcome: str = "ok",
    actor: Actor | None = None,
    mapping_id: uuid.UUID | None = None,
    mapping_name: str | None = None,
) -> None:
    """Add an entry to `session`'s transaction (it commits, or rolls back, with the change)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    who = actor or current_actor()
    session.add(
        AuditEntry(
            at=utcnow(),
            actor=who.name,
            actor_role=who.role,
            source=who.source,
            action=action,
            mapping_id=mapping.id if mapping is not None else mapping_id,
            mapping_name=mapping.system_name if mapping is not None else mapping_name,
            outcome=outcome,
            details=_clean(details),
            run_id=who.run_id,
        )
    )


def record_now(url: str, action: str, **kwargs: Any) -> None:
    """An entry in its own transaction: for refusals, whose action never happened."""
    with session_factory(url).begin() as session:
        record(session, action, **kwargs)


@dataclass(frozen=True, slots=True)
class AuditRow:
    at: dt.datetime
    actor: str
    actor_role: str | None
    source: str
    action: str
    mapping: str | None
    mapping_id: str | None
    outcome: str
    details: dict[str, Any]
    run_id: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "actor": self.actor,
            "actor_role": self.actor_role,
            "source": self.source,
            "action": self.action,
            "mapping": self.mapping,
            "mapping_id": self.mapping_id,
            "outcome": self.outcome,
            "details": self.details,
            "run_id": self.run_id,
        }


def list_entries(
    url: str,
    *,
    mapping_id: uuid.UUID | None = None,
    action: str | None = None,
    actor: str | None = None,
    limit: int = 100,
) -> list[AuditRow]:
    """Newest first.

    An action no entry can have, or a limit below 1, is refused: a typo must not read as "nothing
    happened" in an audit log.
    """
    if limit < 1:
        raise ValueError(f"limit {limit}: must be at least 1")
    if action is not None and not any(
        a.startswith(action) if action.endswith(".") else a == action for a in ACTIONS
    ):
        raise ValueError(f"action {action!r} is not an audit action; one of: {', '.join(sorted(ACTIONS))}")
    query = sa.select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if mapping_id is not None:
        query = query.where(AuditEntry.mapping_id == mapping_id)
    if action is not None:
        query = query.where(
            AuditEntry.action.startswith(action) if action.endswith(".") else AuditEntry.action == action
        )
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    with session_factory(url)() as session:
        return [
            AuditRow(
                e.at,
                e.actor,
                e.actor_role,
                e.source,
                e.action,
                e.mapping_name,
                str(e.mapping_id) if e.mapping_id else None,
                e.outcome,
                dict(e.details or {}),
                e.run_id,
            )
            for e in session.scalars(query)
        ]
