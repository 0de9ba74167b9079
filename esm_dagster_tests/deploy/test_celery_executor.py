"""A multi-mapping job on the dagster-celery executor: two workers, RabbitMQ, PostgreSQL storage.

Real parts only: the machine's RabbitMQ carries the steps to two `dagster-celery worker start`
processes, the run and its events live in PostgreSQL (the production profile), and the syncs
read the Stripe emulator over loopback.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from deploy.celery_check import check
from deploy.celery_defs import DEFAULT_BROKER
from deploy.celery_workers import celery_workers, delete_queue
from deploy.prod_check import DEFAULT_ADMIN_URL, PROFILE, REPO_ROOT, scratch_database
from esm_dagster.catalog.db import normalize_url, session_factory
from esm_dagster.catalog.mappings import MappingInput, upsert_mapping
from esm_dagster.catalog.migrate import upgrade
from esm_dagster.demo.run import DEMO_STRIPE_KEY, demo_mappings
from esm_dagster.orchestration.loader import fetch_specs, usable_specs
from esm_dagster.orchestration.schedules import build_groups
from esm_dagster.sandbox.stripe import StripeEmulator
from esm_dagster.security.vault import Vault, generate_key

ADMIN_URL = os.environ.get("ESM_TEST_DATABASE_URL") or DEFAULT_ADMIN_URL
BROKER = os.environ.get("ESM_CELERY_BROKER", DEFAULT_BROKER)


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def _register_manual(url: str, emulator_url: str) -> str:
    """The demo's two Stripe mappings as `manual` rows: one group, so one job syncs both."""
    upgrade(url)
    with session_factory(url).begin() as session:
        for raw in demo_mappings(emulator_url):
            if raw.get("is_active") is False:
                continue
            raw = {**raw, "sync_frequency": "manual"}
            raw.pop("created_by", None)
            upsert_mapping(session, Vault.from_env(), MappingInput.model_validate(raw))
    (group,) = build_groups(usable_specs(fetch_specs(url)))
    assert len(group.members) == 2
    return group.job.name


def _require_rabbitmq() -> None:
    if not _listening("127.0.0.1", 5672):
        if os.environ.get("ESM_REQUIRE_BROKER") == "1":
            pytest.fail("ESM_REQUIRE_BROKER=1 but RabbitMQ is not listening on 127.0.0.1:5672")
        pytest.skip("RabbitMQ is not listening on 127.0.0.1:5672 (ESM_REQUIRE_BROKER=1 makes this fail)")


@dataclass(frozen=True)
class Deployment:
    """The production profile in a scratch database, the demo's Stripe mappings as one job."""

    home: Path
    env: dict[str, str]
    job: str
    catalog_url: str
    vault_key: str


@contextmanager
def _deployment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, queue: str, customers: int, charges: int
) -> Iterator[Deployment]:
    _require_rabbitmq()
    key = generate_key()
    monkeypatch.setenv("ESM_FERNET_KEYS", key)
    monkeypatch.delenv("ESM_FERNET_KEYS_FILE", raising=False)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROFILE, home / "dagster.yaml")
    emulator = StripeEmulator(api_keys=[DEMO_STRIPE_KEY], customers=customers, charges=charges, seed=9)
    emulator.start()
    try:
        with scratch_database(ADMIN_URL) as (storage_url, catalog_url):
            monkeypatch.setenv("DAGSTER_PG_URL", storage_url)
            job = _register_manual(catalog_url, emulator.url)
            env = {
                **os.environ,
                "DAGSTER_HOME": str(home),
                "ESM_DATABASE_URL": catalog_url,
                "ESM_CELERY_BROKER": BROKER,
                "ESM_CELERY_QUEUE": queue,
                "PYTHONPATH": str(REPO_ROOT),
            }
            yield Deployment(home, env, job, catalog_url, key)
    finally:
        emulator.stop()


def _execute(deployment: Deployment, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """`dagster job execute` of the deployment's job on the Celery code location."""
    return subprocess.run(
        [sys.executable, "-m", "dagster", "job", "execute", "-m", "deploy.celery_defs", "-j", deployment.job],
        env=deployment.env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.postgres
def test_a_run_whose_queue_no_worker_consumes_fails_at_once_holding_no_slots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It used to hang after RUN_START, ignore SIGTERM, and keep the provider's concurrency slots
    after a kill -9, so every later Stripe run waited behind it (new-user finding)."""
    queue = f"esm_nobody_{uuid.uuid4().hex[:10]}"
    try:
        with _deployment(tmp_path, monkeypatch, queue, customers=5, charges=5) as deployment:
            home, job = deployment.home, deployment.job
            done = _execute(deployment, tmp_path, timeout=120)
            assert done.returncode != 0
            with dg.DagsterInstance.from_config(str(home)) as instance:
                (record,) = instance.get_run_records(dg.RunsFilter(job_name=job))
                assert record.dagster_run.status == dg.DagsterRunStatus.FAILURE
                events = instance.all_logs(record.dagster_run.run_id)
                kinds = [e.dagster_event.event_type_value for e in events if e.dagster_event is not None]
                assert "STEP_START" not in kinds, kinds
                (failure,) = [
                    e.dagster_event for e in events if e.dagster_event and e.dagster_event.is_run_failure
                ]
                error = failure.event_specific_data.error  # type: ignore[union-attr]
                assert error.cls_name == "CeleryNotReady", error
                assert f"no worker consumes queue {queue!r}" in error.message
                info = instance.event_log_storage.get_concurrency_info("provider_stripe")
                assert info.claimed_slots == []
    finally:
        delete_queue(BROKER, queue)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_two_mapping_job_runs_its_steps_on_two_celery_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = f"esm_test_{uuid.uuid4().hex[:10]}"
    with _deployment(tmp_path, monkeypatch, queue, customers=50, charges=150) as deployment:
        home, env, job = deployment.home, deployment.env, deployment.job
        catalog_url, key = deployment.catalog_url, deployment.vault_key
        with celery_workers(2, queue, env, tmp_path) as workers:
            # `make celery-check` sees both workers on the run's queue.
            assert check(BROKER, queue) == (None, sorted(w.name for w in workers))
            done = _execute(deployment, tmp_path, timeout=180)
            logs = "\n".join(w.log.read_text() for w in workers)
            assert done.returncode == 0, done.stderr[-3000:] + logs[-3000:]
            # Neither the API key nor the vault key reaches a worker's log or the run's output.
            for text in (logs, done.stdout, done.stderr):
                assert DEMO_STRIPE_KEY not in text and key not in text
            worker_pids = {w.process.pid for w in workers}
        with dg.DagsterInstance.from_config(str(home)) as instance:
            (record,) = instance.get_run_records(dg.RunsFilter(job_name=job))
            assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
            events = instance.all_logs(record.dagster_run.run_id)
        assert not any(DEMO_STRIPE_KEY in str(e) or key in str(e) for e in events)
        starts = {
            e.dagster_event.step_key: e.dagster_event.pid
            for e in events
            if e.dagster_event is not None and e.dagster_event.event_type_value == "STEP_START"
        }
        hosts = {
            e.dagster_event.step_key: e.dagster_event.engine_event_data.metadata["Celery worker"].value
            for e in events
            if e.dagster_event is not None
            and e.dagster_event.event_type_value == "ENGINE_EVENT"
            and "Celery worker" in e.dagster_event.engine_event_data.metadata
        }
        metadata = {
            e.dagster_event.step_key: {
                k: v.value
                for k, v in e.dagster_event.step_materialization_data.materialization.metadata.items()
            }
            for e in events
            if e.dagster_event is not None and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
        }
        # Two steps, each in its own worker process: different pids, different worker names,
        # none of them the run process or the workers' parent processes.
        assert len(starts) == 2 and len(set(starts.values())) == 2, starts
        assert set(hosts) == set(starts) and len(set(hosts.values())) == 2, hosts
        assert set(hosts.values()) == {w.name for w in workers}
        assert not set(starts.values()) & (worker_pids | {os.getpid()})
        # The data landed once: as many rows as the syncs wrote, one per source record.
        engine = sa.create_engine(normalize_url(catalog_url))
        try:
            with engine.connect() as conn:
                counts = {
                    table: conn.execute(
                        sa.text(
                            f'select count(*), count(distinct (esm_source, esm_external_id)) from "{table}"'
                        )
                    ).one()
                    for table in ("user", "payment")
                }
        finally:
            engine.dispose()
        written = sorted(m["records_written"] for m in metadata.values())
        assert written == sorted(c[0] for c in counts.values()), (metadata, counts)
        for total, distinct in counts.values():
            assert total == distinct > 0
        # Every charge the emulator serves was read once and either written or quarantined.
        (charges,) = [m for m in metadata.values() if m["records_read"] == 150]
        assert charges["records_written"] + charges["records_rejected"] == 150
    # The test's queue is gone from the broker.
    from kombu import Connection

    with Connection(BROKER) as conn, pytest.raises(Exception, match="NOT_FOUND"):
        conn.default_channel.queue_declare(queue, passive=True)
