"""The Stripe emulator over real HTTP on loopback: paging, windows, auth, errors, state, faults."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import phonenumbers
import pytest

from esm_dagster.sandbox.stripe import (
    DEFAULT_API_VERSION,
    DEFAULT_END,
    DEFAULT_START,
    StripeEmulator,
    mask_key,
)
from esm_dagster.sandbox.stripe import data as stripe_data
from esm_dagster.sandbox.stripe.forms import FormError, decode, encode
from esm_dagster.security.secret import Secret
from esm_dagster_tests.sandbox.stripe_helpers import CHARGES, CUSTOMERS, KEY, fetch_all, order_key

RESOURCES = {"customers": CUSTOMERS, "charges": CHARGES, "events": CUSTOMERS + CHARGES}


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


# ---- paging ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("resource", sorted(RESOURCES))
@pytest.mark.parametrize("limit", [100, 7])
def test_paging_visits_every_object_exactly_once_newest_first(
    emulator: StripeEmulator, client: httpx.Client, resource: str, limit: int
) -> None:
    objects = fetch_all(client, f"/v1/{resource}", limit=limit)
    ids = [o["id"] for o in objects]
    assert len(ids) == RESOURCES[resource] == len(set(ids))
    assert ids == emulator.object_ids(resource)
    keys = [order_key(o) for o in objects]
    assert keys == sorted(keys, reverse=True)  # created desc, then id desc: total and stable
    assert len({k[0] for k in keys}) < len(keys), "the seed should contain ties in created"


def test_default_limit_is_ten_and_url_is_the_list_path(client: httpx.Client) -> None:
    body = client.get("/v1/charges").json()
    assert body["object"] == "list" and body["url"] == "/v1/charges"
    assert len(body["data"]) == 10 and body["has_more"] is True


def test_ending_before_pages_backwards(emulator: StripeEmulator, client: httpx.Client) -> None:
    ids = emulator.object_ids("customers")
    seen: list[str] = []
    cursor = ids[-1]
    while True:  # walk from the oldest object back to the newest
        body = client.get("/v1/customers", params={"limit": 9, "ending_before": cursor}).json()
        page = [o["id"] for o in body["data"]]
        assert page == sorted(page, key=ids.index)  # each page is still newest first
        seen = page + seen
        if not body["has_more"]:
            break
        cursor = page[0]
    assert seen == ids[:-1]


def test_single_object_pages_step_through_created_ties(client: httpx.Client) -> None:
    everything = fetch_all(client, "/v1/charges", limit=100)
    tied = [i for i in range(1, len(everything)) if everything[i]["created"] == everything[i - 1]["created"]]
    assert len(tied) >= 5
    for i in tied[:5]:  # step one object at a time across each tie, starting just before it
        cursor = everything[i - 2]["id"]
        for expected in everything[i - 1 : i + 2]:
            body = client.get("/v1/charges", params={"limit": 1, "starting_after": cursor}).json()
            assert [o["id"] for o in body["data"]] == [expected["id"]]
            cursor = expected["id"]


# ---- windows --------------------------------------------------------------------------------------


def test_created_windows_partition_the_data(emulator: StripeEmulator, client: httpx.Client) -> None:
    everything = fetch_all(client, "/v1/charges", limit=100)
    tie = Counter(o["created"] for o in everything).most_common(1)[0][0]  # a boundary on a tie
    bounds = sorted(
        {DEFAULT_START, DEFAULT_START + 86_400 * 13, tie, tie + 1, DEFAULT_END - 3_600, DEFAULT_END}
    )
    seen: list[str] = []
    for lo, hi in itertools.pairwise(bounds):
        window = fetch_all(client, "/v1/charges", limit=100, **{"created[gte]": lo, "created[lt]": hi})
        assert all(lo <= o["created"] < hi for o in window)
        seen.extend(o["id"] for o in window)
    assert len(seen) == len(set(seen)) == len(everything)


def test_created_operators(emulator: StripeEmulator, client: httpx.Client) -> None:
    everything = fetch_all(client, "/v1/customers", limit=100)
    pivot = everything[len(everything) // 2]["created"]

    def count(**params: int | str) -> int:
        return len(fetch_all(client, "/v1/customers", limit=100, **params))

    assert count(**{"created[gt]": pivot}) == sum(o["created"] > pivot for o in everything)
    assert count(**{"created[gte]": pivot}) == sum(o["created"] >= pivot for o in everything)
    assert count(**{"created[lt]": pivot}) == sum(o["created"] < pivot for o in everything)
    assert count(**{"created[lte]": pivot}) == sum(o["created"] <= pivot for o in everything)
    assert count(created=pivot) == sum(o["created"] == pivot for o in everything) >= 1


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"created[gte]": "yesterday"}, "created[gte]"),
        ({"created": "1.5"}, "created"),
        ({"created[since]": "1"}, "created[since]"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_list_parameters_are_400_naming_the_param(
    client: httpx.Client, query: dict[str, str], param: str
) -> None:
    response = client.get("/v1/charges", params=query)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_limit_message_is_stripes(client: httpx.Client) -> None:
    error = client.get("/v1/customers", params={"limit": 500}).json()["error"]
    assert error["message"] == "Invalid limit: must be between 1 and 100"


@pytest.mark.parametrize("cursor", ["starting_after", "ending_before"])
def test_unknown_cursor_is_resource_missing(client: httpx.Client, cursor: str) -> None:
    response = client.get("/v1/charges", params={cursor: "ch_doesnotexist"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "resource_missing" and error["param"] == cursor
    assert error["message"] == "No such charge: 'ch_doesnotexist'"


def test_both_cursors_are_rejected(emulator: StripeEmulator, client: httpx.Client) -> None:
    some_id = emulator.object_ids("charges")[5]
    response = client.get("/v1/charges", params={"starting_after": some_id, "ending_before": some_id})
    assert response.status_code == 400


def test_list_filters(emulator: StripeEmulator, client: httpx.Client) -> None:
    charge = next(c for c in client.get("/v1/charges").json()["data"] if c["customer"])
    owned = fetch_all(client, "/v1/charges", limit=100, customer=charge["customer"])
    assert owned and all(c["customer"] == charge["customer"] for c in owned)
    failed = fetch_all(client, "/v1/events", limit=100, type="charge.failed")
    assert failed and all(e["type"] == "charge.failed" for e in failed)
    charge_events = fetch_all(client, "/v1/events", limit=100, type="charge.*")
    assert len(charge_events) == CHARGES


# ---- retrieval, routes, headers ----------------------------------------------------------------------


def test_retrieve_objects(emulator: StripeEmulator, client: httpx.Client) -> None:
    for resource in RESOURCES:
        object_id = emulator.object_ids(resource)[17]
        body = client.get(f"/v1/{resource}/{object_id}").json()
        assert body["id"] == object_id
        assert body == emulator.get_object(resource, object_id)
    missing = client.get("/v1/customers/cus_missing")
    assert missing.status_code == 404
    assert missing.json()["error"] | {"request_log_url": None} == {
        "code": "resource_missing",
        "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
        "message": "No such customer: 'cus_missing'",
        "param": "id",
        "request_log_url": None,
        "type": "invalid_request_error",
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/payouts"), ("GET", "/v2/customers"), ("PUT", "/v1/customers"), ("DELETE", "/v1/charges/x")],
)
def test_unknown_routes_are_404(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 404
    assert response.json()["error"]["message"].startswith(f"Unrecognized request URL ({method}: {path})")


def test_version_and_request_id_headers(client: httpx.Client) -> None:
    plain = client.get("/v1/customers", params={"limit": 1})
    assert plain.headers["Stripe-Version"] == DEFAULT_API_VERSION
    assert re.fullmatch(r"req_[A-Za-z0-9]{14}", plain.headers["Request-Id"])
    pinned = client.get("/v1/customers", params={"limit": 1}, headers={"Stripe-Version": "2024-06-20"})
    assert pinned.headers["Stripe-Version"] == "2024-06-20"
    bad = client.get("/v1/customers", headers={"Stripe-Version": "latest please"})
    assert bad.status_code == 400 and "Invalid Stripe API version" in bad.json()["error"]["message"]


# ---- auth -----------------------------------------------------------------------------------------


def test_missing_key_is_401(emulator: StripeEmulator) -> None:
    response = httpx.get(f"{emulator.url}/v1/charges")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("You did not provide an API key.")


@pytest.mark.parametrize(
    "wrong",
    ["sk_test_51WrongKey00000000000000000009876", "sk_live_zzzzzzzzzzzzzzzzzz4321", "not-a-key-at-all"],
)
def test_invalid_key_is_401_and_masked(emulator: StripeEmulator, wrong: str) -> None:
    response = httpx.get(f"{emulator.url}/v1/charges", headers={"Authorization": f"Bearer {wrong}"})
    assert response.status_code == 401
    message = response.json()["error"]["message"]
    assert message == f"Invalid API Key provided: {mask_key(wrong)}"
    assert wrong not in response.text and wrong[:-4] not in response.text
    assert wrong[-4:] in message  # Stripe shows the last four characters


def test_mask_key_shapes() -> None:
    assert mask_key("sk_test_abcdefgh1234") == "sk_test_********1234"
    assert mask_key("sk_test_short") == "sk_test_*****"
    assert mask_key("whatever-long-key-9876") == "******************9876"


def test_basic_auth_with_key_as_user(emulator: StripeEmulator) -> None:
    assert httpx.get(f"{emulator.url}/v1/charges", auth=(KEY, "")).status_code == 200
    assert httpx.get(f"{emulator.url}/v1/charges", auth=("sk_test_nope_nope_nope1", "")).status_code == 401
    garbage = httpx.get(f"{emulator.url}/v1/charges", headers={"Authorization": "Basic !!!"})
    assert garbage.status_code == 401


def test_several_keys_and_secret_keys_are_accepted() -> None:
    with StripeEmulator(
        api_keys=[Secret("sk_test_one_111111111"), "sk_test_two_22222222"], customers=3, charges=3
    ) as em:
        for key in ("sk_test_one_111111111", "sk_test_two_22222222"):
            assert (
                httpx.get(f"{em.url}/v1/charges", headers={"Authorization": f"Bearer {key}"}).status_code
                == 200
            )
    with pytest.raises(ValueError):
        StripeEmulator(api_keys=[])


def test_request_log_never_holds_the_key(emulator: StripeEmulator, client: httpx.Client) -> None:
    emulator.reset_request_log()
    client.get("/v1/customers", params={"limit": 3})
    client.get("/v1/customers", params={"api_key": KEY})  # a client that puts the key in the URL
    log = emulator.requests
    assert emulator.request_count == 2
    assert log[0] == ("GET", "/v1/customers", "limit=3")
    assert KEY not in repr(log) and log[1].query == "api_key=***"


# ---- determinism and data ---------------------------------------------------------------------------


def _all_bodies(em: StripeEmulator) -> list[bytes]:
    bodies = []
    with httpx.Client(base_url=em.url, headers=_auth()) as c:
        for resource in RESOURCES:
            query: dict[str, str | int] = {"limit": 100}
            while True:
                response = c.get(f"/v1/{resource}", params=query)
                bodies.append(response.content)
                body = response.json()
                if not body["has_more"]:
                    break
                query["starting_after"] = body["data"][-1]["id"]
    return bodies


def test_same_seed_same_bytes_other_seed_other_data() -> None:
    with StripeEmulator(api_keys=[KEY], customers=40, charges=150, seed=11) as a:
        first = _all_bodies(a)
    with StripeEmulator(api_keys=[KEY], customers=40, charges=150, seed=11) as b:
        assert _all_bodies(b) == first
    with StripeEmulator(api_keys=[KEY], customers=40, charges=150, seed=12) as c:
        assert _all_bodies(c) != first


def test_objects_keep_every_fixture_field_in_fixture_order(
    emulator: StripeEmulator, client: httpx.Client
) -> None:
    fixtures = stripe_data.fixture_resources()
    for resource, name in (("customers", "customer"), ("charges", "charge")):
        for obj in fetch_all(client, f"/v1/{resource}", limit=100):
            assert list(obj) == list(fixtures[name])
    charge = client.get("/v1/charges", params={"limit": 1}).json()["data"][0]
    card_keys = list(fixtures["charge"]["payment_method_details"]["card"])
    assert list(charge["payment_method_details"]["card"]) == card_keys


def test_fast_json_matches_json_dumps_of_the_objects() -> None:
    dataset = stripe_data.generate(customers=150, charges=600, seed=3, start=DEFAULT_START, end=DEFAULT_END)
    for row in dataset.customers:
        assert stripe_data.customer_json(row) == json.dumps(
            stripe_data.customer_object(row), ensure_ascii=False
        )
    for charge in dataset.charges:
        assert stripe_data.charge_json(charge) == json.dumps(
            stripe_data.charge_object(charge), ensure_ascii=False
        )
    for event in dataset.events[:300]:
        text = stripe_data.event_json(event, "2026-01-01")
        assert text == json.dumps(stripe_data.event_object(event, "2026-01-01"), ensure_ascii=False)


THAI_FORMATS = {
    "intl_spaced": re.compile(r"^\+66 \d{2} \d{3} \d{4}$"),
    "local_dashed": re.compile(r"^0\d{2}-\d{3}-\d{4}$"),
    "local_plain": re.compile(r"^0\d{9}$"),
    "e164": re.compile(r"^\+66\d{9}$"),
}


def test_seeded_data_is_varied_where_integrations_break(client: httpx.Client) -> None:
    customers = fetch_all(client, "/v1/customers", limit=100)
    charges = fetch_all(client, "/v1/charges", limit=100)
    emails = [c["email"] for c in customers]
    phones = [c["phone"] for c in customers]

    assert {"thb", "usd", "jpy", "kwd"} <= {c["currency"] for c in charges}
    assert {"succeeded", "pending", "failed"} == {c["status"] for c in charges}
    assert all(c["amount"] % 10 == 0 for c in charges if c["currency"] == "kwd")  # three-decimal rule
    assert any(e and re.search(r"\+[a-z0-9]+@", e) for e in emails)  # plus addressing
    assert any(e and any(ord(ch) > 127 for ch in e.split("@")[1]) for e in emails)  # IDN domains
    assert any(e and "ตัวอย่าง.ไทย" in e for e in emails) and any(e and "bücher.example" in e for e in emails)
    assert None in emails and None in phones and None in [c["name"] for c in customers]
    assert "not-an-email" in emails and "12345" in phones
    for name, pattern in THAI_FORMATS.items():
        assert any(p and pattern.match(p) for p in phones), name
    assert any(p and p.startswith("+44 ") for p in phones) and any(p and p.startswith("+1 ") for p in phones)
    for phone in phones:  # every phone that is not the deliberate reject is a valid number
        if phone not in (None, "12345"):
            assert phonenumbers.is_valid_number(phonenumbers.parse(phone, "TH")), phone
    invalid_share = emails.count("not-an-email") / len(emails)
    assert 0 < invalid_share <= 0.1

    by_id = {c["id"]: c for c in customers}
    owned = [c for c in charges if c["customer"] is not None]
    assert 0.9 * len(charges) < len(owned) < len(charges)  # a few guest charges
    for charge in owned:
        owner = by_id[charge["customer"]]
        assert owner["created"] <= charge["created"]
        assert charge["billing_details"]["email"] == owner["email"]
    assert {c["billing_details"]["address"]["city"] for c in charges} >= {"Bangkok", "กรุงเทพมหานคร", None}
    assert all(DEFAULT_START <= o["created"] < DEFAULT_END for o in customers + charges)
    assert all(re.fullmatch(r"cus_[A-Za-z0-9]{14}", c["id"]) for c in customers)
    assert all(re.fullmatch(r"ch_[A-Za-z0-9]{24}", c["id"]) for c in charges)


def test_generating_100k_charges_is_fast_and_lean() -> None:
    started = time.perf_counter()
    dataset = stripe_data.generate(
        customers=2000, charges=100_000, seed=1, start=DEFAULT_START, end=DEFAULT_END
    )
    elapsed = time.perf_counter() - started
    assert len(dataset.charges) == 100_000 and len(dataset.events) == 102_000
    assert elapsed < 5, f"generation took {elapsed:.2f} s"  # about 1 s on the 2-core dev box


# ---- writes ---------------------------------------------------------------------------------------


@pytest.fixture
def writable() -> Iterator[StripeEmulator]:
    clock = iter(range(1_800_000_000, 1_900_000_000))
    with StripeEmulator(api_keys=[KEY], customers=20, charges=40, seed=5, clock=lambda: next(clock)) as em:
        yield em


def test_create_update_delete_customer_with_events(writable: StripeEmulator) -> None:
    with httpx.Client(base_url=writable.url, headers=_auth()) as c:
        created = c.post(
            "/v1/customers",
            data={
                "email": "jsmith+test@example.org",
                "name": "สมชาย",
                "metadata[tier]": "gold",
                "address[city]": "Bangkok",
            },
        ).json()
        assert re.fullmatch(r"cus_[A-Za-z0-9]{14}", created["id"])
        assert created["metadata"] == {"tier": "gold"} and created["address"]["city"] == "Bangkok"
        assert list(created) == list(stripe_data.fixture_resources()["customer"])
        newest = c.get("/v1/customers", params={"limit": 1}).json()["data"][0]
        assert newest == created

        updated = c.post(
            f"/v1/customers/{created['id']}",
            data={"phone": "+66 81 234 5678", "metadata[tier]": "", "description": ""},
        ).json()
        assert (
            updated["phone"] == "+66 81 234 5678"
            and updated["metadata"] == {}
            and updated["description"] is None
        )

        deleted = c.delete(f"/v1/customers/{created['id']}").json()
        assert deleted == {"deleted": True, "id": created["id"], "object": "customer"}
        assert c.get(f"/v1/customers/{created['id']}").json() == deleted
        assert c.delete(f"/v1/customers/{created['id']}").status_code == 404
        assert created["id"] not in [o["id"] for o in fetch_all(c, "/v1/customers", limit=100)]
        # a deleted object still works as a cursor
        after = c.get("/v1/customers", params={"starting_after": created["id"], "limit": 100}).json()
        assert len(after["data"]) == 20

        events = c.get("/v1/events", params={"limit": 3}).json()["data"]
        assert [e["type"] for e in events] == ["customer.deleted", "customer.updated", "customer.created"]
        # description was already empty: unchanged values are not "previous attributes"
        assert events[1]["data"]["previous_attributes"] == {"metadata": {"tier": "gold"}, "phone": None}
        assert events[2]["data"]["object"] == created  # the snapshot at creation time
        assert events[2]["request"]["id"]


def test_update_unknown_customer_is_404_and_unknown_param_is_400(writable: StripeEmulator) -> None:
    with httpx.Client(base_url=writable.url, headers=_auth()) as c:
        assert c.post("/v1/customers/cus_nope", data={"name": "x"}).status_code == 404
        bad = c.post("/v1/customers", data={"nickname": "x"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "nickname"
        nested = c.post("/v1/customers", data={"address[planet]": "Mars"})
        assert nested.json()["error"]["param"] == "address[planet]"
        json_body = c.post("/v1/customers", json={"email": "a@b.c"})
        assert json_body.status_code == 400


def test_idempotency_replays_the_first_response(writable: StripeEmulator) -> None:
    body = {"email": "anna@bücher.example", "metadata[source]": "import"}
    with httpx.Client(base_url=writable.url, headers=_auth()) as c:
        first = c.post("/v1/customers", data=body, headers={"Idempotency-Key": "import-1"})
        again = c.post("/v1/customers", data=body, headers={"Idempotency-Key": "import-1"})
        assert first.status_code == again.status_code == 200
        assert again.content == first.content
        assert again.headers["Request-Id"] != first.headers["Request-Id"]
        count_before = writable.count("customers")
        other = c.post("/v1/customers", data=body, headers={"Idempotency-Key": "import-2"})
        assert other.json()["id"] != first.json()["id"]
        assert writable.count("customers") == count_before + 1

        mismatch = c.post(
            "/v1/customers", data={"email": "x@example.com"}, headers={"Idempotency-Key": "import-1"}
        )
        assert mismatch.status_code == 400
        assert mismatch.json()["error"]["type"] == "idempotency_error"

        # validation failures are not stored: the key stays usable
        invalid = c.post("/v1/customers", data={"balance": "lots"}, headers={"Idempotency-Key": "import-3"})
        assert invalid.status_code == 400
        valid = c.post("/v1/customers", data={"balance": "10"}, headers={"Idempotency-Key": "import-3"})
        assert valid.status_code == 200 and valid.json()["balance"] == 10

        # Stripe's limit on key length
        assert (
            c.post("/v1/customers", data={"name": "n"}, headers={"Idempotency-Key": "k" * 256}).status_code
            == 400
        )


def test_search_customers(writable: StripeEmulator) -> None:
    with httpx.Client(base_url=writable.url, headers=_auth()) as c:
        made = c.post("/v1/customers", data={"email": "find.me@example.com", "metadata[member]": "M1"}).json()
        found = c.get("/v1/customers/search", params={"query": "email:'find.me@example.com'"}).json()
        assert found["object"] == "search_result" and [o["id"] for o in found["data"]] == [made["id"]]
        both = c.get(
            "/v1/customers/search",
            params={"query": "email:'find.me@example.com' AND metadata['member']:'M1'"},
        ).json()
        assert len(both["data"]) == 1
        assert c.get("/v1/customers/search", params={"query": "email~'x'"}).status_code == 400


def test_concurrent_readers_and_a_writer(writable: StripeEmulator) -> None:
    seeded = writable.object_ids("charges")
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            with httpx.Client(base_url=writable.url, headers=_auth()) as c:
                results.append([o["id"] for o in fetch_all(c, "/v1/charges", limit=3)])
        except BaseException as exc:  # collected for the main thread
            errors.append(exc)

    def write() -> None:
        with httpx.Client(base_url=writable.url, headers=_auth()) as c:
            for i in range(10):
                assert c.post("/v1/customers", data={"name": f"n{i}"}).status_code == 200

    threads = [threading.Thread(target=read) for _ in range(4)] + [threading.Thread(target=write)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors and results == [seeded] * 4
    assert writable.count("customers") == 30


# ---- faults ---------------------------------------------------------------------------------------


def test_fail_next_and_rate_limit_next(writable: StripeEmulator) -> None:
    with httpx.Client(base_url=writable.url, headers=_auth()) as c:
        writable.faults.fail_next(2, status=503)
        for _ in range(2):
            failed = c.get("/v1/charges")
            assert failed.status_code == 503 and failed.headers["Stripe-Should-Retry"] == "true"
            assert failed.json()["error"]["type"] == "api_error"
        assert c.get("/v1/charges").status_code == 200

        writable.faults.rate_limit_next(1, retry_after=2)
        limited = c.get("/v1/charges")
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "2" and limited.headers["Stripe-Should-Retry"] == "true"
        assert limited.json()["error"]["code"] == "rate_limit"
        assert c.get("/v1/charges").status_code == 200

        writable.faults.fail_next(1, status=500, should_retry=False, path="/v1/customers")
        assert c.get("/v1/charges").status_code == 200  # other paths are not affected
        refused = c.get("/v1/customers")
        assert refused.status_code == 500 and refused.headers["Stripe-Should-Retry"] == "false"
        assert writable.faults.pending == 0


def test_disconnect_and_delay_faults(writable: StripeEmulator) -> None:
    writable.faults.disconnect_next(1)
    with httpx.Client(base_url=writable.url, headers=_auth()) as c, pytest.raises(httpx.TransportError):
        c.get("/v1/charges")
    writable.faults.delay_next(1, seconds=0.5)
    with (
        httpx.Client(base_url=writable.url, headers=_auth(), timeout=0.1) as c,
        pytest.raises(httpx.ReadTimeout),
    ):
        c.get("/v1/charges")
    with httpx.Client(base_url=writable.url, headers=_auth()) as c:
        assert c.get("/v1/charges").status_code == 200


def test_token_bucket_rate_limit(writable: StripeEmulator) -> None:
    writable.faults.limit_rate(per_second=5, burst=3)
    with httpx.Client(base_url=writable.url, headers=_auth()) as c:
        statuses = [c.get("/v1/charges", params={"limit": 1}).status_code for _ in range(6)]
        assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]
        writable.faults.limit_rate(None)
        assert c.get("/v1/charges").status_code == 200


# ---- lifecycle and CLI -------------------------------------------------------------------------------


def test_stop_closes_keepalive_connections() -> None:
    em = StripeEmulator(api_keys=[KEY], customers=2, charges=2).start()
    url = em.url
    with httpx.Client(base_url=url, headers=_auth()) as c:
        assert c.get("/v1/charges").status_code == 200
        em.stop()
        with pytest.raises(httpx.TransportError):
            c.get("/v1/charges")
    em.stop()  # idempotent


def test_only_loopback() -> None:
    with pytest.raises(ValueError):
        StripeEmulator(api_keys=[KEY], host="0.0.0.0")  # noqa: S104


def test_cli_serves_until_terminated() -> None:
    env = dict(os.environ, ESM_STRIPE_EMULATOR_API_KEYS=KEY)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "esm_dagster.sandbox.stripe",
            "--port",
            "0",
            "--customers",
            "5",
            "--charges",
            "9",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        body = httpx.get(f"{url}/v1/charges", params={"limit": 100}, headers=_auth()).json()
        assert len(body["data"]) == 9
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert KEY not in stderr


# ---- form encoding ----------------------------------------------------------------------------------


def test_form_decoding_with_bracket_nesting() -> None:
    text = (
        "metadata[plan]=gold&expand[]=a&expand[]=b&items[1][price]=q&items[0][price]=p"
        "&email=a%2Bb%40x.org&name="
    )
    assert decode(text) == {
        "metadata": {"plan": "gold"},
        "expand": ["a", "b"],
        "items": [{"price": "p"}, {"price": "q"}],
        "email": "a+b@x.org",
        "name": "",
    }
    params = {"metadata": {"k": "v"}, "expand": ["x"], "items": [{"price": "p"}], "flag": True}
    assert decode("&".join(f"{k}={v}" for k, v in encode(params))) == {**params, "flag": "true"}
    for bad in ("a=1&a[b]=2", "a[b]=1&a=2", "a[][b]=1", "a]=1"):
        with pytest.raises(FormError):
            decode(bad)


def test_basic_credentials_are_base64(emulator: StripeEmulator) -> None:
    token = base64.b64encode(f"{KEY}:".encode()).decode()
    response = httpx.get(f"{emulator.url}/v1/customers", headers={"Authorization": f"Basic {token}"})
    assert response.status_code == 200
