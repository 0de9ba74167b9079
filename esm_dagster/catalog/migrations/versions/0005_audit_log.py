"""Audit log: append-only, enforced by the database itself.

Revision ID: 0005_audit_log
Revises: 0004_webhook_inbox
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from esm_dagster.catalog.types import JSONType, UTCDateTime

revision = "0005_audit_log"
down_revision = "0004_webhook_inbox"
branch_labels = None
depends_on = None

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION esm_audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'esm_audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.create_table(
        "esm_audit_log",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(320), nullable=False),
        sa.Column("actor_role", sa.String(20), nullable=True),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("mapping_id", sa.Uuid(), nullable=True),
        sa.Column("mapping_name", sa.String(100), nullable=True),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("details", JSONType, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_esm_audit_log"),
    )
    op.create_index("ix_esm_audit_log_mapping_at", "esm_audit_log", ["mapping_id", "at"])
    op.create_index("ix_esm_audit_log_at", "esm_audit_log", ["at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER esm_audit_log_no_change BEFORE UPDATE OR DELETE ON esm_audit_log "
            "FOR EACH ROW EXECUTE FUNCTION esm_audit_log_append_only()"
        )
        op.execute(
            "CREATE TRIGGER esm_audit_log_no_truncate BEFORE TRUNCATE ON esm_audit_log "
            "FOR EACH STATEMENT EXECUTE FUNCTION esm_audit_log_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER esm_audit_log_no_{verb.lower()} BEFORE {verb} ON esm_audit_log "
                f"BEGIN SELECT RAISE(ABORT, 'esm_audit_log is append-only: {verb} refused'); END"
            )


def downgrade() -> None:
    # Dropping the table drops its triggers; the function goes with it on PostgreSQL.
    op.drop_index("ix_esm_audit_log_at", table_name="esm_audit_log")
    op.drop_index("ix_esm_audit_log_mapping_at", table_name="esm_audit_log")
    op.drop_table("esm_audit_log")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS esm_audit_log_append_only()")
