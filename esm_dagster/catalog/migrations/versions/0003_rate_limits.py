"""Rate limits: one token bucket per credential, shared by every concurrent run and process.

Revision ID: 0003_rate_limits
Revises: 0002_operations
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op

from esm_dagster.catalog.types import UTCDateTime

revision = "0003_rate_limits"
down_revision = "0002_operations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "esm_rate_limit",
        sa.Column("bucket_key", sa.String(100), nullable=False),
        sa.Column("provider_name", sa.String(100), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refilled_at", sa.Float(), nullable=False),
        sa.Column("capacity", sa.Float(), nullable=False),
        sa.Column("per_second", sa.Float(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("bucket_key", name="pk_esm_rate_limit"),
    )


def downgrade() -> None:
    op.drop_table("esm_rate_limit")
