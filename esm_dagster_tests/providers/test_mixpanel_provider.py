"""The Mixpanel client against the Mixpanel emulator over loopback: export chunks, windows, import."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest

from esm_dagster.providers.base import ProviderError
from esm_dagster.providers.mixpanel import CHUNK_DAYS, default_export_url, insert_id
from esm_dagster.sandbox.mixpanel import DEFAULT_END, DEFAULT_START, MixpanelEmulator
from esm_dagster_tests.mixpanel_fixtures import PROJECT_ID, SECRET, USER, client, mixpanel_emulator

JAN_1 = DEFAULT_START  # 2026-01-01T00:00:00Z
DAY = 86400


@pytest.fixture
def emulator() -> Iterator[MixpanelEmulator]:
    with mixpanel_emulator(events=150, seed=4) as em:
        yield em


def in_window(emulator: MixpanelEmulator, start: int, end: int) -> list[dict]:
    return [e for e in emulator.events if start <= e["properties"]["time"] < end]


def test_a_month_is_read_in_week_chunks_with_date_cursors(emulator: MixpanelEmulator) -> None:
    with client(emulator) as mp:
        pages = list(
            mp.iter_pages("events", window_start=DEFAULT_START, window_end=DEFAULT_END, page_size=40)
        )
    assert [e for p in pages for e in p.records] == emulator.events
    exports = [parse_qs(r.query) for r in emulator.requests]
    dates = [(q["from_date"][0], q["to_date"][0]) for q in exports]
    assert dates == [
        ("2026-01-01", "2026-01-07"),
        ("2026-01-08", "2026-01-14"),
        ("2026-01-15", "2026-01-21"),
        ("2026-01-22", "2026-01-28"),
        ("2026-01-29", "2026-01-31"),
    ]
    assert all(q["project_id"] == [str(PROJECT_ID)] for q in exports)
    chunk_ends = [p.next_cursor for p in pages if p.next_cursor is not None]
    assert sorted(set(chunk_ends)) == ["2026-01-07", "2026-01-14", "2026-01-21", "2026-01-28"]
    assert pages[-1].has_more is False and pages[-1].next_cursor is None
    assert all(p.has_more for p in pages[:-1]) and max(len(p.records) for p in pages) <= 40
    assert CHUNK_DAYS == 7


def test_resume_after_a_date_cursor_reads_only_later_days(emulator: MixpanelEmulator) -> None:
    with client(emulator) as mp:
        got = [
            e
            for p in mp.iter_pages(
                "events", window_start=DEFAULT_START, window_end=DEFAULT_END, cursor="2026-01-14"
            )
            for e in p.records
        ]
    assert got == in_window(emulator, JAN_1 + 14 * DAY, DEFAULT_END)
    assert parse_qs(emulator.requests[0].query)["from_date"] == ["2026-01-15"]


def test_a_cursor_at_the_windows_last_day_reads_nothing(emulator: MixpanelEmulator) -> None:
    """Date cursors are made here and only move forward; a run killed after its last chunk ends empty."""
    with client(emulator) as mp:
        pages = list(
            mp.iter_pages("events", window_start=JAN_1, window_end=JAN_1 + 7 * DAY, cursor="2026-01-07")
        )
    assert [(p.records, p.has_more, p.next_cursor) for p in pages] == [([], False, None)]
    assert emulator.request_count == 0


def test_a_malformed_cursor_is_refused(emulator: MixpanelEmulator) -> None:
    with client(emulator) as mp, pytest.raises(ValueError, match="YYYY-MM-DD"):
        list(mp.iter_pages("events", window_start=JAN_1, window_end=JAN_1 + DAY, cursor="offset:40"))
    assert emulator.request_count == 0


def test_the_window_is_cut_exactly_on_properties_time(emulator: MixpanelEmulator) -> None:
    start = JAN_1 + 3 * DAY + 7200 + 17
    end = JAN_1 + 9 * DAY + 600
    with client(emulator) as mp:
        got = [e for p in mp.iter_pages("events", window_start=start, window_end=end) for e in p.records]
    assert got == in_window(emulator, start, end) and got
    query = parse_qs(emulator.requests[0].query)
    assert (query["from_date"], query["to_date"]) == (["2026-01-04"], ["2026-01-10"])


def test_window_dates_are_taken_in_the_projects_timezone() -> None:
    with mixpanel_emulator(events=80, seed=2, timezone="Asia/Bangkok") as emulator:
        start, end = JAN_1 + 20 * 3600, JAN_1 + 2 * DAY  # 2026-01-02 03:00 Bangkok .. 2026-01-03 07:00
        with client(emulator, timezone="Asia/Bangkok") as mp:
            got = [e for p in mp.iter_pages("events", window_start=start, window_end=end) for e in p.records]
        query = parse_qs(emulator.requests[0].query)
        assert (query["from_date"], query["to_date"]) == (["2026-01-02"], ["2026-01-03"])
        assert got == in_window(emulator, start, end) and got


def test_import_then_export_reads_it_back_and_a_repeat_adds_nothing(emulator: MixpanelEmulator) -> None:
    now = int(time.time())
    events = [
        {"event": "Court Booked", "properties": {"time": now - 60, "distinct_id": "user-7", "court": "B"}},
        {"event": "Payment Completed", "properties": {"time": (now - 30) * 1000, "distinct_id": "user-7"}},
    ]
    keys = ["booking-1:v1", "payment-9:v1"]
    before = len(emulator.events)
    with client(emulator) as mp:
        first = mp.write("import", events, idempotency_keys=keys)
        again = mp.write("import", events, idempotency_keys=keys)
        read = [
            e for p in mp.iter_pages("events", window_start=now - 3600, window_end=now + 1) for e in p.records
        ]
    assert first == again == [{"$insert_id": insert_id(k), "status": "imported"} for k in keys]
    assert len(emulator.events) == before + 2 and emulator.import_requests == 2
    assert [(e["event"], e["properties"]["$insert_id"], e["properties"]["time"]) for e in read] == [
        ("Court Booked", insert_id(keys[0]), now - 60),
        ("Payment Completed", insert_id(keys[1]), now - 30),
    ]
    assert events[0]["properties"].get("$insert_id") is None  # the caller's records are left alone


def test_a_lost_import_answer_is_retried_and_deduplicated(emulator: MixpanelEmulator) -> None:
    emulator.faults.lose_response_next(1, path="/import")
    event = {"event": "Sign Up", "properties": {"time": int(time.time()) - 5, "distinct_id": "user-99"}}
    before = len(emulator.events)
    with client(emulator, retry_attempts=2, base_delay=0.0) as mp:
        answer = mp.write("import", [event], idempotency_keys=["member-99:v1"])
    assert answer[0]["status"] == "imported"
    assert emulator.import_requests == 2 and len(emulator.events) == before + 1


def test_strict_import_reports_the_failed_records_and_keeps_the_rest(emulator: MixpanelEmulator) -> None:
    now = int(time.time())
    events = [
        {"event": "Court Booked", "properties": {"time": now - 10, "distinct_id": "u1"}},
        {"event": "Court Booked", "properties": {"time": now + 7200, "distinct_id": "u2"}},
    ]
    before = len(emulator.events)
    with client(emulator) as mp:
        answers = mp.write("import", events, idempotency_keys=["a", "b"])
    assert answers[0] == {"$insert_id": insert_id("a"), "status": "imported"}
    assert answers[1]["status"] == "failed" and answers[1]["field"] == "properties.time"
    assert "future" in answers[1]["message"] and len(emulator.events) == before + 1


def test_more_than_2000_events_are_refused_before_sending(emulator: MixpanelEmulator) -> None:
    event = {"event": "x", "properties": {"time": 1, "distinct_id": "u"}}
    with client(emulator) as mp, pytest.raises(ValueError, match="at most 2000"):
        mp.write("import", [event] * 2001, idempotency_keys=[str(i) for i in range(2001)])
    assert emulator.request_count == 0


def test_a_wrong_secret_is_an_auth_error_without_the_secret(emulator: MixpanelEmulator) -> None:
    wrong = "mpSA-wrong-secret-ZZZZZZZZZZZZ"
    with client(emulator, secret=wrong) as mp, pytest.raises(ProviderError) as caught:
        mp.probe()
    error = caught.value
    assert (error.error_class, error.status, error.retryable) == ("auth", 401, False)
    assert "Unable to authenticate request" in str(error)
    for text in (str(error), repr(error), repr(mp)):
        assert wrong not in text and SECRET not in text
    assert emulator.request_count == 1


def test_a_timeout_holds_no_secret(emulator: MixpanelEmulator) -> None:
    emulator.faults.delay_next(1, seconds=0.6)
    with client(emulator, retry_attempts=0, timeout=0.2) as mp, pytest.raises(ProviderError) as caught:
        mp.probe()
    assert caught.value.error_class == "timeout" and caught.value.retryable
    assert SECRET not in str(caught.value) and USER not in str(caught.value)


def test_429_and_5xx_are_retried_with_backoff(emulator: MixpanelEmulator) -> None:
    emulator.faults.rate_limit_next(1)
    emulator.faults.fail_next(1, 503)
    slept: list[float] = []
    with client(emulator, retry_attempts=3, base_delay=0.25, sleep=slept.append) as mp:
        got = [
            e
            for p in mp.iter_pages("events", window_start=JAN_1, window_end=JAN_1 + 3 * DAY)
            for e in p.records
        ]
    assert got == in_window(emulator, JAN_1, JAN_1 + 3 * DAY)
    assert len(slept) == 2 and mp.metrics.errors_by_class == {"rate_limit": 1, "server": 1}
    assert mp.metrics.retries == 2


def test_a_run_without_window_or_start_date_is_refused(emulator: MixpanelEmulator) -> None:
    with client(emulator) as mp, pytest.raises(ProviderError) as caught:
        list(mp.iter_pages("events"))
    assert caught.value.code == "start_date_required" and emulator.request_count == 0


def test_the_export_host_follows_the_ingestion_host() -> None:
    assert default_export_url("https://api.mixpanel.com") == "https://data.mixpanel.com"
    assert default_export_url("https://api-eu.mixpanel.com") == "https://data-eu.mixpanel.com"
    assert default_export_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert default_export_url("https://mixpanel.example.org") is None


def test_request_log_holds_no_credential(emulator: MixpanelEmulator) -> None:
    with client(emulator) as mp:
        mp.probe()
        mp.write(
            "import",
            [{"event": "x", "properties": {"time": int(time.time()), "distinct_id": "u"}}],
            idempotency_keys=["k"],
        )
    for request in emulator.requests:
        assert SECRET not in request.query and USER not in request.query
    assert dt.date.fromisoformat(parse_qs(emulator.requests[0].query)["from_date"][0])
