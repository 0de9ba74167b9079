"""The Stripe emulator pushes its events as Stripe does, end to end on real parts: a customer created
through `StripeProvider.write` -> the emulator's background thread POSTs the signed Event to
`esm webhooks serve`'s app under uvicorn on loopback -> the event is in the inbox -> the real_time
sensor, on a real Dagster instance, asks for exactly one run -> the run syncs the customer into the
table -> the sensor marks the event processed and asks for nothing more. A receiver that is down
gets the delivery on a retry; an emulator signing with the wrong secret is refused every attempt
and nothing is stored."""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import get_mapping
from esm_dagster.catalog.models import WebhookInboxEvent
from esm_dagster.demo.run import DEMO_STRIPE_KEY
from esm_dagster.orchestration.sensors import WEBHOOK_BATCH_TAG
from esm_dagster.providers.factory import build_provider
from esm_dagster.sandbox.stripe import StripeEmulator
from esm_dagster.sandbox.webhook_sender import RetryPolicy
from esm_dagster.security.vault import Vault
from esm_dagster.webhooks.inbox import scrub
from esm_dagster.webhooks.serve import BackgroundServer
from esm_dagster_tests.stripe_fixtures import demo_catalog, stripe_emulator
from esm_dagster_tests.webhooks.test_inbox_sensor import launch, pending, ticker

SECRET = "whsec_test_emulatorPushes0000000001"
WRONG = "whsec_test_notTheEndpointsSecret0002"
FAST = RetryPolicy(attempts=3, first_wait=0.1, max_wait=0.4)


@pytest.fixture
def stripe(db_url: str, fernet_key: str) -> Iterator[tuple[str, StripeEmulator]]:
    with stripe_emulator(customers=10, charges=10) as emulator:
        demo_catalog(db_url, emulator)
        with session_factory(db_url).begin() as session:
            row = get_mapping(session, "stripe/customers")
            row.sync_frequency = "real_time"
            row.retry_attempts = 0
            row.credentials = Vault.from_env().encrypt({"api_key": DEMO_STRIPE_KEY, "webhook_secret": SECRET})
        yield db_url, emulator


def create_customer(url: str, email: str) -> str:
    """The write goes through the real client, as an outbound sync would make it."""
    with session_factory(url)() as session:
        row = get_mapping(session, "stripe/customers")
        session.expunge(row)
    provider = build_provider(
        row, Vault.from_env().decrypt(row.credentials, mapping="stripe"), catalog_url=url
    )
    try:
        (made,) = provider.write(
            "create_customer",
            [{"email": email, "name": "Pushed Customer"}],
            idempotency_keys=[str(uuid.uuid4())],
        )
    finally:
        provider.close()
    return str(made["id"])


def emails(url: str) -> set[str]:
    with get_engine(url).connect() as conn:
        return set(conn.execute(sa.text('SELECT email FROM "user"')).scalars())


def test_a_write_at_the_emulator_reaches_the_table_through_its_signed_webhook(
    stripe: tuple[str, StripeEmulator],
) -> None:
    url, emulator = stripe
    defs, instance, tick, mapping_id = ticker(url)
    (startup,) = tick()  # the start-up reconciliation syncs what is there
    assert launch(defs, instance, startup).success
    assert tick() == []

    with BackgroundServer(url) as server:
        sender = emulator.send_webhooks(f"{server.url}/webhooks/{mapping_id}", SECRET, retry=FAST)
        customer = create_customer(url, "pushed.by.webhook@padel.example")
        assert sender.drain(10)
    event = emulator.object_ids("events")[0]
    created = emulator.get_object("events", event)
    assert created is not None and created["type"] == "customer.created"
    assert created["data"]["object"]["id"] == customer
    assert [(a.event_id, a.attempt, a.status) for a in sender.attempts] == [(event, 1, 200)]
    assert pending(url) == [event]
    assert "pushed.by.webhook@padel.example" not in emails(url)

    (request,) = tick()
    assert request.tags[WEBHOOK_BATCH_TAG] == request.run_key and request.tags["esm/webhook_events"] == "1"
    # A sync's window ends, exclusive, at the second its run starts: a customer created in that same
    # second is the next run's. The daemon's tick comes seconds later; here, wait out the second.
    while int(time.time()) <= int(created["data"]["object"]["created"]):
        time.sleep(0.05)
    assert launch(defs, instance, request).success
    assert "pushed.by.webhook@padel.example" in emails(url)
    assert tick() == []  # marks the batch processed
    assert pending(url) == []
    assert tick() == []


def test_the_write_does_not_wait_for_its_webhook(stripe: tuple[str, StripeEmulator]) -> None:
    url, emulator = stripe
    with socket.socket() as stuck:  # accepts connections (the backlog) and never answers
        stuck.bind(("127.0.0.1", 0))
        stuck.listen(8)
        sender = emulator.send_webhooks(f"http://127.0.0.1:{stuck.getsockname()[1]}/hook", SECRET, retry=FAST)
        customer = create_customer(url, "not.waiting@padel.example")
        assert emulator.get_object("customers", customer) is not None
        assert sender.attempts == []  # the delivery is still waiting for an answer
    assert sender.drain(10)  # the socket closed: that attempt and its retries fail
    assert [(a.attempt, a.status) for a in sender.attempts] == [(1, None), (2, None), (3, None)]


def test_a_receiver_that_is_down_gets_the_event_on_a_retry(stripe: tuple[str, StripeEmulator]) -> None:
    url, emulator = stripe
    with session_factory(url)() as session:
        mapping_id = str(get_mapping(session, "stripe/customers").id)
    server = BackgroundServer(url)  # its port is bound, nothing answers yet: connection refused
    try:
        retry = RetryPolicy(attempts=3, first_wait=0.6, max_wait=0.6)
        sender = emulator.send_webhooks(f"{server.url}/webhooks/{mapping_id}", SECRET, retry=retry)
        emulator.add_customer(email="late.receiver@padel.example")
        deadline = time.monotonic() + 5
        while not sender.attempts and time.monotonic() < deadline:
            time.sleep(0.02)
        server.start()
        assert sender.drain(10)
    finally:
        server.stop()
    event = emulator.object_ids("events")[0]
    assert [(a.attempt, a.status) for a in sender.attempts] == [(1, None), (2, 200)]
    assert pending(url) == [event]


def test_a_delivery_signed_with_the_wrong_secret_is_refused_and_nothing_is_stored(
    stripe: tuple[str, StripeEmulator], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    url, emulator = stripe
    with session_factory(url)() as session:
        mapping_id = str(get_mapping(session, "stripe/customers").id)
    with BackgroundServer(url) as server:
        sender = emulator.send_webhooks(f"{server.url}/webhooks/{mapping_id}", WRONG, retry=FAST)
        emulator.add_customer(email="tampered@padel.example")
        assert sender.drain(10)
        # Turned off, the emulator sends nothing more.
        sender.disable()
        emulator.add_customer(email="not.sent@padel.example")
        assert sender.drain(2)
    attempts = sender.attempts
    assert [(a.attempt, a.status) for a in attempts] == [(1, 401), (2, 401), (3, 401)]
    assert len({a.event_id for a in attempts}) == 1
    assert pending(url) == []
    logged = caplog.text
    assert "refused (401)" in logged and "attempt 3: 401" in logged
    assert WRONG not in logged and SECRET not in logged and WRONG not in repr(emulator.__dict__)


def test_charge_and_update_events_are_pushed_as_the_events_feed_has_them(
    stripe: tuple[str, StripeEmulator],
) -> None:
    url, emulator = stripe
    with session_factory(url)() as session:
        mapping_id = str(get_mapping(session, "stripe/customers").id)
    customer = emulator.object_ids("customers")[0]
    with BackgroundServer(url) as server:
        sender = emulator.send_webhooks(f"{server.url}/webhooks/{mapping_id}", SECRET, retry=FAST)
        emulator.update_customer(customer, name="Renamed By Test")
        charge = emulator.add_charge(amount=90000, currency="thb", customer=customer)
        emulator.refund_charge(charge["id"])
        assert sender.drain(10)
    pushed = [a.event_id for a in sender.attempts]
    assert [a.status for a in sender.attempts] == [200, 200, 200]
    assert pushed == emulator.object_ids("events")[:3][::-1]  # the three newest, oldest first
    with session_factory(url)() as session:
        rows = {r.event_id: r for r in session.scalars(sa.select(WebhookInboxEvent))}
    feed = [emulator.get_object("events", event_id) for event_id in pushed]
    assert [e["type"] for e in feed if e] == ["customer.updated", "charge.succeeded", "charge.refunded"]
    for event in feed:
        # The feed's Event, as the inbox keeps any payload (secret-looking card fields masked).
        assert event is not None and rows[event["id"]].payload == scrub(event, [])
    refunded = feed[2]
    assert refunded is not None and refunded["data"]["previous_attributes"] == {
        "amount_refunded": 0,
        "refunded": False,
    }
