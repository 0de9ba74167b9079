"""The real_time sensor consumes the webhook inbox, on a real Dagster instance, against the Stripe
emulator: a signed event posted over HTTP to the receiver gets exactly one run (asked again under
the same run key until it exists), is marked processed once that run succeeded, and asks for no
more; a failed run is asked for again under a new key, so no event is lost."""

from __future__ import annotations

import time
from collections.abc import Iterator

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.mappings import get_mapping
from esm_dagster.catalog.models import WebhookInboxEvent
from esm_dagster.demo.run import DEMO_STRIPE_KEY
from esm_dagster.orchestration.loader import build_definitions
from esm_dagster.orchestration.sensors import WEBHOOK_BATCH_TAG
from esm_dagster.sandbox.webhook_signers import stripe_signature_header
from esm_dagster.security.vault import Vault
from esm_dagster.webhooks.serve import BackgroundServer
from esm_dagster_tests.stripe_fixtures import demo_catalog, stripe_emulator

SECRET = "whsec_test_sensorSecret000000000001"
BAD_KEY = "sk_test_revokedrevokedrevoked0000"


@pytest.fixture
def catalog(db_url: str, fernet_key: str) -> Iterator[str]:
    with stripe_emulator(customers=20, charges=20) as emulator:
        demo_catalog(db_url, emulator)
        with session_factory(db_url).begin() as session:
            row = get_mapping(session, "stripe/customers")
            row.sync_frequency = "real_time"
            row.retry_attempts = 0
            row.credentials = Vault.from_env().encrypt({"api_key": DEMO_STRIPE_KEY, "webhook_secret": SECRET})
        yield db_url


def set_api_key(url: str, key: str) -> None:
    with session_factory(url).begin() as session:
        row = get_mapping(session, "stripe/customers")
        row.credentials = Vault.from_env().encrypt({"api_key": key, "webhook_secret": SECRET})


def post_event(server: BackgroundServer, mapping_id: str, event_id: str) -> None:
    body = (
        f'{{"id": "{event_id}", "object": "event", "type": "customer.updated", "created": {int(time.time())}, '
        '"data": {"object": {"id": "cus_1", "object": "customer"}}}'
    ).encode()
    header = stripe_signature_header(body, SECRET, int(time.time()))
    response = httpx.post(
        f"{server.url}/webhooks/{mapping_id}",
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        content=body,
    )
    assert response.status_code == 200 and response.json()["status"] == "accepted", response.text


def pending(url: str) -> list[str]:
    with session_factory(url)() as session:
        rows = session.scalars(sa.select(WebhookInboxEvent).where(WebhookInboxEvent.processed_at.is_(None)))
        return sorted(r.event_id for r in rows)


def tick(
    sensor: dg.SensorDefinition, instance: dg.DagsterInstance, defs: dg.Definitions
) -> list[dg.RunRequest]:
    result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    return list(result.run_requests or [])


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


def real_time_sensor(url: str) -> tuple[dg.Definitions, dg.SensorDefinition]:
    defs = build_definitions(url)
    return defs, next(s for s in defs.sensors or [] if s.name == "esm_real_time_sensor")


def test_accepted_events_get_one_run_and_none_once_processed(catalog: str) -> None:
    defs, sensor = real_time_sensor(catalog)
    instance = dg.DagsterInstance.ephemeral()
    with session_factory(catalog)() as session:
        mapping_id = str(get_mapping(session, "stripe/customers").id)
    assert tick(sensor, instance, defs) == []  # a webhook-fed mapping is not polled: nothing yet

    with BackgroundServer(catalog) as server:
        post_event(server, mapping_id, "evt_sensor_1")
        post_event(server, mapping_id, "evt_sensor_2")
        (first,) = tick(sensor, instance, defs)
        assert first.asset_selection == [dg.AssetKey(["esm", "stripe", "customers"])]
        assert first.tags[WEBHOOK_BATCH_TAG] == first.run_key and first.tags["esm/webhook_events"] == "2"
        # Not launched yet: asked again under the same key (Dagster launches one run per key).
        (again,) = tick(sensor, instance, defs)
        assert again.run_key == first.run_key
        post_event(server, mapping_id, "evt_sensor_3")  # arrives while the first batch waits

    requests = tick(sensor, instance, defs)
    assert len(requests) == 2 and requests[0].run_key == first.run_key
    second = requests[1]
    assert second.run_key != first.run_key and second.tags["esm/webhook_events"] == "1"

    assert launch(defs, instance, first).success
    # Nothing is marked before the sensor sees the run succeeded.
    assert pending(catalog) == ["evt_sensor_1", "evt_sensor_2", "evt_sensor_3"]
    (still,) = tick(sensor, instance, defs)
    assert still.run_key == second.run_key
    assert pending(catalog) == ["evt_sensor_3"]
    assert launch(defs, instance, second).success
    assert tick(sensor, instance, defs) == []
    assert pending(catalog) == []
    assert tick(sensor, instance, defs) == []
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"esm/mapping_id": mapping_id}))
    assert len(runs) == 2


def test_a_failed_run_is_asked_for_again_and_loses_no_event(catalog: str) -> None:
    defs, sensor = real_time_sensor(catalog)
    instance = dg.DagsterInstance.ephemeral()
    with session_factory(catalog)() as session:
        mapping_id = str(get_mapping(session, "stripe/customers").id)
    with BackgroundServer(catalog) as server:
        post_event(server, mapping_id, "evt_fails_first")
    (request,) = tick(sensor, instance, defs)
    set_api_key(catalog, BAD_KEY)
    failed = launch(defs, instance, request)
    assert not failed.success
    set_api_key(catalog, DEMO_STRIPE_KEY)  # someone fixes the key; the mapping is still active
    with session_factory(catalog).begin() as session:
        row = get_mapping(session, "stripe/customers")
        row.sync_status, row.error_count = "active", 0
    (retry,) = tick(sensor, instance, defs)
    assert retry.run_key == f"{request.run_key}#1"
    assert pending(catalog) == ["evt_fails_first"]
    assert launch(defs, instance, retry).success
    assert tick(sensor, instance, defs) == [] and pending(catalog) == []
