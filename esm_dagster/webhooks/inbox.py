"""The webhook inbox: what the receiver writes and what the real_time sensor consumes.

Receiver side: `store` adds a verified delivery's events, one row per provider event id, and
reports the ones already there (a provider retry); `signature_seen` tells a byte-identical replay
of a signed request. Sensor side: events are claimed into a *batch* whose key becomes the run
key of the sync the sensor requests; a batch is marked processed only once a run with its key has
succeeded (see `orchestration.sensors`), so neither a lost run request nor a failed run drops one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.models import WebhookInboxEvent
from esm_dagster.rules.redaction import redact_record
from esm_dagster.security.secret import MASK
from esm_dagster.webhooks.events import InboxEvent


def signature_digest(token: str | None) -> str | None:
    return None if token is None else hashlib.sha256(token.encode()).hexdigest()


def scrub(payload: Any, secrets: Iterable[str]) -> Any:
    """The payload with secret-looking keys masked and any credential value of the mapping cut out
    wherever it appears (a provider may echo a token in a field with an innocent name)."""
    cleaned = redact_record(payload)
    values = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
    if not values:
        return cleaned
    text = json.dumps(cleaned, ensure_ascii=False)
    if not any(v in text for v in values):
        return cleaned
    return _replace(cleaned, values)


def _replace(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, dict):
        return {_replace(k, secrets): _replace(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
    return value


def signature_seen(session: Session, mapping_id: uuid.UUID, digest: str | None) -> bool:
    if digest is None:
        return False
    found = session.scalar(
        sa.select(WebhookInboxEvent.id)
        .where(WebhookInboxEvent.mapping_id == mapping_id, WebhookInboxEvent.signature_digest == digest)
        .limit(1)
    )
    return found is not None


@dataclass(frozen=True, slots=True)
class Stored:
    stored: list[str]
    duplicates: list[str]


def store(
    session: Session,
    mapping_id: uuid.UUID,
    provider: str,
    events: Sequence[InboxEvent],
    digest: str | None,
    *,
    secrets: Iterable[str] = (),
    now: dt.datetime,
) -> Stored:
    """Add each event not stored yet; the unique (mapping, event id) decides, so two concurrent
    deliveries of one event store it once."""
    stored: list[str] = []
    duplicates: list[str] = []
    secret_values = list(secrets)
    for event in events:
        row = WebhookInboxEvent(
            mapping_id=mapping_id,
            provider=provider,
            event_id=event.event_id,
            event_type=event.event_type,
            signature_digest=digest,
            received_at=now,
            payload=scrub(event.payload, secret_values),
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            duplicates.append(event.event_id)
            continue
        stored.append(event.event_id)
    return Stored(stored, duplicates)


# ---- the sensor's side ----------------------------------------------------------------------------
def batch_key(mapping_id: str, event_ids: Sequence[str]) -> str:
    """The run key of a batch: derived from the mapping and its events, so the same batch asked
    for twice is one Dagster run."""
    digest = hashlib.sha256("\n".join([mapping_id, *sorted(event_ids)]).encode()).hexdigest()
    return f"webhook:{digest[:32]}"


def next_key(key: str) -> str:
    """The key of a batch's next attempt after its runs failed: `key#1`, `key#2`, ..."""
    base, _, attempt = key.partition("#")
    return f"{base}#{int(attempt or 0) + 1}"


def _pending(mapping_id: uuid.UUID) -> Any:
    return sa.and_(WebhookInboxEvent.mapping_id == mapping_id, WebhookInboxEvent.processed_at.is_(None))


def claimed_batches(session: Session, mapping_id: str) -> dict[str, int]:
    """Batches asked for and not processed yet: key -> number of events."""
    rows = session.execute(
        sa.select(WebhookInboxEvent.batch_key, sa.func.count())
        .where(_pending(uuid.UUID(mapping_id)), WebhookInboxEvent.batch_key.is_not(None))
        .group_by(WebhookInboxEvent.batch_key)
    ).all()
    return {str(key): int(count) for key, count in rows}


def claim_new(session: Session, mapping_id: str) -> tuple[str, int] | None:
    """Put the mapping's unclaimed events in a new batch; its key and size, or None if none wait."""
    pending = sa.and_(_pending(uuid.UUID(mapping_id)), WebhookInboxEvent.batch_key.is_(None))
    rows = session.execute(sa.select(WebhookInboxEvent.id, WebhookInboxEvent.event_id).where(pending)).all()
    if not rows:
        return None
    key = batch_key(mapping_id, [event_id for _, event_id in rows])
    session.execute(
        sa.update(WebhookInboxEvent)
        .where(WebhookInboxEvent.id.in_([row_id for row_id, _ in rows]))
        .values(batch_key=key)
    )
    return key, len(rows)


def rekey(session: Session, mapping_id: str, key: str, new_key: str) -> None:
    """Move a batch whose runs failed to a new key, so the sensor can ask for another run."""
    session.execute(
        sa.update(WebhookInboxEvent)
        .where(_pending(uuid.UUID(mapping_id)), WebhookInboxEvent.batch_key == key)
        .values(batch_key=new_key)
    )


def mark_processed(session: Session, mapping_id: str, key: str, when: dt.datetime) -> int:
    result = session.execute(
        sa.update(WebhookInboxEvent)
        .where(_pending(uuid.UUID(mapping_id)), WebhookInboxEvent.batch_key == key)
        .values(processed_at=when)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def has_event(database_url: str, mapping_id: str, event_id: str) -> bool:
    """Whether this provider event reached the mapping's inbox (the reconcile poll's question)."""
    with session_factory(database_url)() as session:
        found = session.scalar(
            sa.select(WebhookInboxEvent.id).where(
                WebhookInboxEvent.mapping_id == uuid.UUID(mapping_id), WebhookInboxEvent.event_id == event_id
            )
        )
    return found is not None


# Processed events older than this are deleted: providers retry for at most a few days (Stripe and
# PayPal 3), and the rows are what recognises a retry, so they are kept well past that.
RETENTION = dt.timedelta(days=30)


def prune(session: Session, now: dt.datetime, retention: dt.timedelta = RETENTION) -> int:
    """Delete processed events older than the retention; unprocessed ones are never deleted."""
    result = session.execute(
        sa.delete(WebhookInboxEvent).where(
            WebhookInboxEvent.processed_at.is_not(None), WebhookInboxEvent.processed_at < now - retention
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
