"""Sending an alert to every channel once, and only once, however many times it is raised.

Sensors re-evaluate, runs retry, and two daemons can notice the same failure: without a shared
record, an on-call engineer gets the same page five times and learns to ignore it. The record is
the `esm_alert` table, one row per (dedup_key, channel), and the order of operations is what
makes it safe:

1. **claim**: insert the row as `pending`. The unique constraint decides races between processes
   (the loser's insert raises IntegrityError and it delivers nothing). A row that is `failed`
   (or `pending` for longer than `stale_after`, i.e. its sender died mid-delivery) is taken over
   with a conditional UPDATE, which is just as race-free; a `sent` row is never taken over.
2. **deliver** on that one channel; whatever goes wrong is caught and recorded, so one broken
   channel never stops the others.
3. **mark** the row `sent` or `failed`, with the attempt count and the redacted error.

The claim's `created_at` is reset on each take-over: it is the lease clock of the current
attempt, so an attempt in flight is never mistaken for an abandoned one.

If the catalog itself cannot be written (it may be the very thing that failed), the alert is
still delivered, without deduplication, and the result says `recorded=False`: a duplicate page
is better than a silent outage.

Nothing secret reaches a channel, a log line or the table: the alert and every error are scrubbed
with `redact_text` plus the clear-text forms of the channels' own secrets and any the caller adds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
from collections.abc import Iterable, Sequence

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from esm_dagster.alerts.channels import Channel
from esm_dagster.alerts.config import channels_from_env
from esm_dagster.alerts.message import MAX_SUBJECT, Alert
from esm_dagster.catalog.db import database_url as default_database_url
from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.models import AlertDelivery
from esm_dagster.catalog.types import utcnow
from esm_dagster.security.redact import redact_text
from esm_dagster.security.secret import Secret

log = logging.getLogger(__name__)

MAX_ERROR = 2000
DEFAULT_STALE_AFTER = dt.timedelta(minutes=10)


class DeliveryStatus(enum.StrEnum):
    SENT = "sent"
    FAILED = "failed"
    DUPLICATE = "duplicate"  # already sent, or being sent right now by someone else


@dataclasses.dataclass(frozen=True)
class DeliveryResult:
    """What happened to one alert on one channel during one `send`."""

    channel: str
    status: DeliveryStatus
    attempts: int  # delivery attempts recorded for this (dedup_key, channel), this one included
    error: str | None = None  # redacted
    recorded: bool = True  # False: the catalog could not be written; delivered without dedupe


@dataclasses.dataclass(frozen=True)
class _Claim:
    attempts: int
    mine: bool


def _clear(values: Iterable[str | Secret]) -> list[str]:
    return [v.reveal() if isinstance(v, Secret) else str(v) for v in values if v]


class AlertDispatcher:
    """Deliver alerts to the configured channels, deduplicated through `esm_alert`."""

    def __init__(
        self,
        database_url: str,
        channels: Sequence[Channel],
        *,
        secrets: Iterable[str | Secret] = (),
        stale_after: dt.timedelta = DEFAULT_STALE_AFTER,
    ) -> None:
        names = [c.name for c in channels]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"alert channel names must be unique; repeated: {', '.join(duplicates)}")
        self._sessions = session_factory(database_url)
        self.channels = tuple(channels)
        self.stale_after = stale_after
        self._secrets = _clear(secrets) + [s for c in self.channels for s in c.secrets()]

    @classmethod
    def from_env(cls, database_url: str | None = None) -> AlertDispatcher:
        """Channels from `ESM_ALERTS_FILE`, catalog from `ESM_DATABASE_URL` (or the given URL)."""
        return cls(database_url or default_database_url(), channels_from_env())

    def __repr__(self) -> str:
        return f"AlertDispatcher(channels={[c.name for c in self.channels]!r})"

    # ---- public -----------------------------------------------------------------------------------
    def send(self, alert: Alert, *, secrets: Iterable[str | Secret] = ()) -> list[DeliveryResult]:
        """Deliver `alert` on every channel that has not had it yet; one result per channel.

        Never raises for a delivery or catalog problem; `secrets` are extra clear-text values
        (e.g. the mapping's decrypted credentials) to scrub from everything that leaves.
        """
        if not isinstance(alert, Alert):
            raise TypeError(f"send() takes an Alert, not {type(alert).__name__}")
        known = self._secrets + _clear(secrets)
        alert = alert.redacted(known)
        return [self._send_one(alert, channel, known) for channel in self.channels]

    # ---- one channel ------------------------------------------------------------------------------
    def _send_one(self, alert: Alert, channel: Channel, known: list[str]) -> DeliveryResult:
        recorded = True
        try:
            claim = self._claim(alert, channel.name)
        except SQLAlchemyError as exc:
            recorded = False
            claim = _Claim(attempts=1, mine=True)
            log.error(
                "alert %s: cannot record on channel %s (%s); delivering without deduplication",
                alert.dedup_key,
                channel.name,
                redact_text(f"{type(exc).__name__}: {exc}", known)[:300],
            )
        if not claim.mine:
            log.info("alert %s: already sent (or in flight) on channel %s", alert.dedup_key, channel.name)
            return DeliveryResult(channel.name, DeliveryStatus.DUPLICATE, claim.attempts)

        error: str | None = None
        note: str | None = None
        try:
            note = channel.deliver(alert)
        except Exception as exc:  # any failure of one channel is that channel's, recorded below
            error = redact_text(f"{type(exc).__name__}: {exc}", known)[:MAX_ERROR]
        if note:
            note = redact_text(note, known)[:MAX_ERROR]
        status = DeliveryStatus.FAILED if error else DeliveryStatus.SENT

        if recorded:
            try:
                self._mark(alert, channel.name, status, error or note)
            except SQLAlchemyError as exc:
                recorded = False
                log.error(
                    "alert %s: %s on channel %s but not recorded (%s)",
                    alert.dedup_key,
                    status,
                    channel.name,
                    redact_text(f"{type(exc).__name__}: {exc}", known)[:300],
                )
        if error:
            log.warning(
                "alert %s: channel %s failed (attempt %d): %s",
                alert.dedup_key,
                channel.name,
                claim.attempts,
                error,
            )
        else:
            log.info(
                "alert %s: sent on channel %s (attempt %d)", alert.dedup_key, channel.name, claim.attempts
            )
        return DeliveryResult(channel.name, status, claim.attempts, error or note, recorded)

    # ---- the esm_alert row ------------------------------------------------------------------------
    def _key(self, alert: Alert, channel: str) -> ColumnElement[bool]:
        return and_(AlertDelivery.dedup_key == alert.dedup_key, AlertDelivery.channel == channel)

    def _claim(self, alert: Alert, channel: str) -> _Claim:
        mapping_id = alert.mapping_id
        for _ in range(3):
            if self._insert(alert, channel, mapping_id):
                return _Claim(attempts=1, mine=True)
            claim = self._take_over(alert, channel)
            if claim is not None:
                return claim
            # No row, yet the insert was refused: the mapping was deleted since the alert was
            # built (foreign key). Keep the alert, drop the link.
            mapping_id = None
        raise IntegrityError("insert into esm_alert refused with no conflicting row", None, Exception())

    def _insert(self, alert: Alert, channel: str, mapping_id: object) -> bool:
        with self._sessions() as session:
            session.add(
                AlertDelivery(
                    dedup_key=alert.dedup_key,
                    channel=channel,
                    mapping_id=mapping_id,
                    kind=alert.kind,
                    subject=alert.subject[:MAX_SUBJECT],
                    status="pending",
                    attempts=1,
                    created_at=utcnow(),
                )
            )
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return False
        return True

    def _take_over(self, alert: Alert, channel: str) -> _Claim | None:
        now = utcnow()
        with self._sessions() as session:
            result = session.execute(
                update(AlertDelivery)
                .where(
                    self._key(alert, channel),
                    or_(
                        AlertDelivery.status == "failed",
                        and_(
                            AlertDelivery.status == "pending",
                            AlertDelivery.created_at < now - self.stale_after,
                        ),
                    ),
                )
                .values(status="pending", attempts=AlertDelivery.attempts + 1, created_at=now, error=None)
                .execution_options(synchronize_session=False)
            )
            attempts = session.scalar(select(AlertDelivery.attempts).where(self._key(alert, channel)))
            session.commit()
        if attempts is None:
            return None
        return _Claim(attempts=attempts, mine=result.rowcount == 1)  # type: ignore[attr-defined]

    def _mark(self, alert: Alert, channel: str, status: DeliveryStatus, error: str | None) -> None:
        with self._sessions() as session:
            session.execute(
                update(AlertDelivery)
                .where(self._key(alert, channel), AlertDelivery.status == "pending")
                .values(
                    status=str(status),
                    error=error,
                    sent_at=utcnow() if status == DeliveryStatus.SENT else None,
                )
                .execution_options(synchronize_session=False)
            )
            session.commit()
