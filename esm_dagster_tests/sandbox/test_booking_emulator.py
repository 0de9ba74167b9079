"""The booking-platform emulator over real HTTP: seeded data, auth, error bodies, idempotency, faults."""

from __future__ import annotations

import base64
import itertools
import time
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from esm_dagster.sandbox.booking import BookingEmulator
from esm_dagster.sandbox.booking.data import INVALID_EMAIL, INVALID_PHONE, parse_iso

KEY = "bk_test_9a8b7c6d5e4f3a2b1c0d"
API = "/api/v2"


@pytest.fixture
def emulator() -> Iterator[BookingEmulator]:
    with BookingEmulator(
        api_keys=[KEY], basic_users={"club": "basic-pw-123"}, members=60, bookings=150, seed=2
    ) as em:
        yield em


@pytest.fixture
def http(emulator: BookingEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url + API, headers={"X-Api-Key": KEY}) as client:
        yield client


def test_the_seed_is_deterministic_and_consistent() -> None:
    one = BookingEmulator(api_keys=[KEY], members=50, bookings=120, seed=4)
    two = BookingEmulator(api_keys=[KEY], members=50, bookings=120, seed=4)
    other = BookingEmulator(api_keys=[KEY], members=50, bookings=120, seed=5)
    for resource in ("courts", "members", "bookings", "payments", "waitlist"):
        assert one.records(resource) == two.records(resource)
    assert one.records("bookings") != other.records("bookings")
    members = one.records("members")
    assert {INVALID_EMAIL, None} <= {m["email"] for m in members}
    assert INVALID_PHONE in {m["phone"] for m in members}
    rates = {c["id"]: Decimal(c["hourly_rate_thb"]) for c in one.records("courts")}
    by_court: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for booking in one.records("bookings"):
        begins, ends = parse_iso(booking["starts_at"]), parse_iso(booking["ends_at"])
        assert booking["starts_at"].endswith("+07:00") and booking["currency"] == "THB"
        assert ends - begins == booking["duration_minutes"] * 60
        assert Decimal(booking["price_thb"]) == rates[booking["court_id"]] * booking["duration_minutes"] / 60
        assert parse_iso(booking["created_at"]) <= parse_iso(booking["updated_at"])
        by_court[booking["court_id"]].append((begins, ends))
    for slots in by_court.values():
        slots.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(slots)), "overlapping bookings"
    bookings = {b["id"]: b for b in one.records("bookings")}
    for payment in one.records("payments"):
        booking = bookings[payment["booking_id"]]
        assert booking["status"] == "confirmed" and payment["member_id"] == booking["member_id"]
        assert payment["amount_satang"] == int(Decimal(booking["price_thb"]) * 100)
        assert payment["paid_at"] >= parse_iso(booking["created_at"])


def test_credentials_are_checked_and_never_echoed(emulator: BookingEmulator) -> None:
    url = emulator.url + API + "/courts"
    wrong = "bk_test_wrong_key_000000000"
    answers = [
        httpx.get(url),
        httpx.get(url, headers={"X-Api-Key": wrong}),
        httpx.get(url, params={"api_key": wrong}),
        httpx.get(url, headers={"Authorization": f"Bearer {wrong}"}),
        httpx.get(url, auth=("club", "wrong-password")),
    ]
    for answer in answers:
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"
        assert answer.headers["www-authenticate"].startswith("ApiKey")
        assert wrong not in answer.text and "wrong-password" not in answer.text
    for ok in (
        httpx.get(url, headers={"Authorization": f"Bearer {KEY}"}),
        httpx.get(url, params={"api_key": KEY}),
        httpx.get(url, auth=("club", "basic-pw-123")),
    ):
        assert ok.status_code == 200
    logged = " ".join(q for _, _, q in emulator.requests)
    assert KEY not in logged and wrong not in logged and "api_key=***" in logged
    emulator.faults.expire_credentials_after(1, credential=KEY)
    assert httpx.get(url, headers={"X-Api-Key": KEY}).status_code == 200
    expired = httpx.get(url, headers={"X-Api-Key": KEY})
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "key_expired"
    assert base64.b64encode(KEY.encode()).decode() not in expired.text


@pytest.mark.parametrize(
    ("path", "params", "status", "code", "field"),
    [
        ("/members", {"limit": 0}, 400, "invalid_parameter", "limit"),
        ("/members", {"colour": "red"}, 400, "invalid_parameter", "colour"),
        ("/members", {"updated_since": "yesterday"}, 400, "invalid_parameter", "updated_since"),
        ("/bookings", {"cursor": "!!"}, 400, "invalid_cursor", "cursor"),
        ("/payments", {"page_token": "eA"}, 400, "invalid_page_token", "page_token"),
        ("/courts", {"per_page": 51}, 400, "invalid_parameter", "per_page"),
        ("/members/99999", {}, 404, "not_found", None),
        ("/tournaments", {}, 404, "not_found", None),
    ],
)
def test_bad_requests_get_the_apis_error_body(
    http: httpx.Client, path: str, params: dict[str, object], status: int, code: str, field: str | None
) -> None:
    answer = http.get(path, params=params)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["code"] == code and error["message"] and error.get("field") == field


def test_writes_validate_and_are_visible_to_reads(emulator: BookingEmulator, http: httpx.Client) -> None:
    assert http.post("/members", content=b"first_name=x").status_code == 415
    assert http.delete("/members/1001").status_code == 405
    refused = http.post("/members", json={"first_name": "A", "level": "high"})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "level"
    made = http.post(
        "/members", json={"first_name": "Ploy", "email": "ploy@example.com", "external_ref": "crm-1"}
    )
    assert made.status_code == 201
    member = made.json()["data"]
    assert http.get("/members", params={"external_ref": "crm-1"}).json()["items"] == [member]
    patched = http.patch(f"/members/{member['id']}", json={"phone": "+66812345678"}).json()["data"]
    assert patched["phone"] == "+66812345678" and patched["updated_at"] >= member["updated_at"]
    assert http.get(f"/members/{member['id']}").json()["data"] == patched
    assert emulator.records("members")[-1] == patched


def test_booking_idempotency_replays_and_refuses_another_body(
    emulator: BookingEmulator, http: httpx.Client
) -> None:
    booking = {"court_id": "court-02", "member_id": 1002, "starts_at": "2027-02-01T09:00:00+07:00",
               "duration_minutes": 120}  # fmt: skip
    invalid = http.post(
        "/bookings", json={"booking": {**booking, "duration_minutes": 45}}, headers={"Idempotency-Key": "k1"}
    )
    assert invalid.status_code == 422 and invalid.json()["error"]["field"] == "duration_minutes"
    first = http.post(
        "/bookings", json={"booking": booking}, headers={"Idempotency-Key": "k1"}
    )  # errors are not stored
    replay = http.post("/bookings", json={"booking": booking}, headers={"Idempotency-Key": "k1"})
    assert first.status_code == replay.status_code == 201 and first.content == replay.content
    assert replay.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    reused = http.post(
        "/bookings", json={"booking": {**booking, "member_id": 1003}}, headers={"Idempotency-Key": "k1"}
    )
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "idempotency_key_reused"
    taken = http.post(
        "/bookings", json={"booking": {**booking, "member_id": 1003}}, headers={"Idempotency-Key": "k2"}
    )
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "slot_unavailable"
    assert [b["id"] for b in emulator.records("bookings")].count(first.json()["data"]["id"]) == 1
    assert first.json()["data"]["price_thb"] == "2400.00"


def test_faults_answer_in_the_apis_own_shape(emulator: BookingEmulator, http: httpx.Client) -> None:
    emulator.faults.rate_limit_next(1, retry_after=2.2)
    limited = http.get("/courts")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert limited.json()["error"]["code"] == "rate_limited"
    emulator.faults.fail_next(1, status=502)
    failed = http.get("/courts")
    assert failed.status_code == 502 and failed.json()["error"]["code"] == "bad_gateway"
    emulator.faults.delay_next(1, seconds=0.3)
    started = time.monotonic()
    assert http.get("/courts").status_code == 200 and time.monotonic() - started >= 0.3
    before = emulator.count("members")
    emulator.faults.lose_response_next(1, path=API + "/members")
    with pytest.raises(httpx.TransportError):
        http.post("/members", json={"first_name": "Lost", "external_ref": "lost-1"})
    assert emulator.count("members") == before + 1  # written, answer lost
    emulator.faults.disconnect_next(1)
    with pytest.raises(httpx.TransportError):
        http.get("/courts")


def test_mutations_between_pages_change_a_served_record_and_add_one(
    emulator: BookingEmulator, http: httpx.Client
) -> None:
    first = http.get("/members", params={"limit": 10}).json()["items"]
    emulator.faults.mutate_next(1, path=API + "/members", backdate=3600)
    http.get("/members", params={"limit": 10, "offset": 10})
    [mutation] = emulator.mutations
    assert mutation.changed == first[-1]["id"]
    changed = http.get(f"/members/{mutation.changed}").json()["data"]
    assert changed["updated_at"] > first[-1]["updated_at"]
    assert http.get(f"/members/{mutation.inserted}").status_code == 200
