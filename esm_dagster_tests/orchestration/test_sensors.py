"""Sensors on a real instance: a failed run updates its row and alerts once (at a real loopback
receiver); a mapping in error gets a probe run that brings it back; real_time mappings sync when
the provider has a new event; the integration-health asset writes its rows."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator

import dagster as dg
import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.mappings import get_mapping
from esm_dagster.catalog.models import IntegrationHealth, SyncStatus, Task, TaskStatus
from esm_dagster.demo.run import DEMO_STRIPE_KEY
from esm_dagster.orchestration.loader import build_definitions
from esm_dagster.orchestration.probe_job import PROBE_JOB
from esm_dagster.security.vault import Vault
from esm_dagster_tests.alerts.receivers import HttpReceiver
from esm_dagster_tests.stripe_fixtures import demo_catalog, stripe_emulator

HOURLY_JOB = "esm_sync_hourly__asia_bangkok"
BAD_KEY = "sk_test_revokedrevokedrevoked0000"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    server = HttpReceiver()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def alerts_file(tmp_path, receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(f"channels:\n  data-eng:\n    type: webhook\n    url: {receiver.url('/hook')}\n")
    monkeypatch.setenv("ESM_ALERTS_FILE", str(path))


@pytest.fixture
def emulator():
    with stripe_emulator(customers=30, charges=60) as emu:
        yield emu


@pytest.fixture
def catalog(db_url: str, fernet_key: str, emulator) -> str:
    demo_catalog(db_url, emulator)
    return db_url


def set_key(url: str, ref: str, key: str, **changes) -> None:
    with session_factory(url).begin() as session:
        row = get_mapping(session, ref)
        row.credentials = Vault.from_env().encrypt({"api_key": key})
        for name, value in changes.items():
            setattr(row, name, value)


def failure_context(instance: dg.DagsterInstance, result, sensor_name: str):
    event = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    return dg.build_run_status_sensor_context(
        sensor_name=sensor_name,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=event,
    ).for_run_failure()


def sensor(defs: dg.Definitions, name: str) -> dg.SensorDefinition:
    return next(s for s in defs.sensors or [] if s.name == name)


@pytest.mark.usefixtures("alerts_file")
def test_failed_run_records_the_row_opens_a_task_and_alerts_once(
    catalog: str, receiver: HttpReceiver
) -> None:
    set_key(catalog, "stripe/customers", BAD_KEY, retry_attempts=0)
    defs = build_definitions(catalog)
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def(HOURLY_JOB).execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    on_failure = sensor(defs, "esm_run_failure_sensor")
    on_failure(failure_context(instance, result, on_failure.name))
    on_failure(failure_context(instance, result, on_failure.name))  # a second tick sees the same run
    posts = receiver.received("/hook")
    assert len(posts) == 1
    body = posts[0]["json"]
    text = str(body)
    assert result.run_id in text and "esm/stripe/customers" in text and "auth" in text
    assert BAD_KEY not in text and "revoked" not in text
    with session_factory(catalog)() as session:
        row = get_mapping(session, "stripe/customers")
        assert row.error_count == 1  # counted by the engine, not again by the sensor
        tasks = session.scalars(sa.select(Task).where(Task.mapping_id == row.id)).all()
        assert [(t.reason, t.status) for t in tasks] == [("credentials", TaskStatus.PENDING)]
        assert tasks[0].assigned_to_user_id == row.created_by_user_id is not None


@pytest.mark.usefixtures("alerts_file")
def test_failure_the_engine_never_saw_is_counted_by_the_sensor(catalog: str, receiver: HttpReceiver) -> None:
    # An unusable catalog URL in the resource: the step fails before the engine records anything.
    defs = build_definitions(catalog)
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def(HOURLY_JOB)
    config = {"ops": {"esm__stripe__customers": {"config": {"since": "not-a-date"}}}}
    result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=config)
    assert not result.success
    on_failure = sensor(defs, "esm_run_failure_sensor")
    on_failure(failure_context(instance, result, on_failure.name))
    with session_factory(catalog)() as session:
        row = get_mapping(session, "stripe/customers")
        assert row.error_count == 1 and "not-a-date" in (row.last_error_message or "")
    (post,) = receiver.received("/hook")
    assert "orchestration" in str(post["json"])


@pytest.mark.usefixtures("alerts_file")
def test_error_state_sensor_probes_and_the_probe_brings_the_mapping_back(
    catalog: str, receiver: HttpReceiver
) -> None:
    set_key(catalog, "stripe/charges", BAD_KEY, sync_status=SyncStatus.ERROR, error_count=3)
    defs = build_definitions(catalog)
    instance = dg.DagsterInstance.ephemeral()
    error_state = sensor(defs, "esm_error_state_sensor")
    tick = error_state.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    (request,) = tick.run_requests or []
    probe = defs.resolve_job_def(PROBE_JOB)
    failed = probe.execute_in_process(instance=instance, run_config=request.run_config, raise_on_error=False)
    assert not failed.success  # the key is still revoked
    with session_factory(catalog)() as session:
        row = get_mapping(session, "stripe/charges")
        assert row.sync_status == SyncStatus.ERROR
        open_tasks = session.scalars(sa.select(Task).where(Task.mapping_id == row.id)).all()
        assert [t.reason for t in open_tasks] == ["credentials"]
    # Probed a moment ago: the next tick waits instead of hammering the provider.
    again = error_state.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    assert not again.run_requests and "probed" in (again.skip_message or "")
    # Someone fixes the key; the next probe succeeds and the row is active again.
    set_key(catalog, "stripe/charges", DEMO_STRIPE_KEY)
    ok = probe.execute_in_process(instance=instance, run_config=request.run_config)
    assert ok.success
    with session_factory(catalog)() as session:
        row = get_mapping(session, "stripe/charges")
        assert row.sync_status == SyncStatus.ACTIVE and row.error_count == 0
        statuses = session.scalars(sa.select(Task.status).where(Task.mapping_id == row.id)).all()
        assert statuses == [TaskStatus.COMPLETED]
    (recovered,) = receiver.received("/hook")
    assert "recovered" in str(recovered["json"]).lower()
    quiet = error_state.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    assert not quiet.run_requests


@pytest.mark.usefixtures("alerts_file")
def test_a_successful_sync_ends_the_episode_like_a_probe(catalog: str, receiver: HttpReceiver) -> None:
    """Revoked key -> failed run, row in error, credentials task; the key is fixed and a person
    launches a sync (no probe): the task closes and one "recovered" alert goes out."""
    set_key(catalog, "stripe/customers", BAD_KEY, retry_attempts=0)
    with session_factory(catalog).begin() as session:
        row = get_mapping(session, "stripe/customers")
        rules = dict(row.mapping_rules)
        rules["sync_config"] = {
            **rules.get("sync_config", {}),
            "error_threshold": 1,
            "circuit_cooldown_seconds": 1,  # the first run after it is the half-open trial
        }
        row.mapping_rules = rules
    defs = build_definitions(catalog)
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def(HOURLY_JOB)
    failed = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not failed.success
    on_failure = sensor(defs, "esm_run_failure_sensor")
    on_failure(failure_context(instance, failed, on_failure.name))
    with session_factory(catalog)() as session:
        row = get_mapping(session, "stripe/customers")
        assert row.sync_status == SyncStatus.ERROR
        tasks = session.scalars(sa.select(Task).where(Task.mapping_id == row.id)).all()
        assert [(t.reason, t.status) for t in tasks] == [("credentials", TaskStatus.PENDING)]
    assert len(receiver.received("/hook")) == 1  # the failure

    set_key(catalog, "stripe/customers", DEMO_STRIPE_KEY)
    time.sleep(1.1)  # the circuit's cool-down
    ok = job.execute_in_process(instance=instance)
    assert ok.success
    with session_factory(catalog)() as session:
        row = get_mapping(session, "stripe/customers")
        assert row.sync_status == SyncStatus.ACTIVE and row.error_count == 0
        (task,) = session.scalars(sa.select(Task).where(Task.mapping_id == row.id)).all()
        assert task.status == TaskStatus.COMPLETED and task.resolution == "synced successfully"
    posts = receiver.received("/hook")
    assert len(posts) == 2
    recovered = posts[1]["json"]
    assert recovered["kind"] == "mapping_recovered" and recovered["run_id"] == ok.run_id, recovered
    assert recovered["asset_key"] == "esm/stripe/customers"
    # Another successful sync is no new episode: no second "recovered".
    assert job.execute_in_process(instance=instance).success
    assert len(receiver.received("/hook")) == 2


def test_real_time_sensor_launches_once_per_new_event(db_url: str, fernet_key: str, emulator) -> None:
    demo_catalog(db_url, emulator)
    with session_factory(db_url).begin() as session:
        row = get_mapping(session, "stripe/customers")
        row.sync_frequency = "real_time"
    defs = build_definitions(db_url)
    real_time = sensor(defs, "esm_real_time_sensor")
    instance = dg.DagsterInstance.ephemeral()
    first = real_time.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    (request,) = first.run_requests or []
    assert request.asset_selection == [dg.AssetKey(["esm", "stripe", "customers"])]
    second = real_time.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs)
    )
    assert not second.run_requests
    emulator.add_customer(email="new.member@padel.example", name="New Member")
    third = real_time.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=second.cursor, definitions=defs)
    )
    (launch,) = third.run_requests or []
    assert launch.run_key != request.run_key
    job = defs.resolve_job_def(launch.job_name)
    result = job.execute_in_process(instance=instance, asset_selection=launch.asset_selection)
    assert result.success


def test_integration_health_asset_writes_rows(catalog: str) -> None:
    defs = build_definitions(catalog)
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def(HOURLY_JOB).execute_in_process(instance=instance).success
    today = dt.datetime.now(dt.UTC).date().isoformat()
    result = defs.resolve_job_def("esm_integration_health_job").execute_in_process(
        instance=instance, partition_key=today
    )
    assert result.success
    (event,) = result.get_asset_materialization_events()
    table = event.materialization.metadata["health"].value
    names = {record.data["system_name"] for record in table.records}
    assert {"Stripe", "Stripe Legacy Account"} <= names
    with session_factory(catalog)() as session:
        rows = session.scalars(sa.select(IntegrationHealth)).all()
        customers = get_mapping(session, "stripe/customers")
        mine = next(r for r in rows if r.mapping_id == customers.id)
        assert mine.runs == 1 and mine.availability == 1.0 and mine.records_written > 0
        rules = customers.mapping_rules
        per_minute = (rules.get("sync_config") or rules)["rate_limiting"]["requests_per_minute"]
        assert mine.api_calls >= 1 and mine.api_budget == per_minute * 1440
        assert mine.sla_compliant is True


def test_runs_refused_by_the_open_circuit_are_no_attempts_in_health(catalog: str) -> None:
    from esm_dagster.catalog.models import SyncRun
    from esm_dagster.catalog.types import utcnow
    from esm_dagster.sync.health import compute_health

    now = utcnow()
    with session_factory(catalog).begin() as session:
        mapping_id = get_mapping(session, "stripe/charges").id
        for status, error_class in [
            ("success", None),
            ("failed", "server"),
            *[("failed", "circuit_open")] * 3,
        ]:
            session.add(
                SyncRun(mapping_id=mapping_id, stream="charges", status=status, error_class=error_class,
                        started_at=now, finished_at=now)
            )  # fmt: skip
    (mine,) = [r for r in compute_health(catalog, now.date()) if r.mapping_id == str(mapping_id)]
    assert mine.availability == 0.5 and mine.error_rate == 0.5
    assert mine.errors_by_class == {"server": 1, "circuit_open": 3}


def test_sla_clock() -> None:
    from esm_dagster.sync.health import sla_met

    day = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    end = day + dt.timedelta(days=1)
    hour = dt.timedelta(hours=1)
    hourly = [day + hour * i + dt.timedelta(minutes=5) for i in range(24)]
    assert sla_met(day - hour, hourly, day, end, hour)
    gap = hourly[:10] + hourly[13:]  # three missed hours
    assert not sla_met(day - hour, gap, day, end, hour)
    assert not sla_met(day - dt.timedelta(days=2), [], day, end, dt.timedelta(days=1))
    assert sla_met(
        day - dt.timedelta(hours=3), [day + dt.timedelta(hours=20)], day, end, dt.timedelta(days=1)
    )


@pytest.mark.usefixtures("alerts_file")
def test_runs_refused_by_an_open_circuit_alert_once_and_probes_wait_for_the_cool_down(
    catalog: str, receiver: HttpReceiver, emulator
) -> None:
    with session_factory(catalog).begin() as session:
        row = get_mapping(session, "stripe/customers")
        row.retry_attempts = 0
        rules = json.loads(json.dumps(row.mapping_rules))
        rules["sync_config"]["error_threshold"] = 1
        row.mapping_rules = rules
    defs = build_definitions(catalog)
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def(HOURLY_JOB)
    on_failure = sensor(defs, "esm_run_failure_sensor")

    emulator.faults.fail_next(1, status=500)
    opening = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not opening.success
    on_failure(failure_context(instance, opening, on_failure.name))
    (alert,) = receiver.received("/hook")
    assert "circuit open until" in str(alert["json"])  # the one alert: the failure that opened it

    before = emulator.request_count
    for _ in range(3):
        refused = job.execute_in_process(instance=instance, raise_on_error=False)
        assert not refused.success
        on_failure(failure_context(instance, refused, on_failure.name))
    assert emulator.request_count == before
    assert len(receiver.received("/hook")) == 1, "a refused run is not a new failure to alert on"
    with session_factory(catalog)() as session:
        row = get_mapping(session, "stripe/customers")
        assert (row.sync_status, row.error_count) == (SyncStatus.ERROR, 1)
        assert (row.last_error_message or "").startswith("mapping 'Stripe': circuit open since")

    error_state = sensor(defs, "esm_error_state_sensor")
    tick = error_state.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    assert not tick.run_requests and "circuit open until" in (tick.skip_message or "")
