"""The catalog: `external_system_mapping` (one row per connection) and the tables the engine needs.

Column names and enum values are the seed's, so that the club's existing rows and tools keep
working; engine tables (sync state, runs, quarantine) are ours and are prefixed `esm_`.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from esm_dagster.catalog.types import JSONType, UTCDateTime, utcnow


class SystemType(enum.StrEnum):
    PAYMENT_GATEWAY = "payment_gateway"
    EMAIL_SERVICE = "email_service"
    SMS_PROVIDER = "sms_provider"
    SOCIAL_MEDIA = "social_media"
    ANALYTICS = "analytics"
    CRM = "crm"
    ERP = "erp"
    BOOKING_PLATFORM = "booking_platform"


class AuthenticationType(enum.StrEnum):
    API_KEY = "api_key"
    OAUTH2 = "oauth2"
    BASIC_AUTH = "basic_auth"
    JWT = "jwt"
    WEBHOOK = "webhook"


class SyncFrequency(enum.StrEnum):
    REAL_TIME = "real_time"
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    MANUAL = "manual"


class SyncStatus(enum.StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    ERROR = "error"
    MAINTENANCE = "maintenance"


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


OPEN_TASK_STATUSES = (TaskStatus.PENDING.value, TaskStatus.IN_PROGRESS.value)


class UserRole(enum.StrEnum):
    ADMIN = "admin"
    ENGINEER = "engineer"
    VIEWER = "viewer"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Store the lower-case values (the seed's), not the Python member names.
    return Enum(cls, name=name, values_callable=lambda e: [m.value for m in e], validate_strings=True)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSONType}


class User(Base):
    __tablename__ = "user"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str | None] = mapped_column(String(320))
    full_name: Mapped[str | None] = mapped_column(String(255))
    phone_number: Mapped[str | None] = mapped_column(String(32))
    role: Mapped[UserRole | None] = mapped_column(_enum(UserRole, "user_role"))
    # Server defaults: synced rows (Stripe customers -> user) are written by the loader, which
    # only knows the mapped columns.
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true(), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now(), nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now(), nullable=False
    )


class ExternalSystemMapping(Base):
    __tablename__ = "external_system_mapping"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    system_name: Mapped[str] = mapped_column(String(100), nullable=False)
    system_type: Mapped[SystemType] = mapped_column(_enum(SystemType, "system_type"), nullable=False)
    provider_name: Mapped[str] = mapped_column(String(100), nullable=False)
    api_endpoint: Mapped[str] = mapped_column(String(500), nullable=False)
    api_version: Mapped[str | None] = mapped_column(String(50))
    authentication_type: Mapped[AuthenticationType] = mapped_column(
        _enum(AuthenticationType, "authentication_type"), nullable=False
    )
    # Ciphertext only: {"fernet": "<token>"}. Decrypted inside a run, never at load time.
    credentials: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    mapping_rules: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    sync_frequency: Mapped[SyncFrequency] = mapped_column(
        _enum(SyncFrequency, "sync_frequency"), nullable=False, default=SyncFrequency.DAILY
    )
    last_sync_at: Mapped[dt.datetime | None] = mapped_column()
    sync_status: Mapped[SyncStatus] = mapped_column(
        _enum(SyncStatus, "sync_status"), nullable=False, default=SyncStatus.ACTIVE
    )
    error_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error_message: Mapped[str | None] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=5)
    timeout_seconds: Mapped[int] = mapped_column(Integer, nullable=False, default=30)
    retry_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=3)
    created_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("user.id", ondelete="SET NULL")
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow, nullable=False)

    def __repr__(self) -> str:
        # Never include credentials: reprs end up in tracebacks and Dagster event logs.
        return f"<ExternalSystemMapping {self.system_name!r} {self.provider_name} id={self.id}>"


class SyncState(Base):
    """The durable cursor of one stream of one mapping; written in the same transaction as the rows."""

    __tablename__ = "esm_sync_state"

    mapping_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("external_system_mapping.id", ondelete="CASCADE"), primary_key=True
    )
    stream: Mapped[str] = mapped_column(String(100), primary_key=True)
    cursor: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow, nullable=False)


class SyncRun(Base):
    """One sync attempt of one mapping: the history behind metrics and health."""

    __tablename__ = "esm_sync_run"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    mapping_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("external_system_mapping.id", ondelete="CASCADE"), nullable=False, index=True
    )
    stream: Mapped[str] = mapped_column(String(100), nullable=False)
    dagster_run_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow, nullable=False)
    finished_at: Mapped[dt.datetime | None] = mapped_column()
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="running")
    full_refresh: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    records_read: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    records_written: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    records_rejected: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    pages: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error_class: Mapped[str | None] = mapped_column(String(40))
    error_message: Mapped[str | None] = mapped_column(Text)
    # "sync" or "probe" (the error-state sensor's cheap authenticated call): both count for
    # availability in the integration-health asset.
    kind: Mapped[str] = mapped_column(String(10), nullable=False, default="sync", server_default="sync")
    partition_key: Mapped[str | None] = mapped_column(String(40))
    window_start: Mapped[dt.datetime | None] = mapped_column()
    window_end: Mapped[dt.datetime | None] = mapped_column()
    api_calls: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    retries: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    rate_limit_waits: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    latency_p50_ms: Mapped[float | None] = mapped_column(Float)
    latency_p95_ms: Mapped[float | None] = mapped_column(Float)


class QuarantineRecord(Base):
    """A record the rules rejected: kept with its reasons and redacted payload for replay."""

    __tablename__ = "esm_quarantine"
    __table_args__ = (UniqueConstraint("mapping_id", "stream", "fingerprint"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    mapping_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("external_system_mapping.id", ondelete="CASCADE"), nullable=False
    )
    stream: Mapped[str] = mapped_column(String(100), nullable=False)
    # The external id where the record has one, else a hash of the payload: a re-run of the same
    # bad record updates its row instead of adding another.
    fingerprint: Mapped[str] = mapped_column(String(200), nullable=False)
    external_id: Mapped[str | None] = mapped_column(String(200))
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    first_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow, nullable=False)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow, nullable=False)
    seen_count: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    resolved_at: Mapped[dt.datetime | None] = mapped_column()


Index("ix_esm_quarantine_open", QuarantineRecord.mapping_id, QuarantineRecord.resolved_at)
Index("ix_esm_sync_run_started", SyncRun.mapping_id, SyncRun.started_at)


class Task(Base):
    """The seed's TASK: work for a person when a mapping cannot heal itself.

    Opened by the sensors (revoked credentials, a circuit open for a day, conflicts waiting,
    repeated failures), assigned to the mapping's creator, closed when the mapping recovers.
    `reason` + `mapping_id` identify the situation: at most one open task per pair.
    """

    __tablename__ = "task"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[TaskStatus] = mapped_column(
        _enum(TaskStatus, "task_status"), nullable=False, default=TaskStatus.PENDING
    )
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=5)
    due_date: Mapped[dt.datetime | None] = mapped_column()
    assigned_to_user_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("user.id", ondelete="SET NULL")
    )
    mapping_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("external_system_mapping.id", ondelete="CASCADE")
    )
    reason: Mapped[str | None] = mapped_column(String(60))
    resolution: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow, nullable=False)
    completed_at: Mapped[dt.datetime | None] = mapped_column()


Index(
    "uq_task_open_reason",
    Task.mapping_id,
    Task.reason,
    unique=True,
    postgresql_where=Task.status.in_(OPEN_TASK_STATUSES),
    sqlite_where=Task.status.in_(OPEN_TASK_STATUSES),
)


class AlertDelivery(Base):
    """One alert sent (or tried) on one channel; the unique key is what deduplicates alerts."""

    __tablename__ = "esm_alert"
    __table_args__ = (UniqueConstraint("dedup_key", "channel"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    dedup_key: Mapped[str] = mapped_column(String(200), nullable=False)
    channel: Mapped[str] = mapped_column(String(60), nullable=False)
    mapping_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("external_system_mapping.id", ondelete="SET NULL")
    )
    kind: Mapped[str] = mapped_column(String(40), nullable=False)
    subject: Mapped[str] = mapped_column(String(300), nullable=False)
    status: Mapped[str] = mapped_column(String(10), nullable=False, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, nullable=False)
    sent_at: Mapped[dt.datetime | None] = mapped_column()


class IntegrationHealth(Base):
    """One mapping's health for one day: the rows behind the integration-health asset."""

    __tablename__ = "esm_integration_health"

    mapping_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("external_system_mapping.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    system_name: Mapped[str] = mapped_column(String(100), nullable=False)
    runs: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    successes: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    availability: Mapped[float | None] = mapped_column(Float)
    errors_by_class: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    error_rate: Mapped[float | None] = mapped_column(Float)
    latency_p95_ms: Mapped[float | None] = mapped_column(Float)
    records_written: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    records_rejected: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    validation_pass_rate: Mapped[float | None] = mapped_column(Float)
    sla_compliant: Mapped[bool | None] = mapped_column(Boolean)
    api_calls: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    api_budget: Mapped[int | None] = mapped_column(Integer)
    computed_at: Mapped[dt.datetime] = mapped_column(default=utcnow, nullable=False)


class RateLimitBucket(Base):
    """The token bucket of one credential, shared by every run, partition and process using it.

    `bucket_key` is the provider and a truncated SHA-256 of the endpoint and the credential: the
    same key in two mappings shares one budget, and the key itself is never stored. `tokens` and
    `refilled_at` (unix seconds) are the state; `capacity` and `per_second` are the limits the last
    request was admitted under, kept so an operator can read the budget in the table.
    """

    __tablename__ = "esm_rate_limit"

    bucket_key: Mapped[str] = mapped_column(String(100), primary_key=True)
    provider_name: Mapped[str] = mapped_column(String(100), nullable=False)
    tokens: Mapped[float] = mapped_column(Float, nullable=False)
    refilled_at: Mapped[float] = mapped_column(Float, nullable=False)
    capacity: Mapped[float] = mapped_column(Float, nullable=False)
    per_second: Mapped[float] = mapped_column(Float, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, nullable=False)


class WebhookInboxEvent(Base):
    """One provider event received by `esm webhooks serve`, verified, waiting for its sync.

    The inbox is the hand-off between the receiver (which must answer the provider within
    seconds) and the real_time sensor (which launches the sync). `event_id` is the provider's id
    of the event, unique per mapping, so a provider retry never adds a row; `signature_digest`
    is a SHA-256 of the signature the delivery carried, so the exact same signed request sent
    twice is told apart from a retry. `batch_key` is set when the sensor asks for a run that
    covers the event and `processed_at` once a run with that key succeeded. The payload is stored
    with secret-looking fields masked.
    """

    __tablename__ = "esm_webhook_inbox"
    __table_args__ = (UniqueConstraint("mapping_id", "event_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    mapping_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("external_system_mapping.id", ondelete="CASCADE"), nullable=False
    )
    provider: Mapped[str] = mapped_column(String(100), nullable=False)
    event_id: Mapped[str] = mapped_column(String(200), nullable=False)
    event_type: Mapped[str | None] = mapped_column(String(200))
    signature_digest: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow, nullable=False)
    payload: Mapped[Any] = mapped_column(JSONType, nullable=False)
    batch_key: Mapped[str | None] = mapped_column(String(100))
    processed_at: Mapped[dt.datetime | None] = mapped_column()


Index("ix_esm_webhook_inbox_pending", WebhookInboxEvent.mapping_id, WebhookInboxEvent.processed_at)
Index("ix_esm_webhook_inbox_signature", WebhookInboxEvent.mapping_id, WebhookInboxEvent.signature_digest)


class AuditEntry(Base):
    """One thing a person or the system did to the catalog: append-only.

    No foreign key to the mapping: the history of a mapping outlives the mapping. On PostgreSQL
    triggers refuse UPDATE, DELETE and TRUNCATE for every role the application connects as; on
    SQLite triggers refuse UPDATE and DELETE (a file's owner can always rewrite the file).
    """

    __tablename__ = "esm_audit_log"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, nullable=False)
    actor: Mapped[str] = mapped_column(String(320), nullable=False)  # an operator's email, or "system"
    actor_role: Mapped[str | None] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(20), nullable=False)  # cli, dagster, webhooks, ...
    action: Mapped[str] = mapped_column(String(60), nullable=False)
    mapping_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    mapping_name: Mapped[str | None] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(10), nullable=False, default="ok")  # ok, denied, failed
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    run_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_esm_audit_log_mapping_at", "mapping_id", "at"),
        Index("ix_esm_audit_log_at", "at"),
    )


class SyncShadow(Base):
    """What a two-way mapping last agreed with the provider about one record.

    The base of every three-way comparison (`sync.changes`): a field whose internal value differs
    from `fields` was changed internally, one whose external value differs was changed at the
    provider, and a value we wrote comes back equal to `fields`, so it is not a change (no echo).
    `fields` holds the mapped values in canonical text (`sync.changes.canonical`); `digest` is
    their hash, so an unchanged row is recognised without comparing field by field.
    """

    __tablename__ = "esm_sync_shadow"

    mapping_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("external_system_mapping.id", ondelete="CASCADE"), primary_key=True
    )
    external_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    table_name: Mapped[str] = mapped_column(String(100), nullable=False)
    row_key: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)  # the target row's `id`
    fields: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    digest: Mapped[str] = mapped_column(String(64), nullable=False)
    # Bumped at every agreement: part of the idempotency key of the next push, so a value changed
    # back to an earlier one (A -> B -> A) is a new write, not a replay of the first.
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    internal_modified_at: Mapped[dt.datetime | None] = mapped_column()
    external_modified_at: Mapped[dt.datetime | None] = mapped_column()
    deleted_at: Mapped[dt.datetime | None] = mapped_column()  # deleted at the provider
    synced_at: Mapped[dt.datetime] = mapped_column(default=utcnow, nullable=False)


Index("ix_esm_sync_shadow_row", SyncShadow.mapping_id, SyncShadow.row_key)


class SyncConflict(Base):
    """One field both sides changed differently since the last agreement, and how it was settled.

    Every decision is a row: automatic ones (`external_wins`, `internal_wins`, `latest_wins`) are
    written already decided (`decided_by="policy:<name>"`); under `manual` the row waits with
    status `open` until `esm conflicts resolve` records the person's choice, which the next round
    applies (`applied_at`).
    """

    __tablename__ = "esm_sync_conflict"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    mapping_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("external_system_mapping.id", ondelete="CASCADE"), nullable=False
    )
    external_id: Mapped[str] = mapped_column(String(200), nullable=False)
    field: Mapped[str] = mapped_column(String(200), nullable=False)  # the target column
    policy: Mapped[str] = mapped_column(String(20), nullable=False)
    base_value: Mapped[Any] = mapped_column(JSONType, nullable=True)
    internal_value: Mapped[Any] = mapped_column(JSONType, nullable=True)
    external_value: Mapped[Any] = mapped_column(JSONType, nullable=True)
    internal_modified_at: Mapped[dt.datetime | None] = mapped_column()
    external_modified_at: Mapped[dt.datetime | None] = mapped_column()
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="open")  # open, decided
    resolution: Mapped[str | None] = mapped_column(String(20))  # internal, external
    decided_by: Mapped[str | None] = mapped_column(String(320))
    decided_at: Mapped[dt.datetime | None] = mapped_column()
    applied_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, nullable=False)


Index("ix_esm_sync_conflict_open", SyncConflict.mapping_id, SyncConflict.status, SyncConflict.external_id)


class MessageStatus(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"  # claimed by a dispatcher; a stale claim is looked up before any resend
    SENT = "sent"
    FAILED = "failed"  # every route refused it for good (validation, auth): nothing was sent
    NEEDS_PERSON = "needs_person"  # the outcome of a send cannot be known: never resent blindly


class OutboundMessage(Base):
    """One email, SMS or chat message waiting for (or done with) its delivery.

    The queue row is the message's single source of truth: `idempotency_key` is unique, so the
    same message enqueued twice is one row; `status` moves forward only, and a row leaves
    `sending` for `sent` only with the mapping that sent it (`routed_mapping_id`) and the
    provider's id. `routing` is the history of the delivery, one entry per mapping considered:
    which mapping, and why it was skipped (circuit open, no recipient field), failed (the error
    class) or sent it.
    """

    __tablename__ = "esm_outbound_message"
    __table_args__ = (
        UniqueConstraint("idempotency_key"),
        CheckConstraint("status in ('queued', 'sending', 'sent', 'failed', 'needs_person')", name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    system_type: Mapped[SystemType] = mapped_column(_enum(SystemType, "system_type"), nullable=False)
    recipient: Mapped[str] = mapped_column(String(320), nullable=False)
    subject: Mapped[str | None] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text, nullable=False)
    # Per-route extras (a Telegram chat id, an email for the email fallback): see sync/messages.
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    idempotency_key: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default=MessageStatus.QUEUED.value)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    routed_mapping_id: Mapped[uuid.UUID | None] = mapped_column(
        # Named by hand: the convention's name is longer than PostgreSQL's 63 characters.
        Uuid,
        ForeignKey(
            "external_system_mapping.id", ondelete="SET NULL", name="fk_esm_outbound_message_routed_mapping"
        ),
    )
    routing: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, nullable=False, default=list)
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, nullable=False)
    claimed_at: Mapped[dt.datetime | None] = mapped_column()
    sent_at: Mapped[dt.datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)


Index("ix_esm_outbound_message_queue", OutboundMessage.status, OutboundMessage.created_at)
