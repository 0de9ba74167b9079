"""The declarative `rest` provider against the booking-platform emulator, over real HTTP: each paginator,
resume, windows, the repeated-cursor guard, every auth kind, error classification and the writes."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from esm_dagster.providers.base import ProviderError
from esm_dagster.providers.rest import RestProvider, next_link, parse_time
from esm_dagster.sandbox.booking import DEFAULT_START, BookingEmulator
from esm_dagster.sandbox.booking.data import parse_iso
from esm_dagster_tests.providers.booking_helpers import KEY, provider, rest_block

PAGE = {"courts": 3, "members": 7, "bookings": 9, "payments": 8, "waitlist": 1}
PAGINATOR = {"courts": "page", "members": "offset", "bookings": "cursor", "payments": "link_header",
             "waitlist": "next_url"}  # fmt: skip


@pytest.fixture(scope="module")
def emulator() -> Iterator[BookingEmulator]:
    with BookingEmulator(
        api_keys=[KEY], basic_users={"club": "s3cret-basic-pw"}, members=40, bookings=90, seed=5
    ) as em:
        yield em


@pytest.fixture
def client(emulator: BookingEmulator) -> Iterator[RestProvider]:
    with provider(emulator.url) as rest:
        yield rest


@pytest.mark.parametrize("stream", list(PAGE))
def test_every_paginator_reads_every_record_once_and_resumes(
    emulator: BookingEmulator, client: RestProvider, stream: str
) -> None:
    assert client.config.streams[stream].paginator.type == PAGINATOR[stream]
    expected = emulator.records(stream)
    size = PAGE[stream]
    pages = list(client.iter_pages(stream, page_size=size))
    assert [r for p in pages for r in p.records] == expected
    assert len(pages) >= 3 and all(len(p.records) <= size for p in pages)
    assert [p.has_more for p in pages] == [True] * (len(pages) - 1) + [False]
    assert pages[-1].next_cursor is None
    # a run killed after the second page resumes from its cursor and reads exactly the rest
    resumed = list(client.iter_pages(stream, page_size=size, cursor=pages[1].next_cursor))
    assert [r for p in resumed for r in p.records] == expected[
        len(pages[0].records) + len(pages[1].records) :
    ]


def test_server_side_windows_are_sent_in_the_apis_format(
    emulator: BookingEmulator, client: RestProvider
) -> None:
    start, end = DEFAULT_START + 15 * 86_400, DEFAULT_START + 45 * 86_400
    emulator.reset_request_log()
    bookings = [
        r
        for p in client.iter_pages("bookings", window_start=start, window_end=end, page_size=10)
        for r in p.records
    ]
    members = [r for p in client.iter_pages("members", window_start=start, window_end=end) for r in p.records]
    assert bookings == [b for b in emulator.records("bookings") if start <= parse_iso(b["updated_at"]) < end]
    assert members == [m for m in emulator.records("members") if start <= parse_iso(m["updated_at"]) < end]
    assert bookings and members
    queries = {path: query for _, path, query in emulator.requests}
    assert f"updated_since_ms={start * 1000}" in queries["/api/v2/bookings"]
    assert f"updated_before_ms={end * 1000}" in queries["/api/v2/bookings"]
    assert "updated_since=2026-09-16T00%3A00%3A00%2B00%3A00" in queries["/api/v2/members"]


def test_a_stream_without_a_server_window_is_filtered_client_side(
    emulator: BookingEmulator, client: RestProvider
) -> None:
    everything = emulator.records("payments")
    start = sorted(p["paid_at"] for p in everything)[len(everything) // 3]
    end = sorted(p["paid_at"] for p in everything)[2 * len(everything) // 3]
    pages = list(client.iter_pages("payments", window_start=start, window_end=end, page_size=10))
    records = [r for p in pages for r in p.records]
    assert records == [p for p in everything if start <= p["paid_at"] < end]
    assert len(pages) == -(-len(everything) // 10)  # it reads every page, keeps the window


def test_a_page_repeating_the_last_one_is_stopped_not_looped(
    emulator: BookingEmulator, client: RestProvider
) -> None:
    emulator.faults.duplicate_next(1, items=5, path="/api/v2/bookings")
    with pytest.raises(ProviderError) as caught:
        list(client.iter_pages("bookings", page_size=5))
    assert (caught.value.code, caught.value.retryable) == ("repeated_cursor", False)


def test_an_overlapping_page_repeats_records_but_loses_none(
    emulator: BookingEmulator, client: RestProvider
) -> None:
    emulator.faults.duplicate_next(1, items=3, path="/api/v2/bookings")
    ids = [r["id"] for p in client.iter_pages("bookings", page_size=10) for r in p.records]
    assert len(ids) == emulator.count("bookings") + 3
    assert sorted(set(ids)) == sorted(b["id"] for b in emulator.records("bookings"))


def test_a_query_key_echoed_into_next_links_never_becomes_a_cursor(emulator: BookingEmulator) -> None:
    block = rest_block(auth={"type": "api_key", "in": "query", "name": "api_key", "credential": "api_key"})
    emulator.reset_request_log()
    with provider(emulator.url, stream="payments", rest=block) as rest:
        pages = list(rest.iter_pages("payments", page_size=20))
    assert [r for p in pages for r in p.records] == emulator.records("payments")
    cursors = [p.next_cursor for p in pages if p.next_cursor]
    assert cursors and all("page_token=" in c and KEY not in c and "api_key" not in c for c in cursors)
    assert all(
        query.count("api_key=***") == 1 for _, _, query in emulator.requests
    )  # sent once, logged masked
    assert not any(KEY in query for _, _, query in emulator.requests)


@pytest.mark.parametrize(
    ("auth", "credentials"),
    [
        ({"type": "bearer", "credential": "token"}, {"token": KEY}),
        (
            {"type": "basic", "username": "user", "password": "password"},
            {"user": "club", "password": "s3cret-basic-pw"},
        ),
        ({"type": "api_key", "in": "header", "name": "X-Api-Key", "credential": "api_key"}, {"api_key": KEY}),
    ],
)
def test_each_auth_kind_reads_and_a_wrong_secret_is_auth_and_never_shown(
    emulator: BookingEmulator, auth: dict[str, Any], credentials: dict[str, str]
) -> None:
    block = rest_block(auth=auth)
    with provider(emulator.url, stream="courts", rest=block, credentials=credentials) as rest:
        assert [r["id"] for p in rest.iter_pages("courts") for r in p.records] == [
            c["id"] for c in emulator.courts
        ]
        assert rest.probe() > 0
    wrong = {name: f"wrong-{value}-zz" for name, value in credentials.items()}
    with provider(emulator.url, stream="courts", rest=block, credentials=wrong) as rest:
        with pytest.raises(ProviderError) as caught:
            list(rest.iter_pages("courts"))
        assert rest.metrics.retries == 0
    error = caught.value
    assert (error.error_class, error.retryable, error.status, error.code) == (
        "auth",
        False,
        401,
        "unauthorized",
    )
    secret = wrong.get("password") or next(iter(wrong.values()))
    for text in (str(error), repr(error), repr(rest)):
        assert secret not in text and base64.b64encode(secret.encode()).decode() not in text


def test_rate_limits_wait_retry_after_and_server_errors_are_retried(emulator: BookingEmulator) -> None:
    emulator.faults.rate_limit_next(1, retry_after=1, path="/api/v2/members")
    emulator.faults.fail_next(1, status=503, path="/api/v2/members")
    with provider(emulator.url, stream="members") as rest:
        records = [r for p in rest.iter_pages("members", page_size=100) for r in p.records]
        metrics = rest.metrics
    assert records == emulator.records("members")
    assert metrics.errors_by_class == {"rate_limit": 1, "server": 1} and metrics.retries == 2
    assert metrics.rate_limit_wait_seconds >= 1.0


def test_errors_are_classified_from_the_apis_error_body(
    emulator: BookingEmulator, client: RestProvider
) -> None:
    with pytest.raises(ProviderError) as conflict:
        client.write(
            "create_booking",
            [
                {
                    "court_id": "court-01",
                    "member_id": 1001,
                    "starts_at": "2026-12-24T18:00:00+07:00",
                    "duration_minutes": 60,
                }
            ],
            idempotency_keys=["esm:booking:first"],
        )
        client.write(
            "create_booking",
            [
                {
                    "court_id": "court-01",
                    "member_id": 1002,
                    "starts_at": "2026-12-24T18:30:00+07:00",
                    "duration_minutes": 60,
                }
            ],
            idempotency_keys=["esm:booking:overlap"],
        )
    assert (conflict.value.status, conflict.value.code, conflict.value.error_class) == (
        409,
        "slot_unavailable",
        "client",
    )
    assert "taken" in (conflict.value.provider_message or "")
    with pytest.raises(ProviderError) as invalid:
        client.write("update_member", [{"id": 1001, "level": "expert"}], idempotency_keys=["k"])
    assert (invalid.value.status, invalid.value.error_class, invalid.value.retryable) == (
        422,
        "validation",
        False,
    )
    assert invalid.value.code == "validation_failed"


def test_create_booking_is_deduplicated_by_its_key_and_read_back(
    emulator: BookingEmulator, client: RestProvider
) -> None:
    before = emulator.count("bookings")
    booking = {"court_id": "court-07", "member_id": 1003, "starts_at": "2026-12-30T19:00:00+07:00",
               "duration_minutes": 90, "notes": "สมาชิกใหม่"}  # fmt: skip
    emulator.faults.lose_response_next(1, path="/api/v2/bookings")
    [created] = client.write("create_booking", [booking], idempotency_keys=["esm:booking:M1003:v1"])
    [again] = client.write("create_booking", [booking], idempotency_keys=["esm:booking:M1003:v1"])
    assert client.metrics.errors_by_class["network"] == 1  # the lost answer was retried with the key
    assert again == created and emulator.count("bookings") == before + 1
    assert (created["price_thb"], created["ends_at"], created["status"]) == (
        "2250.00",
        "2026-12-30T20:30:00+07:00",
        "confirmed",
    )
    newest = [
        r
        for p in client.iter_pages("bookings", window_start=int(parse_iso(created["updated_at"])))
        for r in p.records
    ]
    assert created in newest


def test_update_member_is_read_back_through_the_stream(
    emulator: BookingEmulator, client: RestProvider
) -> None:
    [updated] = client.write(
        "update_member", [{"id": 1004, "phone": "+66891234567", "level": 4.5}], idempotency_keys=["u1"]
    )
    assert (updated["id"], updated["phone"], updated["level"]) == (1004, "+66891234567", 4.5)
    members = {m["id"]: m for p in client.iter_pages("members") for m in p.records}
    assert members[1004] == updated
    with pytest.raises(ValueError, match="needs 'id'"):
        client.write("update_member", [{"phone": "+66891234567"}], idempotency_keys=["u2"])


def test_a_write_without_idempotency_is_not_resent_and_is_found_after_a_lost_answer(
    emulator: BookingEmulator, client: RestProvider
) -> None:
    member = {"first_name": "Ploy", "last_name": "Chaiyo", "email": "ploy@example.co.th"}
    key = "esm:member:crm-88:v1"
    before = emulator.count("members")
    emulator.faults.lose_response_next(1, path="/api/v2/members")
    with pytest.raises(ProviderError) as lost:
        client.write("create_member", [member], idempotency_keys=[key])
    assert lost.value.error_class == "network" and client.metrics.retries == 0  # no blind resend
    assert emulator.count("members") == before + 1  # the first attempt did write
    found = client.find_written("create_member", member, key)
    assert found is not None and found["external_ref"] == key and found["email"] == member["email"]
    assert emulator.count("members") == before + 1  # looking it up wrote nothing
    assert client.find_written("create_member", member, "esm:member:never-sent") is None
    assert client.find_written("create_booking", {}, key) is None  # keyed writes need no lookup
    specs = {client.write_spec(n).name: client.write_spec(n).idempotency for n in client.config.writes}
    assert specs == {"create_booking": "key", "update_member": "natural", "create_member": "none"}


def test_helpers_read_link_headers_and_time_formats() -> None:
    header = '<https://x.test/a?page=1>; rel="prev", <https://x.test/a?page=3>; rel="next last"'
    assert next_link(header) == "https://x.test/a?page=3"
    assert next_link('<https://x.test/a?page=1>; rel="prev"') is None and next_link(None) is None
    assert parse_time("2026-10-03T18:30:00+07:00", "iso") == 1791027000.0
    assert parse_time(1791027000123, "unix_ms") == 1791027000.123
    assert parse_time("soon", "iso") is None and parse_time(True, "unix_s") is None


def test_a_timeout_with_the_key_in_the_query_never_shows_it(emulator: BookingEmulator) -> None:
    block = rest_block(auth={"type": "api_key", "in": "query", "name": "api_key", "credential": "api_key"})
    emulator.faults.delay_next(1, seconds=1.3, path="/api/v2/courts")
    with (
        provider(emulator.url, stream="courts", rest=block, retry_attempts=0, timeout_seconds=1) as rest,
        pytest.raises(ProviderError) as caught,
    ):
        list(rest.iter_pages("courts"))
    error = caught.value
    assert (error.error_class, error.retryable) == ("timeout", True)
    assert error.url == f"{emulator.url}/api/v2/courts"
    assert KEY not in str(error) and KEY not in repr(error) and "api_key" not in str(error)


def test_an_answer_without_the_record_list_is_a_protocol_error(emulator: BookingEmulator) -> None:
    block = rest_block()
    block["streams"]["courts"]["record_path"] = "data.rows"
    with provider(emulator.url, stream="courts", rest=block) as rest, pytest.raises(ProviderError) as caught:
        list(rest.iter_pages("courts"))
    assert (caught.value.code, caught.value.error_class, caught.value.status) == (
        "unexpected_response",
        "server",
        200,
    )
    assert "'data.rows'" in str(caught.value)


def test_a_next_url_on_another_origin_is_not_followed(
    emulator: BookingEmulator, client: RestProvider
) -> None:
    with pytest.raises(ProviderError) as caught:
        client._next_url("https://elsewhere.example/api/v2/waitlist?after=3", "/waitlist")
    assert caught.value.code == "foreign_url"
    relative = client._next_url("/api/v2/waitlist?after=3", "/waitlist")
    assert relative == f"{emulator.url}/api/v2/waitlist?after=3"  # resolved against the page's URL
