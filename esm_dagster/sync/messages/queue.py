"""The outbound message queue: enqueue once per key, claim one message per dispatcher.

A message is enqueued with a key the caller derives from what it is about (a booking reminder for
one booking): the same key enqueued twice is one row, so a job that re-runs after a crash does not
queue a second SMS. A dispatcher takes a message by a compare-and-set on its status (queued, or
sending with a claim older than the lease: a dispatcher that died mid-send); only the winner
sends it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from esm_dagster.catalog.models import MessageStatus, OutboundMessage, SystemType
from esm_dagster.catalog.types import utcnow
from esm_dagster.sync.dialect import upsert_statement

MESSAGE_SYSTEM_TYPES = frozenset({SystemType.EMAIL_SERVICE, SystemType.SMS_PROVIDER, SystemType.SOCIAL_MEDIA})
MAX_KEY = 200


def enqueue(
    session: Session,
    system_type: SystemType | str,
    recipient: str,
    body: str,
    key: str,
    *,
    subject: str | None = None,
    payload: dict[str, Any] | None = None,
) -> tuple[OutboundMessage, bool]:
    """The message for `key` and whether this call queued it (False: it was queued before)."""
    kind = SystemType(system_type)
    if kind not in MESSAGE_SYSTEM_TYPES:
        allowed = ", ".join(sorted(t.value for t in MESSAGE_SYSTEM_TYPES))
        raise ValueError(f"system_type {kind.value!r} sends no messages (one of {allowed})")
    if not key or len(key) > MAX_KEY:
        raise ValueError(f"message key must be 1..{MAX_KEY} characters (got {len(key)})")
    if not recipient or not body:
        raise ValueError(f"message {key!r}: recipient and body are required")
    if kind is SystemType.EMAIL_SERVICE and not subject:
        raise ValueError(f"message {key!r}: an email needs a subject")
    by_key = sa.select(OutboundMessage).where(OutboundMessage.idempotency_key == key)
    existing = session.scalar(by_key)
    if existing is not None:
        return existing, False
    # ON CONFLICT DO NOTHING, not a savepoint: a second process queueing the same key at the same
    # moment waits for the first and then inserts nothing, inside the caller's transaction.
    table = OutboundMessage.__table__
    assert isinstance(table, sa.Table)
    statement = upsert_statement(session.get_bind().dialect.name, table, ["idempotency_key"], [])
    inserted = session.execute(
        statement.values(
            id=uuid.uuid4(),
            system_type=kind,
            recipient=recipient,
            subject=subject,
            body=body,
            payload=dict(payload or {}),
            idempotency_key=key,
            status=MessageStatus.QUEUED.value,
            attempts=0,
            routing=[],
            created_at=utcnow(),
        )
    )
    message = session.scalars(by_key.execution_options(populate_existing=True)).one()
    return message, bool(getattr(inserted, "rowcount", 0) == 1)


def claimable(now: dt.datetime, lease_seconds: float) -> sa.ColumnElement[bool]:
    """Queued messages, and `sending` ones whose dispatcher has held them longer than the lease."""
    stale = now - dt.timedelta(seconds=lease_seconds)
    return sa.or_(
        OutboundMessage.status == MessageStatus.QUEUED.value,
        sa.and_(OutboundMessage.status == MessageStatus.SENDING.value, OutboundMessage.claimed_at < stale),
    )


def candidates(session: Session, now: dt.datetime, lease_seconds: float, limit: int) -> list[uuid.UUID]:
    """Ids of messages to dispatch, oldest first."""
    query = (
        sa.select(OutboundMessage.id)
        .where(claimable(now, lease_seconds))
        .order_by(OutboundMessage.created_at, OutboundMessage.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def claim(session: Session, message_id: uuid.UUID, now: dt.datetime, lease_seconds: float) -> bool:
    """Take the message for this dispatcher; False when another one took it first."""
    result = session.execute(
        sa.update(OutboundMessage)
        .where(OutboundMessage.id == message_id, claimable(now, lease_seconds))
        .values(
            status=MessageStatus.SENDING.value,
            claimed_at=now,
            attempts=OutboundMessage.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)
