"""Initial catalog: user, external_system_mapping, sync state, sync runs, quarantine.

Revision ID: 0001_initial
Revises:
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from esm_dagster.catalog.types import JSONType, UTCDateTime

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

SYSTEM_TYPES = (
    "payment_gateway", "email_service", "sms_provider", "social_media",
    "analytics", "crm", "erp", "booking_platform",
)  # fmt: skip
AUTH_TYPES = ("api_key", "oauth2", "basic_auth", "jwt", "webhook")
FREQUENCIES = ("real_time", "hourly", "daily", "weekly", "manual")
STATUSES = ("active", "inactive", "error", "maintenance")
ROLES = ("admin", "engineer", "viewer")


def upgrade() -> None:
    op.create_table(
        "user",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("email", sa.String(320)),
        sa.Column("full_name", sa.String(255)),
        sa.Column("phone_number", sa.String(32)),
        sa.Column("role", sa.Enum(*ROLES, name="user_role")),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_at", UTCDateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_user"),
    )
    op.create_table(
        "external_system_mapping",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("system_name", sa.String(100), nullable=False),
        sa.Column("system_type", sa.Enum(*SYSTEM_TYPES, name="system_type"), nullable=False),
        sa.Column("provider_name", sa.String(100), nullable=False),
        sa.Column("api_endpoint", sa.String(500), nullable=False),
        sa.Column("api_version", sa.String(50)),
        sa.Column("authentication_type", sa.Enum(*AUTH_TYPES, name="authentication_type"), nullable=False),
        sa.Column("credentials", JSONType, nullable=False),
        sa.Column("mapping_rules", JSONType, nullable=False),
        sa.Column("sync_frequency", sa.Enum(*FREQUENCIES, name="sync_frequency"), nullable=False),
        sa.Column("last_sync_at", UTCDateTime()),
        sa.Column("sync_status", sa.Enum(*STATUSES, name="sync_status"), nullable=False),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("last_error_message", sa.Text()),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("timeout_seconds", sa.Integer(), nullable=False),
        sa.Column("retry_attempts", sa.Integer(), nullable=False),
        sa.Column("created_by_user_id", sa.Uuid()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_external_system_mapping"),
        sa.ForeignKeyConstraint(
            ["created_by_user_id"], ["user.id"],
            name="fk_external_system_mapping_created_by_user_id_user", ondelete="SET NULL",
        ),
    )  # fmt: skip
    op.create_table(
        "esm_sync_state",
        sa.Column("mapping_id", sa.Uuid(), nullable=False),
        sa.Column("stream", sa.String(100), nullable=False),
        sa.Column("cursor", JSONType, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("mapping_id", "stream", name="pk_esm_sync_state"),
        sa.ForeignKeyConstraint(
            ["mapping_id"], ["external_system_mapping.id"],
            name="fk_esm_sync_state_mapping_id_external_system_mapping", ondelete="CASCADE",
        ),
    )  # fmt: skip
    op.create_table(
        "esm_sync_run",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("mapping_id", sa.Uuid(), nullable=False),
        sa.Column("stream", sa.String(100), nullable=False),
        sa.Column("dagster_run_id", sa.String(64)),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("full_refresh", sa.Boolean(), nullable=False),
        sa.Column("records_read", sa.Integer(), nullable=False),
        sa.Column("records_written", sa.Integer(), nullable=False),
        sa.Column("records_rejected", sa.Integer(), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("error_class", sa.String(40)),
        sa.Column("error_message", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_esm_sync_run"),
        sa.ForeignKeyConstraint(
            ["mapping_id"], ["external_system_mapping.id"],
            name="fk_esm_sync_run_mapping_id_external_system_mapping", ondelete="CASCADE",
        ),
    )  # fmt: skip
    op.create_index("ix_esm_sync_run_mapping_id", "esm_sync_run", ["mapping_id"])
    op.create_table(
        "esm_quarantine",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("mapping_id", sa.Uuid(), nullable=False),
        sa.Column("stream", sa.String(100), nullable=False),
        sa.Column("fingerprint", sa.String(200), nullable=False),
        sa.Column("external_id", sa.String(200)),
        sa.Column("errors", JSONType, nullable=False),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("seen_count", sa.Integer(), nullable=False),
        sa.Column("resolved_at", UTCDateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_esm_quarantine"),
        sa.UniqueConstraint("mapping_id", "stream", "fingerprint", name="uq_esm_quarantine_mapping_id"),
        sa.ForeignKeyConstraint(
            ["mapping_id"], ["external_system_mapping.id"],
            name="fk_esm_quarantine_mapping_id_external_system_mapping", ondelete="CASCADE",
        ),
    )  # fmt: skip
    op.create_index("ix_esm_quarantine_open", "esm_quarantine", ["mapping_id", "resolved_at"])


def downgrade() -> None:
    op.drop_index("ix_esm_quarantine_open", table_name="esm_quarantine")
    op.drop_table("esm_quarantine")
    op.drop_index("ix_esm_sync_run_mapping_id", table_name="esm_sync_run")
    op.drop_table("esm_sync_run")
    op.drop_table("esm_sync_state")
    op.drop_table("external_system_mapping")
    op.drop_table("user")
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for name in ("user_role", "system_type", "authentication_type", "sync_frequency", "sync_status"):
            sa.Enum(name=name).drop(bind, checkfirst=True)
