"""The seed's manual-intervention path: a `task` for a person when a mapping cannot heal itself.

At most one open task per (mapping, reason) (a partial unique index enforces it), assigned to
the mapping's creator; closed with a resolution when the mapping recovers.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from esm_dagster.catalog.models import OPEN_TASK_STATUSES, ExternalSystemMapping, Task, TaskStatus
from esm_dagster.catalog.types import utcnow

# Why a mapping needs a person; the text is the task's description.
REASONS = {
    "credentials": "The provider refused the mapping's credentials (revoked, expired or wrong). "
    "Issue new credentials and store them: `esm mapping edit MAPPING --credentials FILE`.",
    "stuck_in_error": "The mapping has been in error for more than a day and its health probes "
    "keep failing. Check the provider's status and the last error.",
    "conflicts": "Two-way sync conflicts are waiting for a decision (`esm conflicts list`).",
    "unverifiable_message": "An outbound message was sent through this mapping but its answer was "
    "lost, and the provider offers no way to check whether it arrived. Look at the chat or the "
    "provider's activity log, then resend or drop it (`esm messages list --status needs_person`).",
}
DUE_AFTER = dt.timedelta(days=1)

# Error classes no retry or probe can fix: a person must issue new credentials.
NEEDS_PERSON = frozenset({"auth", "credential_error"})
# Provider codes (OAuth2, RFC 6749 §5.2) that say the grant itself is gone: a revoked or rotated-away
# refresh token, a bad assertion. The mapping goes to `error` at once and an alert is sent.
NEEDS_REAUTHORIZATION = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})


def open_task(session: Session, mapping: ExternalSystemMapping, reason: str, detail: str = "") -> Task | None:
    """Open the task for (mapping, reason) unless one is open; returns the new task or None."""
    existing = session.scalar(
        sa.select(Task).where(
            Task.mapping_id == mapping.id, Task.reason == reason, Task.status.in_(OPEN_TASK_STATUSES)
        )
    )
    if existing is not None:
        return None
    description = REASONS.get(reason, reason)
    if detail:
        description += f"\n\nLast error: {detail[:1000]}"
    task = Task(
        id=uuid.uuid4(),
        title=f"{mapping.system_name}: {reason.replace('_', ' ')} needs attention",
        description=description,
        status=TaskStatus.PENDING,
        priority=mapping.priority,
        due_date=utcnow() + DUE_AFTER,
        assigned_to_user_id=mapping.created_by_user_id,
        mapping_id=mapping.id,
        reason=reason,
    )
    session.add(task)
    session.flush()
    return task


def close_tasks(
    session: Session, mapping_id: uuid.UUID, resolution: str, reasons: Iterable[str] | None = None
) -> int:
    """Complete the open tasks of a mapping (optionally only some reasons); returns how many."""
    query = sa.select(Task).where(Task.mapping_id == mapping_id, Task.status.in_(OPEN_TASK_STATUSES))
    if reasons is not None:
        query = query.where(Task.reason.in_(list(reasons)))
    tasks = session.scalars(query).all()
    now = utcnow()
    for task in tasks:
        task.status = TaskStatus.COMPLETED
        task.completed_at = now
        task.resolution = resolution
        task.updated_at = now
    return len(tasks)


def list_tasks(session: Session, *, include_closed: bool = False) -> list[tuple[Task, str | None]]:
    query = (
        sa.select(Task, ExternalSystemMapping.system_name)
        .outerjoin(ExternalSystemMapping, ExternalSystemMapping.id == Task.mapping_id)
        .order_by(Task.created_at.desc())
    )
    if not include_closed:
        query = query.where(Task.status.in_(OPEN_TASK_STATUSES))
    return [(task, name) for task, name in session.execute(query).all()]
