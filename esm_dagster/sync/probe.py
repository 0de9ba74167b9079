"""Health probe: one cheap authenticated call that tells whether a mapping can work again.

The error-state sensor launches it for mappings in `error`; success returns the row to `active`
(closing its open tasks) so the schedules take it back; failure leaves it in `error` and is
recorded as a `probe` run, which the integration-health asset counts for availability.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from esm_dagster.catalog import audit
from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.mappings import get_mapping, record_recovery
from esm_dagster.catalog.models import ExternalSystemMapping, SyncRun
from esm_dagster.catalog.tasks import NEEDS_PERSON, open_task
from esm_dagster.catalog.types import utcnow
from esm_dagster.providers.factory import build_provider
from esm_dagster.security.redact import redact_text
from esm_dagster.security.vault import Vault
from esm_dagster.sync.engine import ProviderBuilder, describe_error, error_class_of, secret_values

log = logging.getLogger("esm_dagster.probe")
# Errors no probe can fix: a person must issue new credentials.


@dataclass
class ProbeResult:
    mapping_id: str
    system_name: str
    ok: bool
    seconds: float
    recovered: bool = False  # the row went from `error` back to `active`
    error_class: str | None = None
    error: str | None = None


@audit.catalog_of_first_argument
def probe_mapping(
    url: str,
    mapping_ref: str,
    *,
    vault: Vault | None = None,
    provider_builder: ProviderBuilder | None = None,
    dagster_run_id: str | None = None,
) -> ProbeResult:
    Session = session_factory(url)
    with Session.begin() as session:
        row = get_mapping(session, mapping_ref)
        session.expunge(row)
    started = time.perf_counter()
    credentials: dict[str, Any] = {}
    try:
        vault = vault or Vault.from_env()
        credentials = vault.decrypt(row.credentials, mapping=repr(row.system_name))
        provider = (provider_builder or build_provider)(row, credentials, catalog_url=url)
        try:
            provider.probe()
        finally:
            provider.close()
    except Exception as exc:
        error = redact_text(describe_error(exc), extra=secret_values({"credentials": credentials}))
        result = ProbeResult(
            str(row.id), row.system_name, False, _since(started), error_class=error_class_of(exc), error=error
        )
    else:
        result = ProbeResult(str(row.id), row.system_name, True, _since(started))
    _record(url, row, result, dagster_run_id)
    return result


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


def _record(url: str, row: ExternalSystemMapping, result: ProbeResult, dagster_run_id: str | None) -> None:
    Session = session_factory(url)
    with Session.begin() as session:
        session.add(
            SyncRun(
                mapping_id=row.id,
                stream="probe",
                kind="probe",
                dagster_run_id=dagster_run_id,
                finished_at=utcnow(),
                status="success" if result.ok else "failed",
                api_calls=1,
                latency_p50_ms=result.seconds * 1000,
                latency_p95_ms=result.seconds * 1000,
                error_class=result.error_class,
                error_message=result.error,
            )
        )
        current = session.get(ExternalSystemMapping, row.id)
        if current is None:
            return
        audit.record(session, "credentials.read", current, details={"purpose": "probe", "ok": result.ok})
        if result.ok:
            result.recovered = record_recovery(
                session, row.id, "health probe succeeded; mapping back to active"
            )
            current.last_sync_at = row.last_sync_at  # a probe is not a sync
            log.info(f"probe of {row.system_name!r} succeeded in {result.seconds}s")
        else:
            current.last_error_message = (result.error or "")[:4000]
            if result.error_class in NEEDS_PERSON:
                open_task(session, current, "credentials", result.error or "")
            log.warning(f"probe of {row.system_name!r} failed: {result.error}")
