"""The production profile on the machine's PostgreSQL, through the queue, the daemon and a real run."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from deploy.prod_check import DEFAULT_ADMIN_URL, run_check
from esm_dagster.catalog.db import normalize_url

ADMIN_URL = os.environ.get("ESM_TEST_DATABASE_URL") or DEFAULT_ADMIN_URL


def _reachable(url: str) -> bool:
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def _scratch_databases(url: str) -> set[str]:
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("select datname from pg_database where datname like 'esm_prod_check_%'")
            )
            return {r[0] for r in rows}
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_a_queued_demo_sync_runs_on_postgres_storage_and_reads_back() -> None:
    if not _reachable(ADMIN_URL):
        if os.environ.get("ESM_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL required but unreachable")
        pytest.skip("PostgreSQL unreachable")
    before = _scratch_databases(ADMIN_URL)
    check = run_check(ADMIN_URL)
    assert check.failures == []
    assert check.storage == {
        "runs": "PostgresRunStorage",
        "events": "PostgresEventLogStorage",
        "schedules": "PostgresScheduleStorage",
        "run_coordinator": "QueuedRunCoordinator",
    }
    provider_limit = next(limit for limit in check.tag_limits if limit["key"] == "esm/provider")
    assert provider_limit["limit"] == 2 and provider_limit["value"] == {"applyLimitPerUniqueValue": True}
    # The run waited in PostgreSQL's queue until the daemon launched it, then succeeded.
    assert check.queued_before_daemon and check.run_status == "SUCCESS"
    assert check.materializations_in_event_log == 1
    assert check.rows_in_catalog > 0
    # The scratch database is gone: nothing piles up on a shared server.
    assert _scratch_databases(ADMIN_URL) <= before
