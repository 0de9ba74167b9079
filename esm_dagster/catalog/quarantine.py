"""Reading `esm_quarantine`: the records the rules rejected, for `esm quarantine list` and replay."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from esm_dagster.catalog.models import ExternalSystemMapping, QuarantineRecord


def list_quarantine(
    session: Session,
    mapping_id: uuid.UUID | None = None,
    *,
    stream: str | None = None,
    include_resolved: bool = False,
) -> Sequence[tuple[QuarantineRecord, ExternalSystemMapping]]:
    """Quarantined records (open ones unless `include_resolved`) with their mapping, oldest first."""
    query = sa.select(QuarantineRecord, ExternalSystemMapping).join(
        ExternalSystemMapping, ExternalSystemMapping.id == QuarantineRecord.mapping_id
    )
    if mapping_id is not None:
        query = query.where(QuarantineRecord.mapping_id == mapping_id)
    if stream is not None:
        query = query.where(QuarantineRecord.stream == stream)
    if not include_resolved:
        query = query.where(QuarantineRecord.resolved_at.is_(None))
    query = query.order_by(
        ExternalSystemMapping.system_name, QuarantineRecord.stream, QuarantineRecord.first_seen_at
    )
    return [(q, m) for q, m in session.execute(query).all()]


def failed_rules(record: QuarantineRecord) -> str:
    """`field:rule` for each error of a quarantined record, e.g. `email:email, phone:phone_number`."""
    return ", ".join(f"{e.get('field')}:{e.get('rule')}" for e in record.errors or [])
