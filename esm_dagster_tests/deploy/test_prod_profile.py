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
def test_a_queued_demo_sync_runs_on_postgres_storage_and_reads_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # As `make prod-check` starts: not in sandbox mode (it failed there, refusing the emulator).
    monkeypatch.delenv("ESM_ALLOW_LOOPBACK", raising=False)
    if not _reachable(ADMIN_URL):
        if os.environ.get("ESM_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL required but unreachable")
        pytest.skip("PostgreSQL unreachable")
    before = _scratch_databases(ADMIN_URL)
    check = run_check(ADMIN_URL)
    assert check.failures == []
    # The daemon's code server used to outlive the check (an orphan `dagster api grpc`).
    assert check.leftover_processes == []
    assert check.storage == {
        "runs": "PostgresRunStorage",
        "events": "PostgresEventLogStorage",
        "schedules": "PostgresScheduleStorage",
        "run_coordinator": "QueuedRunCoordinator",
    }
    provider_limit = next(limit for limit in check.tag_limits if limit["key"] == "esm/provider")
    assert provider_limit["limit"] == 2 and provider_limit["value"] == {"applyLimitPerUniqueValue": True}
    # The runs waited in PostgreSQL's queue until the daemon launched them, then succeeded.
    assert check.queued_before_daemon and check.run_status == "SUCCESS"
    assert list(check.run_statuses.values()) == ["SUCCESS"] * 3
    # Three runs of one provider against a limit of two: two at once, the third held back.
    assert check.most_in_progress == 2 and check.one_waited_for_a_slot
    assert check.materializations_in_event_log == 1
    assert check.rows_in_catalog > 0
    # The scratch database is gone: nothing piles up on a shared server.
    assert _scratch_databases(ADMIN_URL) <= before


def test_stopping_the_daemon_group_leaves_no_orphan() -> None:
    """A leader whose child ignores SIGTERM and outlives it (as the daemon's code server did)."""
    import subprocess
    import sys

    from deploy.prod_check import group_members, stop_process_group

    script = (
        "import signal, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)'])\n"
        "time.sleep(60)\n"
    )
    leader = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stdout=subprocess.PIPE)
    assert leader.stdout is not None and leader.stdout.readline().strip() == b"1"  # the child is up
    assert len(group_members(leader.pid)) == 2
    assert stop_process_group(leader, grace=1) == []
    assert group_members(leader.pid) == []


def test_the_profile_frees_the_pool_slots_a_finished_run_still_holds() -> None:
    """A Celery run killed with -9 kept both `provider_stripe` slots, and every later Stripe run
    waited behind it (new-user finding): the daemon now frees them a minute after the run ended."""
    from dagster._core.instance.config import dagster_instance_config

    from deploy.prod_check import PROFILE

    config, _ = dagster_instance_config(str(PROFILE.parent), PROFILE.name)
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] == 60
    assert config["concurrency"]["pools"]["default_limit"] == 2


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sqlite:////tmp/x.db", "names a sqlite database"),
        ("mysql://u:s3cr3t-pw@h/x", "names a mysql database (mysql://u:***@h/x)"),
        ("garbage", "'garbage' is not a PostgreSQL URL"),
        ("", "is not a PostgreSQL URL"),
        ("postgresql://u:s3cr3t-pw@127.0.0.1:abc/test", "'127.0.0.1:abc/test' is not a PostgreSQL URL"),
        ("postgresql+asyncpg://u:s3cr3t-pw@127.0.0.1/test", "asks for the asyncpg driver"),
        ("postgresql+psycopg2://postgres:p@s3cr3t-pw@127.0.0.1:5432/test", "raw '@' must be written %40"),
    ],
)
def test_a_url_prod_check_cannot_use_is_one_line_without_its_password(url: str, says: str) -> None:
    """They were tracebacks; a sqlite URL failed on CREATE DATABASE and left a file behind, and a
    raw '@' in the password printed the half after it (new-user findings)."""
    from deploy.prod_check import admin_url_problem

    problem = admin_url_problem(url)
    assert problem is not None and says in problem and "s3cr3t-pw" not in problem, problem


def test_the_machine_url_is_fine_for_prod_check() -> None:
    from deploy.prod_check import admin_url_problem

    assert admin_url_problem(DEFAULT_ADMIN_URL) is None
