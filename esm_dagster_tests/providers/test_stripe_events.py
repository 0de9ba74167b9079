"""The Stripe events feed (`latest_event`, `events_after`, the `events` stream) over loopback HTTP."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from urllib.parse import parse_qs

import pytest

from esm_dagster.providers.base import Page, Provider, ProviderError
from esm_dagster.providers.stripe import StripeProvider
from esm_dagster.sandbox.stripe import StripeEmulator
from esm_dagster.security.secret import Secret

KEY = "sk_test_51EventsTestKey000000000000000000002468"
WRONG_KEY = "sk_test_51NotTheEventsKey00000000000000001357"


@pytest.fixture
def emulator() -> Iterator[StripeEmulator]:
    """Writable, with a clock after the seeded data: new events are the newest."""
    clock = itertools.count(1_800_000_000)
    with StripeEmulator(api_keys=[KEY], customers=30, charges=60, seed=17, clock=lambda: next(clock)) as em:
        yield em


@pytest.fixture
def provider(emulator: StripeEmulator) -> Iterator[StripeProvider]:
    with StripeProvider(emulator.url, Secret(KEY), retry_attempts=0, timeout_seconds=5) as p:
        yield p


def _event(emulator: StripeEmulator, event_id: str) -> dict[str, object]:
    event = emulator.get_object("events", event_id)
    assert event is not None
    return event


def test_latest_event_is_the_newest_with_one_call(emulator: StripeEmulator, provider: StripeProvider) -> None:
    newest = emulator.object_ids("events")[0]
    emulator.reset_request_log()
    assert provider.latest_event() == (newest, _event(emulator, newest)["created"])
    assert [(r.method, r.path, parse_qs(r.query)) for r in emulator.requests] == [
        ("GET", "/v1/events", {"limit": ["1"]})
    ]


def test_latest_event_changes_after_add_customer(emulator: StripeEmulator, provider: StripeProvider) -> None:
    before = provider.latest_event()
    assert before is not None
    assert provider.events_after(before[0]) == []
    customer = emulator.add_customer(email="new.member@example.com", name="New Member")
    after = provider.latest_event()
    assert after is not None and after != before and after[1] >= before[1]
    event = _event(emulator, after[0])
    assert event["type"] == "customer.created"
    assert event["data"] == {"object": customer}
    assert provider.events_after(before[0]) == [after[0]]

    emulator.update_customer(customer["id"], phone="+66812345678")
    emulator.add_charge(amount=150_000, currency="thb", customer=customer["id"])
    newer = provider.events_after(after[0])
    assert [_event(emulator, e)["type"] for e in newer] == ["charge.succeeded", "customer.updated"]
    assert provider.latest_event() == (newer[0], _event(emulator, newer[0])["created"])


def test_events_after_pages_with_ending_before(emulator: StripeEmulator, provider: StripeProvider) -> None:
    start = provider.latest_event()
    assert start is not None
    for i in range(230):
        emulator.add_customer(email=f"bulk{i}@example.com")
    emulator.reset_request_log()
    newer = provider.events_after(start[0])
    assert newer == emulator.object_ids("events")[:230]  # every new event once, newest first
    cursors = [parse_qs(r.query)["ending_before"][0] for r in emulator.requests]
    assert len(cursors) == 3 and cursors[0] == start[0]
    assert cursors[1:] == [newer[130], newer[30]]  # the newest id of each page read so far
    assert all(parse_qs(r.query)["limit"] == ["100"] for r in emulator.requests)


def test_type_filters(emulator: StripeEmulator, provider: StripeProvider) -> None:
    charge_before = provider.latest_event(["charge.succeeded"])
    assert charge_before is not None
    assert _event(emulator, charge_before[0])["type"] == "charge.succeeded"
    customer = emulator.add_customer(email="typed@example.com")
    assert provider.latest_event(["charge.succeeded"]) == charge_before  # a customer event does not count
    assert provider.latest_event(["customer.*"]) == provider.latest_event()
    emulator.add_charge(amount=500, currency="usd", customer=customer["id"], status="failed")
    emulator.add_charge(amount=900, currency="jpy")
    both = provider.events_after(charge_before[0], ["charge.succeeded", "charge.failed"])
    assert [_event(emulator, e)["type"] for e in both] == ["charge.succeeded", "charge.failed"]
    sent = parse_qs(emulator.requests[-1].query)
    assert sent["types[]"] == ["charge.succeeded", "charge.failed"] and "type" not in sent
    for bad in ([], ["charge.*", "customer.created"], [f"t{i}" for i in range(21)], [""]):
        with pytest.raises(ValueError):
            provider.latest_event(bad)


def test_events_stream_reads_every_event_once(emulator: StripeEmulator, provider: StripeProvider) -> None:
    emulator.add_customer(email="stream@example.com")
    pages = list(provider.iter_pages("events", page_size=25))
    assert [e["id"] for p in pages for e in p.records] == emulator.object_ids("events")
    assert all(e["object"] == "event" for p in pages for e in p.records)
    spec = provider.stream("events")
    assert spec.cursor_field == "created" and spec.supports_created_window
    window = [e for p in provider.iter_pages("events", window_start=1_800_000_000) for e in p.records]
    assert [e["data"]["object"]["email"] for e in window] == ["stream@example.com"]


def test_unknown_or_expired_event_is_a_client_error(provider: StripeProvider) -> None:
    with pytest.raises(ProviderError) as caught:
        provider.events_after("evt_gone_after_thirty_days")
    error = caught.value
    assert (error.error_class, error.status, error.code, error.retryable) == (
        "client",
        404,
        "resource_missing",
        False,
    )
    with pytest.raises(ValueError):
        provider.events_after("")


def test_wrong_key_is_an_auth_error(emulator: StripeEmulator) -> None:
    with StripeProvider(emulator.url, Secret(WRONG_KEY)) as wrong:
        for call in (wrong.latest_event, lambda: wrong.events_after(emulator.object_ids("events")[0])):
            with pytest.raises(ProviderError) as caught:
                call()
            assert (caught.value.error_class, caught.value.status) == ("auth", 401)
            assert WRONG_KEY not in str(caught.value)
        assert wrong.metrics.retries == 0  # auth errors are not retried


def test_empty_event_log() -> None:
    with (
        StripeEmulator(api_keys=[KEY], customers=0, charges=0) as em,
        StripeProvider(em.url, Secret(KEY)) as provider,
    ):
        assert provider.latest_event() is None
        em.add_customer(email="first@example.com")
        latest = provider.latest_event()
        assert latest is not None and latest[0] == em.object_ids("events")[0]


def test_providers_without_events() -> None:
    class Plain(Provider):
        name = "plain"

        def iter_pages(self, stream: str, **kwargs: object) -> Iterator[Page]:
            return iter(())

        def probe(self) -> float:
            return 0.0

    plain = Plain()
    assert not plain.supports_events and StripeProvider.supports_events
    types: Sequence[str] = ["x"]
    assert plain.latest_event() is None and plain.latest_event(types) is None
    with pytest.raises(ProviderError) as caught:
        plain.events_after("evt_1")
    assert (caught.value.error_class, caught.value.retryable) == ("client", False)
