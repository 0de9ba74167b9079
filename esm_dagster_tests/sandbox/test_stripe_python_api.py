"""The emulator's Python API (add_customer, update_customer, delete_customer, add_charge) and the
events it appends, read back over loopback HTTP with the list conventions of GET /v1/events."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest

from esm_dagster.sandbox.stripe import StripeEmulator
from esm_dagster.sandbox.stripe import data as stripe_data
from esm_dagster_tests.sandbox.stripe_helpers import KEY, fetch_all

START = 1_800_000_000


@pytest.fixture
def em() -> Iterator[StripeEmulator]:
    clock = itertools.count(START)
    with StripeEmulator(api_keys=[KEY], customers=10, charges=20, seed=8, clock=lambda: next(clock)) as e:
        yield e


@pytest.fixture
def http(em: StripeEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=em.url, headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


def test_seeded_records_have_their_events(em: StripeEmulator, http: httpx.Client) -> None:
    events = fetch_all(http, "/v1/events", limit=100)
    assert len(events) == 30
    assert {e["data"]["object"]["id"] for e in events} == set(em.object_ids("customers")) | set(
        em.object_ids("charges")
    )
    assert all(e["created"] == e["data"]["object"]["created"] for e in events)


def test_add_customer_is_served_and_logged(em: StripeEmulator, http: httpx.Client) -> None:
    customer = em.add_customer(
        email="kanya+club@example.org", name="Kanya", metadata={"member_no": "M42"}, preferred_locales=["th"]
    )
    assert list(customer) == list(stripe_data.fixture_resources()["customer"])
    assert http.get(f"/v1/customers/{customer['id']}").json() == customer
    assert http.get("/v1/customers", params={"limit": 1}).json()["data"] == [customer]
    event = http.get("/v1/events", params={"limit": 1}).json()["data"][0]
    assert event["type"] == "customer.created" and event["data"] == {"object": customer}
    assert event["id"].startswith("evt_") and event["created"] == customer["created"] == START
    assert set(event) == {
        "api_version",
        "created",
        "data",
        "id",
        "livemode",
        "object",
        "pending_webhooks",
        "request",
        "type",
    }
    assert http.get(f"/v1/events/{event['id']}").json() == event


def test_update_and_delete_append_events(em: StripeEmulator, http: httpx.Client) -> None:
    customer = em.add_customer(email="a@example.com", phone="+66 81 000 0000")
    updated = em.update_customer(customer["id"], phone=None, balance=-500)
    assert updated["phone"] is None and updated["balance"] == -500
    em.update_customer(customer["id"], phone=None)  # no change: no event
    em.delete_customer(customer["id"])
    types = [e["type"] for e in http.get("/v1/events", params={"limit": 3}).json()["data"]]
    assert types == ["customer.deleted", "customer.updated", "customer.created"]
    with pytest.raises(KeyError):
        em.update_customer(customer["id"], name="gone")
    with pytest.raises(KeyError):
        em.delete_customer(customer["id"])


def test_add_charge(em: StripeEmulator, http: httpx.Client) -> None:
    owner = em.add_customer(email="owner@example.com", name="Owner")
    charge = em.add_charge(amount=1_000, currency="jpy", customer=owner["id"], metadata={"order_id": "X1"})
    assert (charge["amount"], charge["currency"], charge["status"], charge["customer"]) == (
        1000,
        "jpy",
        "succeeded",
        owner["id"],
    )
    assert charge["billing_details"]["email"] == "owner@example.com" and charge["metadata"] == {
        "order_id": "X1"
    }
    assert http.get(f"/v1/charges/{charge['id']}").json() == charge
    assert http.get("/v1/charges", params={"customer": owner["id"]}).json()["data"] == [charge]
    failed = em.add_charge(amount=5, currency="usd", status="failed", created=START - 10)
    assert failed["paid"] is False and failed["failure_code"] and failed["created"] == START - 10
    found = http.get("/v1/events", params={"type": "charge.failed", "created[gte]": START - 10}).json()
    assert [e["data"]["object"]["id"] for e in found["data"]] == [failed["id"]]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"amount": 0},
        {"amount": 1.5},
        {"amount": True},
        {"amount": 100, "currency": "THB"},
        {"amount": 100, "status": "refunded"},
    ],
)
def test_add_charge_rejects_bad_values(em: StripeEmulator, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        em.add_charge(**kwargs)  # type: ignore[arg-type]


def test_python_api_validates_like_the_http_api(em: StripeEmulator) -> None:
    with pytest.raises(ValueError, match="unknown parameter: nickname"):
        em.add_customer(nickname="x")
    with pytest.raises(ValueError, match="tax_exempt"):
        em.add_customer(tax_exempt="sometimes")
    with pytest.raises(KeyError):
        em.add_charge(amount=100, customer="cus_nobody")
    assert em.count("events") == 30  # nothing half-written


def test_events_list_paging_filters_and_auth(em: StripeEmulator, http: httpx.Client) -> None:
    first = http.get("/v1/events", params={"limit": 1}).json()["data"][0]["id"]
    made = [em.add_customer(email=f"p{i}@example.com")["id"] for i in range(25)]
    newer = http.get("/v1/events", params={"ending_before": first, "limit": 10}).json()
    assert newer["has_more"] is True and len(newer["data"]) == 10
    assert [e["data"]["object"]["id"] for e in newer["data"]] == made[:10][::-1]
    every = fetch_all(http, "/v1/events", limit=7, **{"created[gte]": START})
    assert [e["data"]["object"]["id"] for e in every] == made[::-1]
    both = http.get("/v1/events", params={"type": "customer.created", "types[]": ["charge.failed"]})
    assert both.status_code == 400 and both.json()["error"]["param"] == "types"
    unauthorised = httpx.get(f"{em.url}/v1/events", headers={"Authorization": "Bearer sk_test_nope000000000"})
    assert unauthorised.status_code == 401 and unauthorised.json()["error"]["type"] == "invalid_request_error"
    assert "sk_test_nope" not in unauthorised.text
