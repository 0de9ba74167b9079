"""PayPalProvider against the PayPal emulator over loopback HTTP, and through the engine into the database."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
import sqlalchemy as sa

from esm_dagster.auth import ClientCredentialsGrant, MemoryTokenStore, OAuth2Auth, TokenEndpoint
from esm_dagster.catalog.db import get_engine
from esm_dagster.providers.base import ProviderError
from esm_dagster.providers.paypal import PayPalProvider, parse_rfc3339
from esm_dagster.sandbox.paypal import PayPalEmulator
from esm_dagster.sandbox.paypal.data import DEFAULT_END, DEFAULT_START
from esm_dagster.security.secret import Secret
from esm_dagster.sync.engine import run_mapping
from esm_dagster.transport import TransportPolicy
from esm_dagster_tests.oauth_fixtures import (
    PP_CLIENT_ID,
    PP_CLIENT_SECRET,
    add_mapping,
    paypal_mapping,
    stored_credentials,
)

START, END = DEFAULT_START, DEFAULT_END


@pytest.fixture(scope="module")
def emulator() -> Iterator[PayPalEmulator]:
    with PayPalEmulator(clients={PP_CLIENT_ID: PP_CLIENT_SECRET}, transactions=120, seed=11) as emu:
        yield emu


@pytest.fixture(autouse=True)
def _no_leftover_faults(emulator: PayPalEmulator) -> Iterator[None]:
    emulator.faults.clear()
    yield
    emulator.faults.clear()


def provider(emulator: PayPalEmulator, *, secret: str = PP_CLIENT_SECRET, retries: int = 2) -> PayPalProvider:
    endpoint = TokenEndpoint(
        emulator.url + "/v1/oauth2/token", provider="paypal", basic=(Secret(PP_CLIENT_ID), Secret(secret))
    )
    auth = OAuth2Auth(ClientCredentialsGrant(), endpoint, MemoryTokenStore({}))
    policy = TransportPolicy(retries, 5.0, base_delay=0.01, max_delay=2.0)
    return PayPalProvider(emulator.url, auth=auth, policy=policy, secrets=(Secret(secret),))


def initiated(record: dict) -> float:
    return parse_rfc3339(record["transaction_info"]["transaction_initiation_date"])


def ids(pages) -> list[str]:
    return [r["transaction_info"]["transaction_id"] for p in pages for r in p.records]


def expected_ids(emulator: PayPalEmulator, start: float, end: float) -> list[str]:
    chosen = [t for t in emulator.transactions if start <= initiated(t) < end]
    chosen.sort(
        key=lambda t: (
            t["transaction_info"]["transaction_initiation_date"],
            t["transaction_info"]["transaction_id"],
        )
    )
    return [t["transaction_info"]["transaction_id"] for t in chosen]


def test_pages_across_chunks_and_pages_read_every_transaction_once(emulator: PayPalEmulator) -> None:
    with provider(emulator) as client:
        pages = list(client.iter_pages("transactions", window_start=START, window_end=END, page_size=25))
    assert len(pages) >= 4 and all(p.has_more for p in pages[:-1]) and not pages[-1].has_more
    got = ids(pages)
    assert len(got) == len(set(got)) == 120
    # 31-day chunks, each oldest first: the concatenation is the emulator's order within each chunk.
    assert sorted(got) == sorted(expected_ids(emulator, START, END))


def test_window_is_start_inclusive_end_exclusive(emulator: PayPalEmulator) -> None:
    moments = sorted(initiated(t) for t in emulator.transactions)
    start, end = int(moments[10]), int(moments[50])
    with provider(emulator) as client:
        got = ids(client.iter_pages("transactions", window_start=start, window_end=end, page_size=500))
    assert got == expected_ids(emulator, start, end)
    assert len(got) == 40


def test_resume_from_a_cursor_continues_after_that_page(emulator: PayPalEmulator) -> None:
    with provider(emulator) as client:
        pages = list(client.iter_pages("transactions", window_start=START, window_end=END, page_size=25))
        resumed = list(
            client.iter_pages(
                "transactions", window_start=START, window_end=END, page_size=25, cursor=pages[1].next_cursor
            )
        )
    assert ids(resumed) == ids(pages[2:])


def test_a_page_served_twice_stops_the_stream(emulator: PayPalEmulator) -> None:
    emulator.faults.duplicate_next(1, items=25)  # page 2 comes back as page 1: `page` ignored
    with provider(emulator) as client, pytest.raises(ProviderError) as info:
        list(client.iter_pages("transactions", window_start=START, window_end=END, page_size=25))
    assert info.value.code == "repeated_cursor" and not info.value.retryable


def test_order_create_is_idempotent_by_paypal_request_id_and_reads_back(emulator: PayPalEmulator) -> None:
    record = {"currency_code": "USD", "value": "25.50", "custom_id": "booking-881", "invoice_id": "INV-881"}
    before = len(emulator.orders)
    with provider(emulator) as client:
        emulator.faults.lose_response_next(1, path="/v2/checkout/orders")
        [first] = client.write(
            "orders", [record], idempotency_keys=["esm-order-881"]
        )  # retried after the loss
        [again] = client.write("orders", [record], idempotency_keys=["esm-order-881"])
        fetched = client.get_order(first["id"])
    assert len(emulator.orders) == before + 1
    assert first["id"] == again["id"] == fetched["id"]
    assert fetched["status"] == "CREATED"
    assert fetched["purchase_units"][0]["amount"] == {"currency_code": "USD", "value": "25.50"}
    assert fetched["purchase_units"][0]["custom_id"] == "booking-881"


def test_captured_order_appears_in_the_transaction_stream(emulator: PayPalEmulator) -> None:
    with provider(emulator) as client:
        [order] = client.write(
            "orders",
            [{"currency_code": "EUR", "value": "9.99", "custom_id": "m-42"}],
            idempotency_keys=["esm-42"],
        )
        emulator.approve(order["id"])
        client.request("POST", f"/v2/checkout/orders/{order['id']}/capture", json={}, ok=(201,))
        now = int(time.time())
        records = [
            r
            for p in client.iter_pages("transactions", window_start=now - 3600, window_end=now + 5)
            for r in p.records
        ]
    assert [r["transaction_info"]["custom_id"] for r in records] == ["m-42"]
    assert records[0]["transaction_info"]["transaction_amount"] == {"currency_code": "EUR", "value": "9.99"}


def test_validation_error_names_field_and_issue(emulator: PayPalEmulator) -> None:
    with provider(emulator) as client, pytest.raises(ProviderError) as info:
        client.write("orders", [{"currency_code": "JPY", "value": "100.50"}], idempotency_keys=["esm-jpy"])
    error = info.value
    assert (error.error_class, error.status, error.code, error.retryable) == (
        "validation",
        422,
        "UNPROCESSABLE_ENTITY",
        False,
    )
    assert "DECIMAL_PRECISION" in str(error) and "/amount/value" in str(error)


def test_wrong_client_secret_is_auth_and_never_printed(emulator: PayPalEmulator) -> None:
    wrong = "EPwrong-secret-Zz9Qq8Ww7"
    with provider(emulator, secret=wrong) as client, pytest.raises(ProviderError) as info:
        client.probe()
    error = info.value
    assert (error.error_class, error.code, error.retryable, error.status) == (
        "auth",
        "invalid_client",
        False,
        401,
    )
    for text in (str(error), repr(error), repr(client)):
        assert wrong not in text and PP_CLIENT_SECRET not in text


def test_expired_token_is_renewed_once_on_401(emulator: PayPalEmulator) -> None:
    with provider(emulator) as client:
        client.probe()
        issued = emulator.oauth.tokens_issued
        emulator.faults.expire_credentials_after(0, client.oauth.token().access_token.reveal())
        client.probe()
    assert emulator.oauth.tokens_issued == issued + 1


def test_token_is_renewed_before_it_expires(emulator: PayPalEmulator) -> None:
    # Thirty seconds left: inside the renewal margin, so no request is sent with it.
    expiring = emulator.oauth.issue_access_token(PP_CLIENT_ID, lifetime=30)
    store = MemoryTokenStore({"access_token": expiring, "expires_at": str(int(time.time()) + 30)})
    endpoint = TokenEndpoint(
        emulator.url + "/v1/oauth2/token",
        provider="paypal",
        basic=(Secret(PP_CLIENT_ID), Secret(PP_CLIENT_SECRET)),
    )
    auth = OAuth2Auth(ClientCredentialsGrant(), endpoint, store)
    issued, before = emulator.oauth.tokens_issued, emulator.request_count
    with PayPalProvider(emulator.url, auth=auth, policy=TransportPolicy(0, 5.0)) as client:
        client.probe()
        assert client.oauth.token().access_token.reveal() != expiring
    assert emulator.oauth.tokens_issued == issued + 1 and store.refreshes == 1
    assert emulator.request_count == before + 2  # one token request, one API request, no 401


def test_429_retry_after_is_honoured(emulator: PayPalEmulator) -> None:
    emulator.faults.rate_limit_next(1, retry_after=1, path="/v1/reporting")
    with provider(emulator) as client:
        started = time.monotonic()
        client.probe()
        elapsed = time.monotonic() - started
        metrics = client.metrics
    assert elapsed >= 1.0 and metrics.rate_limit_waits == 1


def test_5xx_is_retried_then_fails_classified(emulator: PayPalEmulator) -> None:
    emulator.faults.fail_next(1, 500, path="/v1/reporting")
    with provider(emulator) as client:
        client.probe()
        assert client.metrics.retries == 1
        emulator.faults.fail_next(3, 503, path="/v1/reporting")
        with pytest.raises(ProviderError) as info:
            client.probe()
    assert (info.value.error_class, info.value.code, info.value.retryable) == (
        "server",
        "SERVICE_UNAVAILABLE",
        True,
    )


def test_concurrent_requests_share_one_client_credentials_token(emulator: PayPalEmulator) -> None:
    issued = emulator.oauth.tokens_issued
    with provider(emulator) as client:
        threads = [threading.Thread(target=client.probe) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert emulator.oauth.tokens_issued == issued + 1


def test_engine_syncs_transactions_exactly_and_twice_without_duplicates(
    db_url: str, fernet_key: str, emulator: PayPalEmulator
) -> None:
    mapping = add_mapping(db_url, paypal_mapping(emulator.url))
    first = run_mapping(db_url, mapping, since=None, window=(START, END))
    assert first.status == "success" and first.records_read == 120
    assert first.records_rejected > 0  # the seed's broken payer e-mails
    source = {
        t["transaction_info"]["transaction_id"]: t
        for t in emulator.transactions
        if START <= initiated(t) < END
    }
    with get_engine(db_url).connect() as conn:
        rows = conn.execute(
            sa.text("select esm_external_id, amount, currency, status, paid_at, billing_email from payment")
        ).all()
    assert len(rows) == first.records_written
    for external_id, amount, currency, status, paid_at, email in rows:
        info = source[external_id]["transaction_info"]
        assert Decimal(str(amount)) == Decimal(info["transaction_amount"]["value"])
        assert currency == info["transaction_amount"]["currency_code"] and status == "S"
        assert email == source[external_id]["payer_info"]["email_address"]
        assert paid_at is not None
    again = run_mapping(db_url, mapping, window=(START, END))
    assert again.records_read == 120
    with get_engine(db_url).connect() as conn:
        assert conn.execute(sa.text("select count(*) from payment")).scalar_one() == len(rows)
    stored = stored_credentials(db_url, mapping)
    assert emulator.oauth.authenticate(stored["access_token"].reveal()) is not None  # reused, not re-fetched
    assert float(stored["expires_at"].reveal()) > time.time() + 3600


@pytest.mark.parametrize(("lookback", "found"), [(10800, True), (300, False)])
def test_late_transactions_need_a_lookback_of_hours(
    db_url: str, fernet_key: str, lookback: int, found: bool
) -> None:
    with PayPalEmulator(clients={PP_CLIENT_ID: PP_CLIENT_SECRET}, transactions=30, seed=4) as emu:
        raw = paypal_mapping(emu.url)
        raw["mapping_rules"]["sync_config"]["lookback_seconds"] = lookback
        mapping = add_mapping(db_url, raw)
        first = run_mapping(db_url, mapping)
        assert first.records_read == 30
        late = emu.add_late_transaction(backdate=2 * 3600)  # listed now, initiated two hours ago
        second = run_mapping(db_url, mapping)
        with get_engine(db_url).connect() as conn:
            loaded = {r[0] for r in conn.execute(sa.text("select esm_external_id from payment")).all()}
    assert (late in loaded) is found
    assert second.records_read == (1 if found else 0)
