"""Live mapping state read at tick time: definitions are a snapshot, the row's status is not."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.models import ExternalSystemMapping, SyncStatus


def runnable_mapping_ids(database_url: str, mapping_ids: Sequence[str]) -> set[str]:
    """Which of these mappings a schedule or sensor may launch now (active and enabled)."""
    if not mapping_ids:
        return set()
    table = ExternalSystemMapping
    with session_factory(database_url)() as session:
        rows = session.execute(
            sa.select(table.id).where(
                table.id.in_([uuid.UUID(i) for i in mapping_ids]),
                table.is_active.is_(True),
                table.sync_status == SyncStatus.ACTIVE,
            )
        ).scalars()
        return {str(i) for i in rows}
