"""The SendGrid client against the SendGrid emulator over loopback: paging, windows, writes, errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest

from esm_dagster.providers.base import ProviderError
from esm_dagster.providers.sendgrid import MARKER_ARG, reset_wait, write_marker
from esm_dagster.sandbox.sendgrid import SendGridEmulator
from esm_dagster_tests.sendgrid_fixtures import KEY, OTHER_KEY, client, sendgrid_emulator


@pytest.fixture
def emulator() -> Iterator[SendGridEmulator]:
    with sendgrid_emulator(contacts=25, suppressions=30, seed=8) as em:
        yield em


def newest_first(emulator: SendGridEmulator, name: str) -> list[dict]:
    return sorted(emulator.suppressions[name], key=lambda r: (-r["created"], r["email"]))


def mail(to: str, subject: str = "Your court is booked") -> dict:
    return {
        "personalizations": [{"to": [{"email": to}]}],
        "from": {"email": "club@padel.example", "name": "Padel Club"},
        "subject": subject,
        "content": [{"type": "text/plain", "value": "See you on court A at 18:00."}],
    }


def test_suppressions_page_by_limit_and_offset(emulator: SendGridEmulator) -> None:
    with client(emulator) as sg:
        pages = list(sg.iter_pages("bounces", page_size=7))
    assert [len(p.records) for p in pages] == [7, 7, 7, 7, 2]
    assert [p.next_cursor for p in pages] == ["7", "14", "21", "28", None]
    assert [r for p in pages for r in p.records] == newest_first(emulator, "bounces")
    offsets = [parse_qs(r.query)["offset"][0] for r in emulator.requests]
    assert offsets == ["0", "7", "14", "21", "28"]
    assert all(parse_qs(r.query)["limit"] == ["7"] for r in emulator.requests)


def test_a_page_size_over_500_is_lowered_to_sendgrids_maximum(emulator: SendGridEmulator) -> None:
    with client(emulator) as sg:
        pages = list(sg.iter_pages("spam_reports", page_size=5000))
    assert len(pages) == 1 and len(pages[0].records) == 30
    assert parse_qs(emulator.requests[0].query)["limit"] == ["500"]


def test_resume_from_a_cursor_continues_after_it(emulator: SendGridEmulator) -> None:
    everything = newest_first(emulator, "blocks")
    with client(emulator) as sg:
        resumed = [r for p in sg.iter_pages("blocks", page_size=10, cursor="10") for r in p.records]
    assert resumed == everything[10:]


def test_a_server_that_ignores_the_offset_is_stopped(emulator: SendGridEmulator) -> None:
    emulator.faults.duplicate_next(1, items=10, path="/v3/suppression/unsubscribes")
    with client(emulator) as sg, pytest.raises(ProviderError) as caught:
        list(sg.iter_pages("unsubscribes", page_size=10))
    assert caught.value.code == "repeated_page" and not caught.value.retryable
    assert emulator.request_count == 2


def test_window_is_start_inclusive_end_exclusive_on_created(emulator: SendGridEmulator) -> None:
    start, end = 1780000000, 1780000600
    emulator.add_suppression("unsubscribes", "at.start@mail.example", start)
    emulator.add_suppression("unsubscribes", "inside@mail.example", start + 300)
    emulator.add_suppression("unsubscribes", "at.end@mail.example", end)
    with client(emulator) as sg:
        got = [
            r["email"]
            for p in sg.iter_pages("unsubscribes", window_start=start, window_end=end)
            for r in p.records
        ]
    expected = [r["email"] for r in newest_first(emulator, "unsubscribes") if start <= r["created"] < end]
    assert got == expected
    assert (
        "at.start@mail.example" in got and "inside@mail.example" in got and "at.end@mail.example" not in got
    )
    query = parse_qs(emulator.requests[0].query)
    assert query["start_time"] == [str(start)] and query["end_time"] == [str(end - 1)]


def test_contacts_come_through_an_export_job(emulator: SendGridEmulator) -> None:
    emulator.export_polls = 2  # pending twice, then ready
    with client(emulator) as sg:
        pages = list(sg.iter_pages("contacts", page_size=10))
    got = [r for p in pages for r in p.records]
    assert [len(p.records) for p in pages] == [10, 10, 5]
    assert [p.has_more for p in pages] == [True, True, False]
    assert sorted(got, key=lambda c: c["email"]) == sorted(
        emulator.contacts.values(), key=lambda c: c["email"]
    )
    paths = [r.path for r in emulator.requests]
    assert paths[0] == "/v3/marketing/contacts/exports"
    assert paths[1:4] == [paths[1]] * 3 and paths[1].startswith("/v3/marketing/contacts/exports/")
    assert paths[4].startswith("/_downloads/")
    assert all(KEY not in r.query for r in emulator.requests)


def test_contacts_window_filters_on_updated_at(emulator: SendGridEmulator) -> None:
    stamps = sorted(c["updated_at"] for c in emulator.contacts.values())
    import datetime as dt

    def seconds(iso: str) -> int:
        return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())

    start, end = seconds(stamps[5]), seconds(stamps[15])
    with client(emulator) as sg:
        got = {
            r["email"]
            for p in sg.iter_pages("contacts", window_start=start, window_end=end)
            for r in p.records
        }
    expected = {c["email"] for c in emulator.contacts.values() if start <= seconds(c["updated_at"]) < end}
    assert got == expected and len(got) >= 10


def test_contacts_upsert_is_read_back_and_repeating_it_changes_nothing(emulator: SendGridEmulator) -> None:
    before = len(emulator.contacts)
    record = {
        "email": "New.Member@Club.Example",
        "first_name": "Nok",
        "custom_fields": {"member_level": "gold"},
    }
    with client(emulator) as sg:
        first = sg.write("contacts_upsert", [record], idempotency_keys=["m-1"])
        again = sg.write("contacts_upsert", [record], idempotency_keys=["m-1"])
        read = [
            r for p in sg.iter_pages("contacts") for r in p.records if r["email"] == "new.member@club.example"
        ]
    assert first[0]["status"] == 202 and first[0]["job_id"] and again[0]["job_id"] != first[0]["job_id"]
    assert len(emulator.contacts) == before + 1
    assert len(read) == 1
    assert read[0]["first_name"] == "Nok" and read[0]["custom_fields"] == {"member_level": "gold"}


def test_mail_send_carries_the_marker_and_is_sent_once(emulator: SendGridEmulator) -> None:
    with client(emulator) as sg:
        answer = sg.write("mail_send", [mail("ana@club.example")], idempotency_keys=["booking-17:v1"])
    sent = emulator.sent_to("ana@club.example")
    assert len(sent) == 1
    assert answer == [
        {"status": 202, "message_id": sent[0]["message_id"], MARKER_ARG: write_marker("booking-17:v1")}
    ]
    assert sent[0]["body"]["personalizations"][0]["custom_args"] == {
        MARKER_ARG: write_marker("booking-17:v1")
    }


def test_a_lost_mail_send_answer_is_not_resent_and_asks_a_person(emulator: SendGridEmulator) -> None:
    emulator.faults.lose_response_next(1, path="/v3/mail/send")
    record, key = mail("ben@club.example"), "booking-18:v1"
    with client(emulator, retry_attempts=3) as sg:
        with pytest.raises(ProviderError) as lost:
            sg.write("mail_send", [record], idempotency_keys=[key])
        assert lost.value.error_class == "network" and lost.value.retryable
        with pytest.raises(ProviderError) as refused:
            sg.find_written("mail_send", record, key)
    assert refused.value.code == "needs_a_person" and not refused.value.retryable
    assert write_marker(key) in str(refused.value)
    assert len(emulator.sent_to("ben@club.example")) == 1  # the first attempt went out, nothing since
    assert [r.path for r in emulator.requests].count("/v3/mail/send") == 1


def test_a_5xx_on_mail_send_is_not_retried(emulator: SendGridEmulator) -> None:
    emulator.faults.fail_next(1, 503, path="/v3/mail/send")
    with client(emulator, retry_attempts=3) as sg, pytest.raises(ProviderError) as caught:
        sg.write("mail_send", [mail("chai@club.example")], idempotency_keys=["k"])
    assert caught.value.error_class == "server" and caught.value.status == 503
    assert emulator.request_count == 1 and emulator.sent_to("chai@club.example") == []


def test_a_rejected_mail_names_the_field(emulator: SendGridEmulator) -> None:
    with client(emulator) as sg, pytest.raises(ProviderError) as caught:
        sg.write("mail_send", [mail("not-an-address")], idempotency_keys=["k"])
    assert caught.value.error_class == "validation" and caught.value.code == "personalizations.0.to.0.email"
    assert "Does not contain a valid address" in str(caught.value)


def test_a_wrong_key_is_an_auth_error_without_the_key(emulator: SendGridEmulator) -> None:
    with client(emulator, key=OTHER_KEY) as sg, pytest.raises(ProviderError) as caught:
        sg.probe()
    error = caught.value
    assert (error.error_class, error.status, error.retryable) == ("auth", 401, False)
    assert "invalid, expired, or revoked" in str(error)
    for text in (str(error), repr(error), repr(sg)):
        assert OTHER_KEY not in text and KEY not in text
    assert emulator.request_count == 1  # never retried


def test_an_expired_key_turns_into_an_auth_error(emulator: SendGridEmulator) -> None:
    emulator.faults.expire_credentials_after(1, KEY)
    with client(emulator) as sg:
        sg.probe()
        with pytest.raises(ProviderError) as caught:
            sg.probe()
    assert caught.value.error_class == "auth" and KEY not in str(caught.value)


def test_a_timeout_is_retryable_and_holds_no_key(emulator: SendGridEmulator) -> None:
    emulator.faults.delay_next(1, seconds=0.6)
    with client(emulator, retry_attempts=0, timeout=0.2) as sg, pytest.raises(ProviderError) as caught:
        sg.probe()
    assert caught.value.error_class == "timeout" and caught.value.retryable
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)


def test_429_waits_until_x_ratelimit_reset(emulator: SendGridEmulator) -> None:
    emulator.faults.rate_limit_next(1, retry_after=3)
    slept: list[float] = []
    with client(emulator, base_delay=0.0, sleep=slept.append) as sg:
        records = [r for p in sg.iter_pages("bounces") for r in p.records]
    assert len(records) == 30
    assert len(slept) == 1 and 2.9 <= slept[0] <= 4.0  # Reset = ceil(now + 3), whole unix seconds
    assert sg.metrics.rate_limit_waits == 1 and sg.metrics.errors_by_class == {"rate_limit": 1}


def test_every_answer_carries_the_rate_limit_headers(emulator: SendGridEmulator) -> None:
    import httpx

    with httpx.Client(base_url=emulator.url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        first = http.get("/v3/suppression/bounces", params={"limit": 1})
        second = http.get("/v3/suppression/bounces", params={"limit": 1})
    assert first.headers["X-RateLimit-Limit"] == "600"
    assert int(first.headers["X-RateLimit-Remaining"]) - int(second.headers["X-RateLimit-Remaining"]) == 1
    assert reset_wait(second.headers["X-RateLimit-Reset"]) is not None


def test_5xx_on_a_read_is_retried(emulator: SendGridEmulator) -> None:
    emulator.faults.fail_next(2, 502)
    with client(emulator, retry_attempts=2, base_delay=0.0) as sg:
        records = [r for p in sg.iter_pages("blocks") for r in p.records]
    assert len(records) == 30 and sg.metrics.retries == 2


def test_reset_wait_reads_unix_seconds() -> None:
    assert reset_wait("1000", now=990.5) == 9.5
    assert reset_wait("1000", now=1010) == 0.0
    assert reset_wait(None) is None and reset_wait("soon") is None


def test_gzipped_export_files_are_read_as_a_stream() -> None:
    with sendgrid_emulator(contacts=9, gzip_files=True) as emulator, client(emulator) as sg:
        got = sorted(c["email"] for p in sg.iter_pages("contacts", page_size=4) for c in p.records)
    assert got == sorted(emulator.contacts)


def test_an_expired_export_link_is_a_server_error_not_a_bad_key(emulator: SendGridEmulator) -> None:
    with client(emulator) as sg:
        urls = sg.export_urls()
        emulator.expire_export_links()
        with pytest.raises(ProviderError) as caught:
            list(sg.export_rows(urls))
    assert (caught.value.error_class, caught.value.status, caught.value.retryable) == ("server", 403, False)
    assert "X-Amz-Signature" not in str(caught.value)


def test_an_address_added_mid_run_shifts_offsets_only_inside_the_window(emulator: SendGridEmulator) -> None:
    """With the window's end fixed before paging, an entry created during the run is outside it and
    cannot shift the offsets; without an end, it pushes the boundary record onto the next page too."""
    before = newest_first(emulator, "bounces")
    emulator.faults.mutate_next(1, backdate=0, path="/v3/suppression/bounces")
    with client(emulator) as sg:
        windowed = [
            r
            for p in sg.iter_pages("bounces", window_end=int(time.time()) - 5, page_size=10)
            for r in p.records
        ]
    assert windowed == before and len(emulator.mutations) == 1

    emulator.faults.mutate_next(1, backdate=0, path="/v3/suppression/bounces")
    with client(emulator) as sg:
        unbounded = [r["email"] for p in sg.iter_pages("bounces", page_size=10) for r in p.records]
    assert unbounded.count(unbounded[9]) == 2  # the boundary record, read twice; nothing lost
    assert set(unbounded) == {r["email"] for r in emulator.suppressions["bounces"]} - {
        emulator.mutations[1][1]
    }
