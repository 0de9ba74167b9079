"""`esm keys rotate`: every mapping's credentials re-encrypted under the newest Fernet key.

Rotating a key is: put the new key first in `ESM_FERNET_KEYS` (old keys after it, so everything
still opens), run `esm keys rotate`, then drop the old keys. This module does the middle step:

- in batches (keyset over the mapping id), each batch its own transaction, rows locked while it
  rewrites them, so a sync or an `esm mapping edit` running meanwhile never loses a write;
- resumable: a row the newest key already opens is left alone and counted `already_current`,
  so a rotation killed halfway is finished by running it again;
- a row no configured key opens is only that row's problem: the mapping goes to `error` with
  the `credential_error` class, a task asks a person for new credentials, an alert goes out
  (once per undecryptable ciphertext), and the rotation goes on with the others. Definitions
  never decrypt, so the code location keeps loading with such a row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from esm_dagster.alerts.dispatch import AlertDispatcher
from esm_dagster.alerts.message import Alert
from esm_dagster.catalog import audit
from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.mappings import mark_error
from esm_dagster.catalog.models import ExternalSystemMapping
from esm_dagster.catalog.tasks import open_task
from esm_dagster.security.vault import CIPHERTEXT_FIELD, Vault, VaultError, is_ciphertext

CREDENTIAL_ERROR = "credential_error"
DEFAULT_BATCH_SIZE = 100


@dataclasses.dataclass
class RotationFailure:
    mapping_id: str
    system_name: str
    reason: str


@dataclasses.dataclass
class RotationReport:
    rotated: int = 0
    already_current: int = 0
    failed: int = 0
    without_credentials: int = 0
    batches: int = 0
    failures: list[RotationFailure] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        return (
            f"rotated {self.rotated}, already current {self.already_current}, failed {self.failed}, "
            f"without credentials {self.without_credentials} ({self.batches} batches)"
        )


def _failure_text(row: ExternalSystemMapping, reason: str) -> str:
    return (
        f"mapping {row.system_name!r}: {reason} ({CREDENTIAL_ERROR}); store its credentials again: "
        f"`esm mapping edit {row.id} --credentials FILE`"
    )


def _rotate_row(vault: Vault, row: ExternalSystemMapping) -> str:
    """'rotated', 'current', 'empty', or raises VaultError with the reason (no secret in it)."""
    stored = row.credentials
    if not stored:
        return "empty"
    if not is_ciphertext(stored):
        raise VaultError("credentials are not Fernet ciphertext")
    if vault.is_current(stored):
        return "current"
    row.credentials = dict(vault.rotate(stored))  # a new object: the JSON column sees the change
    return "rotated"


def rotate_credentials(
    database_url: str,
    vault: Vault,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    alerts: AlertDispatcher | None = None,
    after_batch: Callable[[RotationReport], None] | None = None,
) -> RotationReport:
    """Rotate every mapping's credentials; `after_batch` is called after each committed batch."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    Session = session_factory(database_url)
    report = RotationReport()
    last_id: uuid.UUID | None = None
    while True:
        pending_alerts: list[Alert] = []
        with Session.begin() as session:
            query = sa.select(ExternalSystemMapping).order_by(ExternalSystemMapping.id).limit(batch_size)
            if last_id is not None:
                query = query.where(ExternalSystemMapping.id > last_id)
            rows = session.scalars(query.with_for_update()).all()
            if not rows:
                break
            for row in rows:
                try:
                    outcome = _rotate_row(vault, row)
                except VaultError as exc:
                    pending_alerts.append(_fail(session, report, row, str(exc)))
                    continue
                if outcome == "rotated":
                    report.rotated += 1
                    audit.record(session, "credentials.rotated", row)
                elif outcome == "current":
                    report.already_current += 1
                else:
                    report.without_credentials += 1
            last_id = rows[-1].id
        report.batches += 1
        for alert in pending_alerts:
            if alerts is not None:
                alerts.send(alert)
        if after_batch is not None:
            after_batch(report)
    return report


def _fail(session: Any, report: RotationReport, row: ExternalSystemMapping, reason: str) -> Alert:
    text = _failure_text(row, reason)
    report.failed += 1
    report.failures.append(RotationFailure(str(row.id), row.system_name, reason))
    mark_error(session, row.id, text)
    open_task(session, row, "credentials", text)
    audit.record(
        session,
        "credentials.rotated",
        row,
        outcome="failed",
        details={"reason": reason, "error_class": CREDENTIAL_ERROR},
    )
    token = str((row.credentials or {}).get(CIPHERTEXT_FIELD, row.credentials))
    episode = "rotation:" + hashlib.sha256(token.encode()).hexdigest()[:16]  # once per ciphertext
    return Alert.mapping_error(
        mapping_id=row.id,
        episode=episode,
        message=text,
        mapping_name=row.system_name,
        error_class=CREDENTIAL_ERROR,
    )
