"""The conflicts a two-way mapping's `manual` policy leaves for a person (`esm conflicts`).

A conflict row is listed until someone takes one side; the decision is recorded on the row
(`resolution`, `decided_by`, `decided_at`) and in the audit log, and the mapping's next round
applies it (`sync.twoway`), writing the winning value to the other side.
"""

from __future__ import annotations

import uuid
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from esm_dagster.catalog import audit
from esm_dagster.catalog.mappings import MappingError, get_mapping
from esm_dagster.catalog.models import ExternalSystemMapping, SyncConflict
from esm_dagster.catalog.types import utcnow

Take = Literal["internal", "external"]


class ConflictError(ValueError):
    pass


def list_conflicts(
    session: Session, mapping_ref: str | None = None, *, include_decided: bool = False
) -> list[SyncConflict]:
    """Open conflicts (every decision too with `include_decided`), oldest first."""
    query = sa.select(SyncConflict).order_by(SyncConflict.created_at, SyncConflict.id)
    if mapping_ref is not None:
        query = query.where(SyncConflict.mapping_id == get_mapping(session, mapping_ref).id)
    if not include_decided:
        query = query.where(SyncConflict.status == "open")
    return list(session.scalars(query))


def resolve_conflict(session: Session, conflict_id: str, take: Take, decided_by: str) -> SyncConflict:
    """Record a person's choice for an open conflict; the next round of its mapping applies it."""
    if take not in ("internal", "external"):
        raise ConflictError(f"--take must be 'internal' or 'external', not {take!r}")
    try:
        key = uuid.UUID(conflict_id)
    except ValueError:
        raise ConflictError(
            f"{conflict_id!r} is not a conflict id (a UUID from `esm conflicts list`)"
        ) from None
    conflict = session.get(SyncConflict, key, with_for_update=True)
    if conflict is None:
        raise ConflictError(f"no conflict {conflict_id}")
    if conflict.status != "open":
        raise ConflictError(
            f"conflict {conflict_id} was already decided ({conflict.resolution} by {conflict.decided_by})"
        )
    conflict.status = "decided"
    conflict.resolution = take
    conflict.decided_by = decided_by
    conflict.decided_at = utcnow()
    mapping = session.get(ExternalSystemMapping, conflict.mapping_id)
    if mapping is None:  # pragma: no cover - the foreign key cascades
        raise MappingError(f"conflict {conflict_id} has no mapping")
    audit.record(
        session,
        "conflict.resolved",
        mapping,
        details={
            "conflict": str(conflict.id),
            "record": conflict.external_id,
            "field": conflict.field,
            "take": take,
        },
    )
    return conflict
