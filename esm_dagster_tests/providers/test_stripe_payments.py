"""Stripe's payment_intents and refunds streams and the customer writes, over real HTTP to the emulator,
and the refunds stream through the engine into SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from esm_dagster.providers.base import ProviderError
from esm_dagster.providers.stripe import StripeProvider
from esm_dagster.sandbox.stripe import DEFAULT_START, StripeEmulator
from esm_dagster.security.secret import Secret
from esm_dagster.sync.engine import run_mapping
from esm_dagster.transport import TransportPolicy
from esm_dagster_tests.providers.engine_helpers import as_utc, register_mapping, table_rows

KEY = "sk_test_51PaymentsTestKey00000000000000000004321"
EXPONENT = {"jpy": 0, "usd": 2, "thb": 2, "kwd": 3}


@pytest.fixture(scope="module")
def emulator() -> Iterator[StripeEmulator]:
    with StripeEmulator(api_keys=[KEY], customers=40, charges=400, seed=11) as em:
        yield em


def _provider(emulator: StripeEmulator, key: str = KEY, attempts: int = 3) -> StripeProvider:
    policy = TransportPolicy(attempts, 5.0, base_delay=0.01, max_delay=2.0)
    return StripeProvider(emulator.url, Secret(key), policy=policy)


def _ids(provider: StripeProvider, stream: str, **kwargs: object) -> list[str]:
    return [r["id"] for page in provider.iter_pages(stream, **kwargs) for r in page.records]  # type: ignore[arg-type]


@pytest.mark.parametrize("stream", ["payment_intents", "refunds"])
def test_pages_resume_and_window(emulator: StripeEmulator, stream: str) -> None:
    expected = emulator.object_ids(stream)
    assert len(expected) > 10
    with _provider(emulator) as provider:
        pages = list(provider.iter_pages(stream, page_size=7))
        assert len(pages) == -(-len(expected) // 7)
        assert [r["id"] for p in pages for r in p.records] == expected
        assert [p.has_more for p in pages] == [True] * (len(pages) - 1) + [False]
        # a run killed after the second page resumes after its cursor and reads the rest, once
        resumed = _ids(provider, stream, page_size=7, cursor=pages[1].next_cursor)
        assert resumed == expected[14:]
        start, end = DEFAULT_START + 20 * 86_400, DEFAULT_START + 60 * 86_400
        windowed = list(provider.iter_pages(stream, window_start=start, window_end=end, page_size=5))
    records = [r for p in windowed for r in p.records]
    everything = [emulator.get_object(stream, i) for i in expected]
    assert [r["id"] for r in records] == [o["id"] for o in everything if o and start <= o["created"] < end]
    assert records and all(start <= r["created"] < end for r in records)
    assert any("created%5Bgte%5D" in q for _, _, q in emulator.requests)  # the window went to Stripe


def test_refunds_and_intents_point_at_the_charges(emulator: StripeEmulator) -> None:
    with _provider(emulator) as provider:
        refunds = [r for p in provider.iter_pages("refunds") for r in p.records]
        intents = {r["id"]: r for p in provider.iter_pages("payment_intents") for r in p.records}
    for refund in refunds:
        charge = emulator.get_object("charges", refund["charge"])
        assert charge is not None and charge["status"] == "succeeded"
        assert charge["payment_intent"] == refund["payment_intent"]
        intent = intents[refund["payment_intent"]]
        assert intent["latest_charge"] == charge["id"] and intent["customer"] == charge["customer"]
        assert intent["status"] == "succeeded" and 0 < refund["amount"] <= charge["amount"]
    statuses = {i["status"] for i in intents.values()}
    assert statuses == {"succeeded", "requires_payment_method", "processing"}
    failed = [i for i in intents.values() if i["status"] == "requires_payment_method"]
    assert all(i["last_payment_error"]["type"] == "card_error" for i in failed)


def test_a_repeated_cursor_is_refused(emulator: StripeEmulator) -> None:
    """A page that repeats the page before (a duplicate fault of a whole page) ends on the same
    cursor again: the guard stops instead of looping."""
    emulator.faults.duplicate_next(1, items=3, path="/v1/refunds")
    with _provider(emulator) as provider, pytest.raises(ProviderError) as caught:
        list(provider.iter_pages("refunds", page_size=3))
    assert caught.value.code == "repeated_cursor" and caught.value.retryable is False


def test_create_then_update_then_read_back(emulator: StripeEmulator) -> None:
    record = {"email": "ploy@example.co.th", "name": "Ploy", "metadata": {"member_no": "M900001"}}
    with _provider(emulator) as provider:
        [created] = provider.write("create_customer", [record], idempotency_keys=["esm:create:M900001:v1"])
        [again] = provider.write("create_customer", [record], idempotency_keys=["esm:create:M900001:v1"])
        assert again == created  # the same key: Stripe's replay, not a second customer
        change = {"id": created["id"], "phone": "+66 81 234 5678", "metadata": {"tier": "gold"}}
        emulator.faults.lose_response_next(1, path=f"/v1/customers/{created['id']}")
        [updated] = provider.write("update_customer", [change], idempotency_keys=["esm:update:M900001:v2"])
        assert provider.metrics.errors_by_class == {"network": 1}
        newest = next(iter(provider.iter_pages("customers", page_size=1))).records[0]
    assert [c for c in emulator.object_ids("customers") if c == created["id"]] == [created["id"]]
    assert newest["id"] == created["id"]
    assert newest == updated == emulator.get_object("customers", created["id"])
    assert updated["phone"] == "+66 81 234 5678"
    assert updated["metadata"] == {"member_no": "M900001", "tier": "gold"}
    with httpx.Client(base_url=emulator.url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        events = http.get("/v1/events", params={"limit": 10, "type": "customer.*"}).json()["data"]
    ours = [e["type"] for e in events if e["data"]["object"]["id"] == created["id"]]
    assert ours == ["customer.updated", "customer.created"]  # the lost answer was replayed, not redone


def test_write_contract_errors(emulator: StripeEmulator) -> None:
    with _provider(emulator) as provider:
        assert {s.name: s.idempotency for s in provider.WRITES} == {
            "create_customer": "key",
            "update_customer": "key",
        }
        with pytest.raises(ValueError, match="id"):
            provider.write("update_customer", [{"email": "x@example.com"}], idempotency_keys=["k1"])
        with pytest.raises(ValueError, match="no write"):
            provider.write("delete_everything", [{}], idempotency_keys=["k"])
        with pytest.raises(ProviderError) as caught:
            provider.write("update_customer", [{"id": "cus_missing000"}], idempotency_keys=["k2"])
    assert (caught.value.status, caught.value.error_class, caught.value.code) == (
        404,
        "client",
        "resource_missing",
    )


def test_a_write_with_a_wrong_key_is_auth_and_never_shows_the_key(emulator: StripeEmulator) -> None:
    wrong = "sk_test_51WrongWriteKey99999999999999999999998888"
    with _provider(emulator, key=wrong) as provider, pytest.raises(ProviderError) as caught:
        provider.write("create_customer", [{"email": "a@example.com"}], idempotency_keys=["k-auth"])
    error = caught.value
    assert (error.error_class, error.retryable, error.status) == ("auth", False, 401)
    assert wrong not in str(error) and wrong not in repr(error)
    assert wrong[-20:] not in str(error)


def test_a_rate_limited_refunds_page_waits_retry_after(emulator: StripeEmulator) -> None:
    emulator.faults.rate_limit_next(1, retry_after=1, path="/v1/refunds")
    emulator.faults.fail_next(1, status=503, path="/v1/refunds")
    with _provider(emulator) as provider:
        ids = _ids(provider, "refunds")
        metrics = provider.metrics
    assert ids == emulator.object_ids("refunds")
    assert metrics.errors_by_class == {"rate_limit": 1, "server": 1}
    assert metrics.retries == 2 and metrics.rate_limit_wait_seconds >= 1.0


def _mapping(emulator: StripeEmulator) -> dict[str, object]:
    return {
        "system_name": "Stripe Refunds",
        "system_type": "payment_gateway",
        "provider_name": "stripe",
        "api_endpoint": emulator.url,
        "authentication_type": "api_key",
        "credentials": {"api_key": KEY},
        "retry_attempts": 2,
        "mapping_rules": {
            "field_mappings": {
                "amount": {
                    "target": "refund.amount",
                    "type": "money",
                    "currency_from": "currency",
                    "minor_units": "stripe",
                },
                "currency": "refund.currency",
                "charge": "refund.charge_external_id",
                "payment_intent": "refund.payment_intent_external_id",
                "status": "refund.status",
                "reason": "refund.reason",
                "created": {"target": "refund.refunded_at", "type": "timestamp", "unit": "s"},
            },
            "validation_rules": {"required_fields": ["amount", "currency", "charge", "created"]},
            "sync_config": {"stream": "refunds", "sync_direction": "inbound", "batch_size": 10},
        },
    }


def test_refunds_through_the_engine_into_the_database(db_url: str, fernet_key: str) -> None:
    with StripeEmulator(api_keys=[KEY], customers=30, charges=600, seed=5) as emulator:
        register_mapping(db_url, _mapping(emulator))
        first = run_mapping(db_url, "Stripe Refunds")
        source = {i: emulator.get_object("refunds", i) for i in emulator.object_ids("refunds")}
        assert first.status == "success" and first.records_read == len(source) > 20
        assert first.records_written == len(source) and first.pages > 1
        incremental = run_mapping(db_url, "Stripe Refunds")
        again = run_mapping(db_url, "Stripe Refunds", full_refresh=True)
    assert incremental.records_read == 0  # nothing created since the high-water mark
    assert again.records_read == len(source)
    columns = [
        "amount",
        "currency",
        "charge_external_id",
        "payment_intent_external_id",
        "status",
        "reason",
        "refunded_at",
    ]
    rows = table_rows(db_url, "refund", columns)
    assert set(rows) == set(source)  # the full refresh rewrote the same rows, no second copy
    for refund_id, row in rows.items():
        refund = source[refund_id]
        assert refund is not None
        assert Decimal(str(row["amount"])) == Decimal(refund["amount"]).scaleb(-EXPONENT[refund["currency"]])
        assert row["currency"].lower() == refund["currency"]
        assert (row["charge_external_id"], row["payment_intent_external_id"]) == (
            refund["charge"],
            refund["payment_intent"],
        )
        assert (row["status"], row["reason"]) == (refund["status"], refund["reason"])
        assert as_utc(row["refunded_at"]) == dt.datetime.fromtimestamp(refund["created"], dt.UTC)
