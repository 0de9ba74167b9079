"""Two-way sync: the shadow of the last agreed state and the conflicts table.

Revision ID: 0007_two_way_sync
Revises: 0006_outbound_messages
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from esm_dagster.catalog.types import JSONType, UTCDateTime

revision = "0007_two_way_sync"
down_revision = "0006_outbound_messages"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "esm_sync_shadow",
        sa.Column("mapping_id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.String(200), nullable=False),
        sa.Column("table_name", sa.String(100), nullable=False),
        sa.Column("row_key", sa.Uuid(), nullable=False),
        sa.Column("fields", JSONType, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("internal_modified_at", UTCDateTime(), nullable=True),
        sa.Column("external_modified_at", UTCDateTime(), nullable=True),
        sa.Column("deleted_at", UTCDateTime(), nullable=True),
        sa.Column("synced_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["mapping_id"],
            ["external_system_mapping.id"],
            name="fk_esm_sync_shadow_mapping_id_external_system_mapping",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("mapping_id", "external_id", name="pk_esm_sync_shadow"),
    )
    op.create_index("ix_esm_sync_shadow_row", "esm_sync_shadow", ["mapping_id", "row_key"])
    op.create_table(
        "esm_sync_conflict",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("mapping_id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.String(200), nullable=False),
        sa.Column("field", sa.String(200), nullable=False),
        sa.Column("policy", sa.String(20), nullable=False),
        sa.Column("base_value", JSONType, nullable=True),
        sa.Column("internal_value", JSONType, nullable=True),
        sa.Column("external_value", JSONType, nullable=True),
        sa.Column("internal_modified_at", UTCDateTime(), nullable=True),
        sa.Column("external_modified_at", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("resolution", sa.String(20), nullable=True),
        sa.Column("decided_by", sa.String(320), nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("applied_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["mapping_id"],
            ["external_system_mapping.id"],
            name="fk_esm_sync_conflict_mapping_id_external_system_mapping",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_esm_sync_conflict"),
    )
    op.create_index("ix_esm_sync_conflict_open", "esm_sync_conflict", ["mapping_id", "status", "external_id"])


def downgrade() -> None:
    op.drop_index("ix_esm_sync_conflict_open", table_name="esm_sync_conflict")
    op.drop_table("esm_sync_conflict")
    op.drop_index("ix_esm_sync_shadow_row", table_name="esm_sync_shadow")
    op.drop_table("esm_sync_shadow")
