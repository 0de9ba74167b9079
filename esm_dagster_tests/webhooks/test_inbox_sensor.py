"""The real_time sensor consumes the webhook inbox, on a real Dagster instance, against the Stripe
emulator: a signed event posted over HTTP to the receiver gets exactly one run (asked again under
the same run key until it exists), is marked processed once that run succeeded, and asks for no
more; a failed run is asked for again under a new key, so no event is lost; the reconcile poll
runs a sync only for a newest provider event that never came as a webhook."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import dagster as dg
import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.mappings import get_mapping
from esm_dagster.catalog.models import WebhookInboxEvent
from esm_dagster.demo.run import DEMO_STRIPE_KEY
from esm_dagster.orchestration.loader import build_definitions
from esm_dagster.orchestration.sensors import WEBHOOK_BATCH_TAG
from esm_dagster.sandbox.stripe import StripeEmulator
from esm_dagster.sandbox.webhook_signers import deliver, stripe_signature_header
from esm_dagster.security.vault import Vault
from esm_dagster.webhooks.serve import BackgroundServer
from esm_dagster_tests.stripe_fixtures import demo_catalog, stripe_emulator

SECRET = "whsec_test_sensorSecret000000000001"
BAD_KEY = "sk_test_revokedrevokedrevoked0000"


@pytest.fixture
def stripe(db_url: str, fernet_key: str) -> Iterator[tuple[str, StripeEmulator]]:
    with stripe_emulator(customers=20, charges=20) as emulator:
        demo_catalog(db_url, emulator)
        with session_factory(db_url).begin() as session:
            row = get_mapping(session, "stripe/customers")
            row.sync_frequency = "real_time"
            row.retry_attempts = 0
            row.credentials = Vault.from_env().encrypt({"api_key": DEMO_STRIPE_KEY, "webhook_secret": SECRET})
        yield db_url, emulator


@pytest.fixture
def catalog(stripe: tuple[str, StripeEmulator]) -> str:
    return stripe[0]


def set_api_key(url: str, key: str) -> None:
    with session_factory(url).begin() as session:
        row = get_mapping(session, "stripe/customers")
        row.credentials = Vault.from_env().encrypt({"api_key": key, "webhook_secret": SECRET})


def post_event(server: BackgroundServer, mapping_id: str, event_id: str, body: bytes | None = None) -> None:
    body = (
        body
        or (
            f'{{"id": "{event_id}", "object": "event", "type": "customer.updated", "created": {int(time.time())}, '
            '"data": {"object": {"id": "cus_1", "object": "customer"}}}'
        ).encode()
    )
    header = stripe_signature_header(body, SECRET, int(time.time()))
    response = deliver(
        f"{server.url}/webhooks/{mapping_id}",
        {"Stripe-Signature": header, "Content-Type": "application/json"},
        body,
    )
    assert response.status_code == 200 and response.json()["status"] == "accepted", response.text


def pending(url: str) -> list[str]:
    with session_factory(url)() as session:
        rows = session.scalars(sa.select(WebhookInboxEvent).where(WebhookInboxEvent.processed_at.is_(None)))
        return sorted(r.event_id for r in rows)


@dataclass
class Ticker:
    """Sensor ticks as the daemon runs them: each starts from the cursor the previous one left."""

    sensor: dg.SensorDefinition
    instance: dg.DagsterInstance
    defs: dg.Definitions
    cursor: dict[str, str] = field(default_factory=dict)

    def __call__(self) -> list[dg.RunRequest]:
        context = dg.build_sensor_context(
            instance=self.instance, definitions=self.defs, cursor=json.dumps(self.cursor)
        )
        result = self.sensor.evaluate_tick(context)
        self.cursor = json.loads(result.cursor or "{}")
        return list(result.run_requests or [])

    def reconcile_due(self, mapping_id: str) -> None:
        self.cursor[f"{mapping_id}:reconciled_at"] = "0"


def launch(
    defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest
) -> dg.ExecuteInProcessResult:
    """What the daemon does with a request: a run of its job, its assets and its tags."""
    assert request.job_name is not None
    job = defs.resolve_job_def(request.job_name)
    tags = {**request.tags, "dagster/run_key": request.run_key or ""}
    return job.execute_in_process(
        instance=instance, asset_selection=request.asset_selection, tags=tags, raise_on_error=False
    )


def ticker(url: str) -> tuple[dg.Definitions, dg.DagsterInstance, Ticker, str]:
    defs = build_definitions(url)
    sensor = next(s for s in defs.sensors or [] if s.name == "esm_real_time_sensor")
    instance = dg.DagsterInstance.ephemeral()
    with session_factory(url)() as session:
        mapping_id = str(get_mapping(session, "stripe/customers").id)
    return defs, instance, Ticker(sensor, instance, defs), mapping_id


def test_accepted_events_get_one_run_and_none_once_processed(catalog: str) -> None:
    defs, instance, tick, mapping_id = ticker(catalog)
    # The first tick reconciles: the emulator's events never came as webhooks, so one sync.
    (reconcile,) = tick()
    assert reconcile.tags["esm/reconcile"] == "missed_webhook"
    assert tick() == []  # and between reconciliations a webhook-fed mapping is not polled

    with BackgroundServer(catalog) as server:
        post_event(server, mapping_id, "evt_sensor_1")
        post_event(server, mapping_id, "evt_sensor_2")
        (first,) = tick()
        assert first.asset_selection == [dg.AssetKey(["esm", "stripe", "customers"])]
        assert first.tags[WEBHOOK_BATCH_TAG] == first.run_key and first.tags["esm/webhook_events"] == "2"
        # Not launched yet: asked again under the same key (Dagster launches one run per key).
        (again,) = tick()
        assert again.run_key == first.run_key
        post_event(server, mapping_id, "evt_sensor_3")  # arrives while the first batch waits

    requests = tick()
    assert len(requests) == 2 and requests[0].run_key == first.run_key
    second = requests[1]
    assert second.run_key != first.run_key and second.tags["esm/webhook_events"] == "1"

    assert launch(defs, instance, first).success
    # Nothing is marked before the sensor sees the run succeeded.
    assert pending(catalog) == ["evt_sensor_1", "evt_sensor_2", "evt_sensor_3"]
    (still,) = tick()
    assert still.run_key == second.run_key
    assert pending(catalog) == ["evt_sensor_3"]
    assert launch(defs, instance, second).success
    assert tick() == []
    assert pending(catalog) == []
    assert tick() == []
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"esm/mapping_id": mapping_id}))
    assert len(runs) == 2


def test_a_failed_run_is_asked_for_again_and_loses_no_event(catalog: str) -> None:
    defs, instance, tick, mapping_id = ticker(catalog)
    tick()  # the start-up reconciliation
    with BackgroundServer(catalog) as server:
        post_event(server, mapping_id, "evt_fails_first")
    (request,) = tick()
    set_api_key(catalog, BAD_KEY)
    failed = launch(defs, instance, request)
    assert not failed.success
    set_api_key(catalog, DEMO_STRIPE_KEY)  # someone fixes the key; the mapping is still active
    with session_factory(catalog).begin() as session:
        row = get_mapping(session, "stripe/customers")
        row.sync_status, row.error_count = "active", 0
    (retry,) = tick()
    assert retry.run_key == f"{request.run_key}#1"
    assert pending(catalog) == ["evt_fails_first"]
    assert launch(defs, instance, retry).success
    assert tick() == [] and pending(catalog) == []


def test_reconcile_runs_only_for_an_event_that_never_came_as_a_webhook(
    stripe: tuple[str, StripeEmulator],
) -> None:
    url, emulator = stripe
    defs, instance, tick, mapping_id = ticker(url)
    newest = emulator.object_ids("events")[0]
    with BackgroundServer(url) as server:
        # Stripe delivers its newest event: the emulator's own event object, signed as Stripe signs.
        event = emulator.get_object("events", newest)
        post_event(server, mapping_id, newest, json.dumps(event, indent=2).encode())
    (batch,) = tick()  # the inbox batch; the reconcile finds the newest event in the inbox
    assert WEBHOOK_BATCH_TAG in batch.tags and "esm/reconcile" not in batch.tags
    assert launch(defs, instance, batch).success
    assert tick() == []

    emulator.add_customer(email="walk.in@padel.example", name="Walk In")  # its webhook never arrives
    missed = emulator.object_ids("events")[0]
    assert tick() == []  # not due yet
    tick.reconcile_due(mapping_id)
    (reconcile,) = tick()
    assert (
        reconcile.tags["esm/reconcile"] == "missed_webhook" and reconcile.tags["esm/trigger_event"] == missed
    )
    assert launch(defs, instance, reconcile).success
    tick.reconcile_due(mapping_id)
    assert tick() == []  # the same newest event: nothing new to reconcile


def test_the_sensor_prunes_processed_events_after_the_retention_and_never_pending_ones(catalog: str) -> None:
    import datetime as dt

    from esm_dagster.catalog.types import utcnow
    from esm_dagster.webhooks.inbox import RETENTION

    _, _, tick, mapping_id = ticker(catalog)
    tick()  # the start-up reconciliation
    with BackgroundServer(catalog) as server:
        post_event(server, mapping_id, "evt_old_processed")
        post_event(server, mapping_id, "evt_old_pending")
    long_ago = utcnow() - RETENTION - dt.timedelta(days=1)
    with session_factory(catalog).begin() as session:
        for row in session.scalars(sa.select(WebhookInboxEvent)):
            row.received_at = long_ago
            row.processed_at = long_ago if row.event_id == "evt_old_processed" else None
    (request,) = tick()  # the old pending event still gets its run
    assert request.tags["esm/webhook_events"] == "1"
    with session_factory(catalog)() as session:
        assert session.scalars(sa.select(WebhookInboxEvent.event_id)).all() == ["evt_old_pending"]
