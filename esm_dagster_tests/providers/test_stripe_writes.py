"""StripeProvider writes against the emulator: an answer lost after the write committed is retried
with the same idempotency key and returns the original object, never a second one."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from esm_dagster.providers.stripe import StripeProvider
from esm_dagster.sandbox.stripe import StripeEmulator
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy

KEY = "sk_test_51WriteTestKey000000000000000000005678"
FORM = {"email": "new.member@example.com", "name": "New Member", "metadata[member_no]": "M-1042"}


@pytest.fixture
def emulator() -> Iterator[StripeEmulator]:
    with StripeEmulator(api_keys=[KEY], customers=10, charges=10, seed=17) as em:
        yield em


def _provider(emulator: StripeEmulator, timeout_seconds: float = 5.0) -> StripeProvider:
    policy = TransportPolicy(3, timeout_seconds, base_delay=0.01, max_delay=2.0)
    return StripeProvider(emulator.url, Secret(KEY), policy=policy)


def _created_events(emulator: StripeEmulator) -> list[str]:
    with httpx.Client(base_url=emulator.url, headers={"Authorization": f"Bearer {KEY}"}) as c:
        events = c.get("/v1/events", params={"type": "customer.created", "limit": 100}).json()["data"]
    return [e["data"]["object"]["id"] for e in events]


def test_lost_answer_after_commit_returns_the_original_customer(emulator: StripeEmulator) -> None:
    before = emulator.count("customers")
    emulator.faults.lose_response_next(1, path="/v1/customers")
    with _provider(emulator) as provider:
        created = provider.create_customer(FORM, idempotency_key="esm:member:M-1042:v1")
        metrics = provider.metrics
    assert emulator.faults.pending == 0  # the fault was served: the first answer really was lost
    assert metrics.retries == 1 and metrics.errors_by_class == {"network": 1}
    assert emulator.count("customers") == before + 1
    assert created["id"] == emulator.object_ids("customers")[0]
    assert created == emulator.get_object("customers", created["id"])
    assert created["metadata"] == {"member_no": "M-1042"}
    assert _created_events(emulator).count(created["id"]) == 1


def test_timed_out_post_retried_with_its_key_is_written_once(emulator: StripeEmulator) -> None:
    """The first attempt is still running when the retry lands: both resolve to one customer."""
    before = emulator.count("customers")
    emulator.faults.delay_next(1, seconds=1.2, path="/v1/customers")
    started = time.monotonic()
    with _provider(emulator, timeout_seconds=0.4) as provider:
        created = provider.create_customer(FORM, idempotency_key="esm:member:M-1042:v1")
        assert provider.metrics.errors_by_class == {"timeout": 1}
    time.sleep(max(0.0, 1.5 - (time.monotonic() - started)))  # the first attempt has run by now
    assert emulator.count("customers") == before + 1
    assert created["id"] == emulator.object_ids("customers")[0]


def test_other_fields_under_the_same_key_are_refused(emulator: StripeEmulator) -> None:
    from esm_dagster.providers.base import ProviderError

    with _provider(emulator) as provider:
        provider.create_customer(FORM, idempotency_key="esm:member:M-1042:v1")
        with pytest.raises(ProviderError) as caught:
            provider.create_customer({**FORM, "name": "Someone Else"}, idempotency_key="esm:member:M-1042:v1")
    assert (caught.value.status, caught.value.error_class, caught.value.method) == (400, "validation", "POST")
    assert KEY not in str(caught.value)


@pytest.mark.parametrize("key", ["", "k" * 256, None])
def test_a_write_needs_an_idempotency_key(emulator: StripeEmulator, key: object) -> None:
    with _provider(emulator) as provider, pytest.raises(ValueError, match="idempotency_key"):
        provider.create_customer(FORM, idempotency_key=key)  # type: ignore[arg-type]
    assert emulator.request_count == 0
