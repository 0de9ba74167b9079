"""Partitions and schedules from sync_frequency: DST-correct windows, ticks at local time, and
partition runs that fetch exactly their window (checked at the emulator) without duplicates."""

from __future__ import annotations

import datetime as dt
import itertools
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import MappingSpec, get_mapping
from esm_dagster.catalog.models import SyncStatus
from esm_dagster.demo.run import DEMO_STRIPE_KEY, register_demo_catalog
from esm_dagster.orchestration.loader import build_definitions
from esm_dagster.orchestration.partitions import Cadence, partitions_for, window_seconds
from esm_dagster.sandbox.stripe import StripeEmulator

BANGKOK = ZoneInfo("Asia/Bangkok")
DAILY_JOB = "esm_sync_daily__asia_bangkok"
HOURLY_JOB = "esm_sync_hourly__asia_bangkok"


def keys_on(partitions_def: dg.PartitionsDefinition, day: str) -> list[str]:
    keys = partitions_def.get_partition_keys(current_time=dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    return [k for k in keys if k.startswith(day)]


def test_hourly_new_york_has_25_windows_at_fall_back_and_23_at_spring_forward() -> None:
    hourly = partitions_for(Cadence("hourly", "America/New_York"))
    assert hourly is not None
    fall_back = keys_on(hourly, "2026-11-01")
    spring_forward = keys_on(hourly, "2026-03-08")
    assert len(fall_back) == 25 and len(spring_forward) == 23
    # Every window is one real hour and they tile the local day without gaps.
    windows = [window_seconds(hourly, k) for k in fall_back]
    assert all(end - start == 3600 for start, end in windows)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))
    day_start = dt.datetime(2026, 11, 1, tzinfo=ZoneInfo("America/New_York")).timestamp()
    assert windows[0][0] == day_start and windows[-1][1] - windows[0][0] == 25 * 3600


def test_daily_windows_follow_local_midnight_and_weekly_start_monday() -> None:
    daily = partitions_for(Cadence("daily", "Asia/Bangkok"))
    start, end = window_seconds(daily, "2026-11-02")
    assert dt.datetime.fromtimestamp(start, BANGKOK) == dt.datetime(2026, 11, 2, tzinfo=BANGKOK)
    assert end - start == 86400
    weekly = partitions_for(Cadence("weekly", "Asia/Bangkok"))
    first = weekly.get_first_partition_window()
    assert first is not None and first.start.weekday() == 0
    assert partitions_for(Cadence("manual", "UTC")) is None
    assert partitions_for(Cadence("real_time", "UTC")) is None


def spec(frequency: str, timezone: str, **extra) -> MappingSpec:
    return MappingSpec(
        id="00000000-0000-0000-0000-000000000001",
        system_name="Club Stripe",
        system_slug="club_stripe",
        system_type="payment_gateway",
        provider_name="stripe",
        stream="charges",
        sync_frequency=frequency,
        timezone=timezone,
        sync_status="active",
        is_active=True,
        priority=5,
        timeout_seconds=30,
        retry_attempts=1,
        **extra,
    )


def test_hourly_schedule_in_kolkata_ticks_at_local_hour_and_targets_the_hour_that_closed(db_url: str) -> None:
    from esm_dagster.catalog.models import ExternalSystemMapping
    from esm_dagster.orchestration.schedules import build_groups, build_schedule

    kolkata = spec("hourly", "Asia/Kolkata")
    with session_factory(db_url).begin() as session:
        session.add(
            ExternalSystemMapping(
                id=__import__("uuid").UUID(kolkata.id),
                system_name="Club Stripe",
                system_type="payment_gateway",
                provider_name="stripe",
                api_endpoint="https://api.stripe.com",
                authentication_type="api_key",
                credentials={},
                mapping_rules={},
                sync_frequency="hourly",
            )
        )
    from esm_dagster.orchestration.loader import defs_from_specs

    (group,) = build_groups([kolkata])
    schedule = build_schedule(group, db_url)
    assert schedule is not None
    repository = defs_from_specs([kolkata], db_url).get_repository_def()
    assert schedule.cron_schedule == "0 * * * *" and schedule.execution_timezone == "Asia/Kolkata"
    # Local 05:00 in Kolkata is 23:30 UTC the day before: the tick is on the local hour.
    tick = dt.datetime(2026, 6, 1, 5, 0, tzinfo=ZoneInfo("Asia/Kolkata"))
    assert tick.astimezone(dt.UTC).minute == 30
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=tick, repository_def=repository
        )
        (request,) = schedule.evaluate_tick(context).run_requests or []
    assert request.partition_key == "2026-06-01-04:00"
    assert request.asset_selection == [dg.AssetKey(["esm", "club_stripe", "charges"])]
    # A mapping in error is left out of scheduled runs.
    with session_factory(db_url).begin() as session:
        get_mapping(session, kolkata.id).sync_status = SyncStatus.ERROR
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=tick, repository_def=repository
        )
        data = schedule.evaluate_tick(context)
    assert not data.run_requests and "paused" in (data.skip_message or "")


def test_custom_cron_and_start_date_make_their_own_group() -> None:
    from esm_dagster.orchestration.schedules import build_groups

    plain = spec("daily", "Asia/Bangkok")
    early = spec("daily", "Asia/Bangkok", cron="30 2 * * *", start_date="2026-10-01")
    groups = build_groups([plain, early])
    assert len(groups) == 2
    custom = partitions_for(groups[0].cadence if groups[0].cadence.cron else groups[1].cadence)
    assert custom is not None and custom.get_cron_schedule() == "30 2 * * *"
    first = custom.get_first_partition_window()
    assert first is not None and first.start.astimezone(BANGKOK).date() == dt.date(2026, 10, 1)


@pytest.fixture
def november_emulator():
    """Charges and customers created between 2026-11-01 and 2026-11-04, Bangkok time."""
    start = int(dt.datetime(2026, 11, 1, tzinfo=BANGKOK).timestamp())
    end = int(dt.datetime(2026, 11, 4, tzinfo=BANGKOK).timestamp())
    emulator = StripeEmulator(
        api_keys=[DEMO_STRIPE_KEY], customers=30, charges=240, seed=11, start=start, end=end
    )
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


def count(url: str, table: str) -> int:
    with get_engine(url).connect() as conn:
        return conn.execute(sa.text(f'select count(*) from "{table}"')).scalar_one()


def test_each_partition_fetches_exactly_its_window_and_reruns_add_nothing(
    db_url: str, fernet_key: str, november_emulator: StripeEmulator
) -> None:
    register_demo_catalog(db_url, november_emulator.url)
    defs = build_definitions(db_url)
    job = defs.resolve_job_def(DAILY_JOB)
    daily = partitions_for(Cadence("daily", "Asia/Bangkok"))
    days = ["2026-11-01", "2026-11-02", "2026-11-03"]
    instance = dg.DagsterInstance.ephemeral()
    written = 0
    for day in days:
        november_emulator.reset_request_log()
        result = job.execute_in_process(instance=instance, partition_key=day)
        assert result.success
        (event,) = result.get_asset_materialization_events()
        assert event.materialization.partition == day
        written += event.materialization.metadata["records_written"].value
        start, end = window_seconds(daily, day)
        lists = [r for r in november_emulator.requests if r.path == "/v1/charges"]
        assert lists, "the partition run called the charges list"
        for request in lists:
            query = parse_qs(request.query)
            assert query["created[gte]"] == [str(start)] and query["created[lt]"] == [str(end)]
    payments = count(db_url, "payment")
    assert payments == written and payments > 200
    # Re-running the three partitions (a second backfill) rewrites the same rows.
    for day in days:
        assert job.execute_in_process(instance=instance, partition_key=day).success
    assert count(db_url, "payment") == payments
    # Partition runs leave the incremental cursor alone: an unpartitioned run still reads everything.
    result = job.execute_in_process(instance=instance)
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["records_read"].value == 240
    assert count(db_url, "payment") == payments


def test_incremental_config_on_a_partition_run_uses_the_cursor(
    db_url: str, fernet_key: str, november_emulator: StripeEmulator
) -> None:
    register_demo_catalog(db_url, november_emulator.url)
    defs = build_definitions(db_url)
    job = defs.resolve_job_def(DAILY_JOB)
    instance = dg.DagsterInstance.ephemeral()
    config = {"ops": {"esm__stripe__charges": {"config": {"incremental": True}}}}
    first = job.execute_in_process(instance=instance, partition_key="2026-11-02", run_config=config)
    (event,) = first.get_asset_materialization_events()
    assert event.materialization.metadata["records_read"].value == 240
    second = job.execute_in_process(instance=instance, partition_key="2026-11-02", run_config=config)
    (event,) = second.get_asset_materialization_events()
    assert event.materialization.metadata["records_read"].value == 0
