"""Webhook inbox: verified provider events waiting for the real_time sensor.

Revision ID: 0004_webhook_inbox
Revises: 0003_rate_limits
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from esm_dagster.catalog.types import JSONType, UTCDateTime

revision = "0004_webhook_inbox"
down_revision = "0003_rate_limits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "esm_webhook_inbox",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("mapping_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("event_type", sa.String(200)),
        sa.Column("signature_digest", sa.String(64)),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("batch_key", sa.String(100)),
        sa.Column("processed_at", UTCDateTime()),
        sa.ForeignKeyConstraint(
            ["mapping_id"],
            ["external_system_mapping.id"],
            name="fk_esm_webhook_inbox_mapping_id_external_system_mapping",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_esm_webhook_inbox"),
        sa.UniqueConstraint("mapping_id", "event_id", name="uq_esm_webhook_inbox_mapping_id"),
    )
    op.create_index("ix_esm_webhook_inbox_pending", "esm_webhook_inbox", ["mapping_id", "processed_at"])
    op.create_index("ix_esm_webhook_inbox_signature", "esm_webhook_inbox", ["mapping_id", "signature_digest"])


def downgrade() -> None:
    op.drop_index("ix_esm_webhook_inbox_signature", table_name="esm_webhook_inbox")
    op.drop_index("ix_esm_webhook_inbox_pending", table_name="esm_webhook_inbox")
    op.drop_table("esm_webhook_inbox")
