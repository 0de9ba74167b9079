"""Sends queued messages through the active mappings of their system_type, in priority order.

Each message goes out exactly once, through the first route that takes it:

- a route whose circuit is open (`catalog.circuit`) is skipped without a call, and so is a route
  that failed `skip_after_failures` times in a row in this dispatch (no point paying its timeout
  for every message of an outage; a message it refuses, such as an unknown chat, is no failure of it), a route that has no address for the message, or one whose
  client cannot be built;
- a send is made once (`write_records(..., attempts=1)`): a refusal that proves nothing was sent
  (429, 4xx, or a 5xx / timeout / dropped connection after which `find_written` found nothing)
  moves the message to the next route; the dispatch itself is the retry;
- before a send, the attempt is written on the message (`routing`, outcome `attempting`) and
  committed: a dispatcher killed mid-send leaves a claim that expires (`lease_seconds`) and an
  attempt that the next dispatcher looks up with that route's `find_written` before anything
  else; nothing is sent again, anywhere, while it is unresolved;
- a lost answer that cannot be looked up now (the lookup failed too) keeps the message queued,
  unresolved, and it is never `failed` (it may have gone out): after `max_attempts` passes it goes
  to `needs_person`, as does at once one that can never be looked up (Telegram
  `send_unverifiable`, SendGrid `needs_a_person`); the route's mapping gets a task, and a person
  checks the chat or the activity log;
- a message every route refused for good (validation, no address) is `failed`; one refused for
  now (429, 5xx, open circuit, a refused credential, a client that cannot be built) waits for the
  next pass, up to `max_attempts` passes.

A half-open circuit lets messages through: the circuit closes with the mapping's next successful
sync or probe, not with a send. Each opening of a route's credentials is audited.

Every route considered is one entry of the message's `routing`: mapping, provider, outcome
(sent / found / failed / skipped / unknown / not_sent / needs_person) and why.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from esm_dagster.catalog import audit
from esm_dagster.catalog.circuit import Circuit, circuit_of
from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.models import (
    ExternalSystemMapping,
    MessageStatus,
    OutboundMessage,
    SyncStatus,
    SystemType,
)
from esm_dagster.catalog.tasks import open_task
from esm_dagster.catalog.types import utcnow
from esm_dagster.providers.base import NOT_SENT_CODE, Provider, ProviderError
from esm_dagster.providers.factory import build_provider
from esm_dagster.security.vault import Vault, VaultError
from esm_dagster.sync.messages.queue import candidates, claim
from esm_dagster.sync.messages.shaping import SEND_WRITES, NoAddress, provider_message_id, send_record
from esm_dagster.sync.outbound import AMBIGUOUS_CLASSES, idempotency_key, write_records

log = logging.getLogger("esm_dagster.messages")

ProviderBuilder = Callable[..., Provider]
UNRESOLVED = frozenset({"attempting", "unknown"})
MESSAGE_TASK = "unverifiable_message"  # the task reason (catalog.tasks.REASONS)
CIRCUIT_REREAD_SECONDS = 5.0
ROUTE_CLASSES = frozenset({"auth"})  # failures of the mapping rather than of the message
_TEXT = 300  # an error text kept on the message: enough to act on, not a log dump


@dataclass
class DispatchReport:
    claimed: int = 0
    sent: int = 0
    found: int = 0  # sent by an earlier attempt whose answer was lost: found, not resent
    failed: int = 0
    needs_person: int = 0
    waiting: int = 0  # back in the queue (every route busy or failing, or a lookup pending)
    by_mapping: dict[str, int] = field(default_factory=dict)  # system_name -> messages it sent

    def summary(self) -> str:
        routes = ", ".join(f"{name}: {n}" for name, n in sorted(self.by_mapping.items())) or "none"
        return (
            f"{self.claimed} claimed, {self.sent} sent, {self.found} found already sent, "
            f"{self.waiting} waiting, {self.failed} failed, {self.needs_person} need a person (by route: {routes})"
        )


@dataclass
class _Route:
    row: ExternalSystemMapping
    provider: Provider | None = None
    credentials: dict[str, Any] | None = None
    broken: str | None = None  # why its client cannot be built, once known
    circuit: Circuit | None = None
    circuit_read_at: dt.datetime | None = None


def route_key(row: ExternalSystemMapping, message: OutboundMessage) -> str:
    """The idempotency key of `message` on `row`: each route's marker is its own."""
    return idempotency_key(row.id, SEND_WRITES[row.provider_name], str(message.id), 1)


def unresolved_attempt(routing: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last attempt of the message when its outcome is not known yet, else None."""
    if routing and routing[-1].get("outcome") in UNRESOLVED:
        return routing[-1]
    return None


class Dispatcher:
    """One pass over the queue. Not thread-safe: run one per process (claims make many safe)."""

    def __init__(
        self,
        database_url: str,
        *,
        vault: Vault | None = None,
        provider_builder: ProviderBuilder = build_provider,
        lease_seconds: float = 300.0,
        skip_after_failures: int = 3,
        max_attempts: int = 10,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.url = database_url
        self.Session: sessionmaker[Session] = session_factory(database_url)
        self._vault = vault
        self._build = provider_builder
        self.lease_seconds = lease_seconds
        self.skip_after_failures = skip_after_failures
        self.max_attempts = max_attempts
        self.clock = clock
        self._routes: dict[str, list[_Route]] = {}
        self._by_id: dict[uuid.UUID, _Route] = {}
        self._failures: collections.Counter[uuid.UUID] = collections.Counter()

    # ---- the pass -------------------------------------------------------------------------------
    def run(self, limit: int = 500) -> DispatchReport:
        report = DispatchReport()
        try:
            with self.Session() as session:
                ids = candidates(session, self.clock(), self.lease_seconds, limit)
            for message_id in ids:
                with self.Session.begin() as session:
                    if not claim(session, message_id, self.clock(), self.lease_seconds):
                        continue
                report.claimed += 1
                try:
                    self._deliver(message_id, report)
                except Exception as exc:
                    # The claim stays: after the lease the next pass looks up any attempt first.
                    log.error(f"message {message_id}: delivery stopped by {type(exc).__name__}; left claimed")
                    report.waiting += 1
        finally:
            self.close()
        return report

    def close(self) -> None:
        for route in self._by_id.values():
            if route.provider is not None:
                route.provider.close()
                route.provider = None

    def _deliver(self, message_id: uuid.UUID, report: DispatchReport) -> None:
        message = self._load(message_id)
        routes = self._routes_of(message.system_type)
        start, retry_later = 0, False
        pending = unresolved_attempt(message.routing)
        if pending is not None:
            route = self._route_by_id(uuid.UUID(pending["mapping_id"]))
            if route is None:
                gone = "the mapping of an unresolved attempt is gone: whether it was sent cannot be looked up"
                self._finish(message, MessageStatus.NEEDS_PERSON, report, error=gone)
                return
            if self._resolve(message, route, pending, report) != "not_sent":
                return
            # Not sent there: go on with the routes after it now; it is tried again next pass.
            ids = [r.row.id for r in routes]
            start = ids.index(route.row.id) + 1 if route.row.id in ids else 0
            retry_later = True
        for route in routes[start:]:
            outcome = self._try(message, route, report)
            if outcome in ("sent", "held"):
                return
            retry_later = retry_later or outcome == "retry"
        if not routes:
            self._note(message, last_error=f"no active mapping of system_type {message.system_type}")
            retry_later = True
        if retry_later and message.attempts < self.max_attempts:
            self._release(message, report)
        else:
            self._finish(message, MessageStatus.FAILED, report)

    # ---- one route ------------------------------------------------------------------------------
    def _try(self, message: OutboundMessage, route: _Route, report: DispatchReport) -> str:
        """sent | held (outcome unknown: stop) | retry (refused, may work later) | refused."""
        row = route.row
        circuit = self._circuit(route)
        if circuit.is_open:
            self._append(message, route, "skipped", write=False, reason=circuit.describe())
            return "retry"
        if self._failures[row.id] >= self.skip_after_failures:
            reason = f"failed {self._failures[row.id]} times in a row in this dispatch"
            self._append(message, route, "skipped", write=False, reason=reason)
            return "retry"
        provider = self._client(route)
        if provider is None:
            self._append(message, route, "skipped", write=False, reason=route.broken)
            return "retry"  # the mapping's configuration, which a person may fix
        try:
            record = send_record(row, message, route.credentials or {})
        except NoAddress as exc:
            self._append(message, route, "skipped", write=False, reason=str(exc))
            return "refused"
        write, key = SEND_WRITES[row.provider_name], route_key(row, message)
        self._append(message, route, "attempting")  # committed before the send: see the module doc
        try:
            (outcome,) = write_records(provider, write, [record], [key], attempts=1)
        except ProviderError as lookup:  # the send's answer was lost and find_written could not tell
            return self._unknown(message, route, lookup, report)
        except ValueError as exc:  # the provider refused the record before sending anything
            self._settle(message, "failed", reason=str(exc)[:_TEXT])
            return "refused"
        if outcome.status in ("written", "found"):
            self._failures[row.id] = 0
            result = outcome.result or {}
            self._settle(message, "sent" if outcome.status == "written" else "found", write=False)
            self._finish(
                message,
                MessageStatus.SENT,
                report,
                route=route,
                provider_id=provider_message_id(row.provider_name, result),
                found=outcome.status == "found",
            )
            return "sent"
        error = outcome.error
        assert error is not None
        route_failed = error.retryable or error.error_class in ROUTE_CLASSES
        if (
            route_failed
        ):  # a message the provider refuses (unknown chat, bad number) says nothing of the route
            self._failures[row.id] += 1
        after_lookup = error.error_class in AMBIGUOUS_CLASSES and error.code != NOT_SENT_CODE
        self._settle(
            message,
            "failed",
            reason=str(error)[:_TEXT] + (" (looked up: not sent)" if after_lookup else ""),
            error_class=error.error_class,
            code=error.code,
            retryable=error.retryable,
        )
        # A refused credential is the route's problem, not the message's: it may be fixed.
        return "retry" if route_failed else "refused"

    def _unknown(
        self, message: OutboundMessage, route: _Route, lookup: ProviderError, report: DispatchReport
    ) -> str:
        text = str(lookup)[:_TEXT]
        if lookup.retryable or lookup.error_class in AMBIGUOUS_CLASSES:
            self._failures[route.row.id] += 1
            reason = f"the answer was lost and the lookup failed: {text}"
            self._settle(message, "unknown", write=False, reason=reason)
            self._hold(message, route, report, reason)
        else:
            self._settle(message, "needs_person", write=False, reason=text, code=lookup.code)
            self._finish(message, MessageStatus.NEEDS_PERSON, report, route=route, error=text)
        return "held"

    def _resolve(
        self, message: OutboundMessage, route: _Route, pending: dict[str, Any], report: DispatchReport
    ) -> str | None:
        """Look up an attempt whose outcome is unknown: found | not_sent | held (still unknown)."""
        provider = self._client(route)
        if provider is None:
            self._hold(message, route, report, f"cannot look up the attempt: {route.broken}")
            return "held"
        row = route.row
        try:
            record = send_record(row, message, route.credentials or {})
            found = provider.find_written(SEND_WRITES[row.provider_name], record, route_key(row, message))
        except NoAddress as exc:
            self._hold(message, route, report, f"cannot look up the attempt: {exc}")
            return "held"
        except ProviderError as error:
            text = str(error)[:_TEXT]
            if error.retryable or error.error_class in AMBIGUOUS_CLASSES:
                self._hold(message, route, report, f"lookup at {row.system_name} failed: {text}")
                return "held"
            self._append(message, route, "needs_person", reason=text, code=error.code)
            self._finish(message, MessageStatus.NEEDS_PERSON, report, route=route, error=text)
            return "held"
        if found is not None:
            self._append(
                message, route, "found", write=False, reason="an earlier attempt was sent (looked up)"
            )
            self._finish(
                message,
                MessageStatus.SENT,
                report,
                route=route,
                provider_id=provider_message_id(row.provider_name, found),
                found=True,
            )
            return "found"
        self._append(
            message,
            route,
            "not_sent",
            write=False,
            reason=f"looked up after {pending.get('outcome')}: not sent",
        )
        return "not_sent"

    # ---- routes and clients ---------------------------------------------------------------------
    def _routes_of(self, system_type: SystemType | str) -> list[_Route]:
        kind = SystemType(system_type).value
        if kind not in self._routes:
            with self.Session() as session:
                rows = list(
                    session.scalars(
                        sa.select(ExternalSystemMapping)
                        .where(
                            ExternalSystemMapping.system_type == SystemType(kind),
                            ExternalSystemMapping.is_active.is_(True),
                            ExternalSystemMapping.sync_status.in_([SyncStatus.ACTIVE, SyncStatus.ERROR]),
                            ExternalSystemMapping.provider_name.in_(sorted(SEND_WRITES)),
                        )
                        .order_by(ExternalSystemMapping.priority, ExternalSystemMapping.system_name)
                    )
                )
                session.expunge_all()
            self._routes[kind] = [self._by_id.setdefault(row.id, _Route(row)) for row in rows]
        return self._routes[kind]

    def _route_by_id(self, mapping_id: uuid.UUID) -> _Route | None:
        if mapping_id not in self._by_id:
            with self.Session() as session:
                row = session.get(ExternalSystemMapping, mapping_id)
                if row is None:
                    return None
                session.expunge(row)
            self._by_id[mapping_id] = _Route(row)
        return self._by_id[mapping_id]

    def _client(self, route: _Route) -> Provider | None:
        if route.provider is None and route.broken is None:
            row = route.row
            with self.Session.begin() as session:  # every opening of credentials is audited
                live = session.get(ExternalSystemMapping, row.id)
                if live is not None:
                    audit.record(session, "credentials.read", live, details={"purpose": "messages"})
            try:
                self._vault = self._vault or Vault.from_env()
                credentials = self._vault.decrypt(row.credentials, mapping=repr(row.system_name))
                route.provider = self._build(row, credentials, catalog_url=self.url)
                route.credentials = dict(credentials)
            except (VaultError, ValueError, ProviderError) as exc:  # ProviderConfigError is a ValueError
                route.broken = f"client cannot be built: {str(exc)[:_TEXT]}"
        return route.provider

    # ---- the message row ------------------------------------------------------------------------
    def _circuit(self, route: _Route) -> Circuit:
        """The route's circuit, read again once it is `CIRCUIT_REREAD_SECONDS` old (it changes with
        syncs and probes, not with each message of a pass)."""
        now = self.clock()
        stale = route.circuit_read_at is None or (now - route.circuit_read_at).total_seconds() >= (
            CIRCUIT_REREAD_SECONDS
        )
        if route.circuit is None or stale:
            with self.Session() as session:
                route.circuit = circuit_of(session, route.row, now)
            route.circuit_read_at = now
        if (
            route.circuit.state == "open"
            and route.circuit.half_opens_at
            and now >= route.circuit.half_opens_at
        ):
            with self.Session() as session:  # the cool-down ended within the pass
                route.circuit = circuit_of(session, route.row, now)
            route.circuit_read_at = now
        return route.circuit

    def _load(self, message_id: uuid.UUID) -> OutboundMessage:
        with self.Session() as session:
            message = session.get(OutboundMessage, message_id)
            if message is None:
                raise LookupError(f"outbound message {message_id} is gone")
            session.expunge(message)
            return message

    def _update(self, message: OutboundMessage, **values: Any) -> OutboundMessage:
        with self.Session.begin() as session:
            row = session.get(OutboundMessage, message.id)
            assert row is not None
            for name, value in values.items():
                setattr(row, name, value)
            session.flush()
            session.expunge(row)
            return row

    def _note(self, message: OutboundMessage, **values: Any) -> OutboundMessage:
        """Write `values` and the routing so far (entries kept in memory go with the next write)."""
        values.setdefault("routing", message.routing)
        updated = self._update(message, **values)
        message.__dict__.update({k: getattr(updated, k) for k in values})
        return message

    def _append(
        self, message: OutboundMessage, route: _Route, outcome: str, *, write: bool = True, **details: Any
    ) -> None:
        """Add a routing entry; `write=False` keeps it in memory until the next write (a skip or a
        lookup result need not be durable on its own: losing it only repeats harmless work)."""
        entry = {
            "at": self.clock().isoformat(),
            "mapping_id": str(route.row.id),
            "mapping": route.row.system_name,
            "provider": route.row.provider_name,
            "outcome": outcome,
            **{k: v for k, v in details.items() if v is not None},
        }
        message.routing = [*message.routing, entry]
        if write:
            self._note(message)

    def _settle(self, message: OutboundMessage, outcome: str, *, write: bool = True, **details: Any) -> None:
        """Replace the `attempting` entry with what happened."""
        last = dict(message.routing[-1])
        last.update({"outcome": outcome, **{k: v for k, v in details.items() if v is not None}})
        values: dict[str, Any] = {"routing": [*message.routing[:-1], last]}
        if details.get("reason") and outcome in ("failed", "unknown"):
            values["last_error"] = details["reason"]
        if write:
            self._note(message, **values)
        else:
            message.__dict__.update(values)

    def _hold(self, message: OutboundMessage, route: _Route, report: DispatchReport, error: str) -> None:
        """Keep a message whose last attempt is unresolved: queued, or with a person once it has
        waited `max_attempts` passes. Never `failed`: it may have been sent."""
        if message.attempts >= self.max_attempts:
            waited = f"unresolved after {message.attempts} passes: {error}"
            self._finish(message, MessageStatus.NEEDS_PERSON, report, route=route, error=waited)
        else:
            self._release(message, report, error=error)

    def _release(self, message: OutboundMessage, report: DispatchReport, error: str | None = None) -> None:
        values: dict[str, Any] = {"status": MessageStatus.QUEUED.value, "claimed_at": None}
        if error is not None:
            values["last_error"] = error
        self._note(message, **values)
        report.waiting += 1

    def _finish(
        self,
        message: OutboundMessage,
        status: MessageStatus,
        report: DispatchReport,
        *,
        route: _Route | None = None,
        provider_id: str | None = None,
        found: bool = False,
        error: str | None = None,
    ) -> None:
        values: dict[str, Any] = {"status": status.value, "claimed_at": None}
        if status is MessageStatus.SENT:
            assert route is not None
            values.update(
                routed_mapping_id=route.row.id, provider_message_id=provider_id, sent_at=self.clock()
            )
            report.sent += 1
            report.found += int(found)
            name = route.row.system_name
            report.by_mapping[name] = report.by_mapping.get(name, 0) + 1
            log.info(
                f"message {message.id} sent through {name!r}" + (" (found already sent)" if found else "")
            )
        elif status is MessageStatus.NEEDS_PERSON:
            report.needs_person += 1
            if route is not None:
                self._ask_a_person(route.row, message, error or "")
        else:
            report.failed += 1
        if error is not None:
            values["last_error"] = error
        self._note(message, **values)

    def _ask_a_person(self, row: ExternalSystemMapping, message: OutboundMessage, error: str) -> None:
        """One open task per mapping (tasks dedupe by mapping and reason), naming the message."""
        detail = f"message {message.id} (key {message.idempotency_key!r}): {error}"
        with self.Session.begin() as session:
            live = session.get(ExternalSystemMapping, row.id)
            if live is not None:
                open_task(session, live, MESSAGE_TASK, detail)


def dispatch(database_url: str, *, limit: int = 500, **options: Any) -> DispatchReport:
    """One pass over the queue (see `Dispatcher`)."""
    return Dispatcher(database_url, **options).run(limit=limit)
