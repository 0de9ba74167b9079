"""Operations: task (manual intervention), alert deliveries, integration health, run metrics.

Revision ID: 0002_operations
Revises: 0001_initial
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from esm_dagster.catalog.types import JSONType, UTCDateTime

revision = "0002_operations"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

TASK_STATUSES = ("pending", "in_progress", "completed", "cancelled")
OPEN = ("pending", "in_progress")


def upgrade() -> None:
    with op.batch_alter_table("esm_sync_run") as batch:
        batch.add_column(sa.Column("kind", sa.String(10), server_default="sync", nullable=False))
        batch.add_column(sa.Column("partition_key", sa.String(40)))
        batch.add_column(sa.Column("window_start", UTCDateTime()))
        batch.add_column(sa.Column("window_end", UTCDateTime()))
        batch.add_column(sa.Column("api_calls", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("retries", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("rate_limit_waits", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("latency_p50_ms", sa.Float()))
        batch.add_column(sa.Column("latency_p95_ms", sa.Float()))
    op.create_index("ix_esm_sync_run_started", "esm_sync_run", ["mapping_id", "started_at"])

    op.create_table(
        "task",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("status", sa.Enum(*TASK_STATUSES, name="task_status"), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("due_date", UTCDateTime()),
        sa.Column("assigned_to_user_id", sa.Uuid()),
        sa.Column("mapping_id", sa.Uuid()),
        sa.Column("reason", sa.String(60)),
        sa.Column("resolution", sa.Text()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("completed_at", UTCDateTime()),
        sa.ForeignKeyConstraint(
            ["assigned_to_user_id"], ["user.id"], name="fk_task_assigned_to_user_id_user", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["mapping_id"],
            ["external_system_mapping.id"],
            name="fk_task_mapping_id_external_system_mapping",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_task"),
    )
    open_only = sa.text("status IN ('pending', 'in_progress')")
    op.create_index(
        "uq_task_open_reason",
        "task",
        ["mapping_id", "reason"],
        unique=True,
        postgresql_where=open_only,
        sqlite_where=open_only,
    )

    op.create_table(
        "esm_alert",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("dedup_key", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(60), nullable=False),
        sa.Column("mapping_id", sa.Uuid()),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime()),
        sa.ForeignKeyConstraint(
            ["mapping_id"],
            ["external_system_mapping.id"],
            name="fk_esm_alert_mapping_id_external_system_mapping",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_esm_alert"),
        sa.UniqueConstraint("dedup_key", "channel", name="uq_esm_alert_dedup_key"),
    )

    op.create_table(
        "esm_integration_health",
        sa.Column("mapping_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("system_name", sa.String(100), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("availability", sa.Float()),
        sa.Column("errors_by_class", JSONType, nullable=False),
        sa.Column("error_rate", sa.Float()),
        sa.Column("latency_p95_ms", sa.Float()),
        sa.Column("records_written", sa.Integer(), nullable=False),
        sa.Column("records_rejected", sa.Integer(), nullable=False),
        sa.Column("validation_pass_rate", sa.Float()),
        sa.Column("sla_compliant", sa.Boolean()),
        sa.Column("api_calls", sa.Integer(), nullable=False),
        sa.Column("api_budget", sa.Integer()),
        sa.Column("computed_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["mapping_id"],
            ["external_system_mapping.id"],
            name="fk_esm_integration_health_mapping_id_external_system_mapping",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("mapping_id", "day", name="pk_esm_integration_health"),
    )


def downgrade() -> None:
    op.drop_table("esm_integration_health")
    op.drop_table("esm_alert")
    op.drop_index("uq_task_open_reason", table_name="task")
    op.drop_table("task")
    sa.Enum(name="task_status").drop(op.get_bind(), checkfirst=True)
    op.drop_index("ix_esm_sync_run_started", table_name="esm_sync_run")
    with op.batch_alter_table("esm_sync_run") as batch:
        for column in (
            "latency_p95_ms", "latency_p50_ms", "rate_limit_waits", "retries", "api_calls",
            "window_end", "window_start", "partition_key", "kind",
        ):  # fmt: skip
            batch.drop_column(column)
