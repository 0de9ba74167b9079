"""Outbound messages: the queue behind email / SMS / chat delivery with fallback routing.

Revision ID: 0006_outbound_messages
Revises: 0005_audit_log
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from esm_dagster.catalog.types import JSONType, UTCDateTime

revision = "0006_outbound_messages"
down_revision = "0005_audit_log"
branch_labels = None
depends_on = None

SYSTEM_TYPES = (
    "payment_gateway", "email_service", "sms_provider", "social_media",
    "analytics", "crm", "erp", "booking_platform",
)  # fmt: skip
# The type exists since 0001 (external_system_mapping.system_type): reuse it, never recreate it.
_SYSTEM_TYPE = sa.Enum(*SYSTEM_TYPES, name="system_type").with_variant(
    postgresql.ENUM(*SYSTEM_TYPES, name="system_type", create_type=False), "postgresql"
)


def upgrade() -> None:
    op.create_table(
        "esm_outbound_message",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("system_type", _SYSTEM_TYPE, nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("subject", sa.String(300)),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("routed_mapping_id", sa.Uuid()),
        sa.Column("routing", JSONType, nullable=False),
        sa.Column("provider_message_id", sa.String(200)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("claimed_at", UTCDateTime()),
        sa.Column("sent_at", UTCDateTime()),
        sa.Column("last_error", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_esm_outbound_message"),
        sa.ForeignKeyConstraint(
            ["routed_mapping_id"],
            ["external_system_mapping.id"],
            name="fk_esm_outbound_message_routed_mapping",
            ondelete="SET NULL",
        ),
        sa.UniqueConstraint("idempotency_key", name="uq_esm_outbound_message_idempotency_key"),
        sa.CheckConstraint(
            "status in ('queued', 'sending', 'sent', 'failed', 'needs_person')",
            name="ck_esm_outbound_message_status",
        ),
    )
    op.create_index("ix_esm_outbound_message_queue", "esm_outbound_message", ["status", "created_at"])


def downgrade() -> None:
    # The system_type enum belongs to external_system_mapping: dropping the table leaves it.
    op.drop_index("ix_esm_outbound_message_queue", table_name="esm_outbound_message")
    op.drop_table("esm_outbound_message")
