"""HubSpotProvider against the HubSpot emulator over loopback: paging, keyset search, writes, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from esm_dagster.providers import get_provider_class
from esm_dagster.providers.base import ProviderError
from esm_dagster.providers.hubspot import HubSpotProvider, rate_limit_wait, to_ms
from esm_dagster.sandbox._http import Fault, LoopbackEmulator, Request, Response
from esm_dagster.sandbox.hubspot import HubSpotEmulator
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
START, END = 1788220800, 1796083200  # the emulator's seeded range, unix seconds


@pytest.fixture
def emulator() -> Iterator[HubSpotEmulator]:
    with HubSpotEmulator([TOKEN], contacts=120, archived=6, seed=11) as em:
        yield em


def provider_for(
    emulator: HubSpotEmulator, *, retries: int = 3, timeout: float = 5.0, token: str = TOKEN
) -> HubSpotProvider:
    policy = TransportPolicy(retries, timeout, base_delay=0.01, max_delay=5.0)
    return HubSpotProvider(emulator.url, token=Secret(token), policy=policy, properties=("phone",))


def modified_ms(record: dict[str, Any]) -> int:
    stamp = to_ms(record["properties"]["lastmodifieddate"])
    assert stamp is not None
    return stamp


def ids(pages: Any) -> list[str]:
    return [r["id"] for page in pages for r in page.records]


def test_full_read_pages_through_the_list_in_id_order(emulator: HubSpotEmulator) -> None:
    with provider_for(emulator) as provider:
        pages = list(provider.iter_pages("contacts", page_size=25))
    expected = [c["id"] for c in emulator.contacts()]
    assert len(expected) == 114
    assert len(pages) == 5 and ids(pages) == expected
    assert [p.has_more for p in pages] == [True] * 4 + [False]
    assert pages[0].records[0]["properties"]["phone"] == emulator.contacts()[0]["properties"]["phone"]
    assert all(r["archived"] is False for p in pages for r in p.records)
    requests = [r for r in emulator.requests if r.path == "/crm/v3/objects/contacts"]
    assert all("limit=25" in r.query and "properties=" in r.query for r in requests)


def test_resume_from_a_list_cursor_reads_the_rest(emulator: HubSpotEmulator) -> None:
    with provider_for(emulator) as provider:
        first = list(provider.iter_pages("contacts", page_size=30))
        resumed = list(provider.iter_pages("contacts", page_size=30, cursor=first[1].next_cursor))
    assert ids(resumed) == ids(first[2:])


def test_window_searches_lastmodifieddate_and_misses_nothing(emulator: HubSpotEmulator) -> None:
    lo, hi = START + 20 * 86400, END - 20 * 86400
    with provider_for(emulator) as provider:
        pages = list(provider.iter_pages("contacts", window_start=lo, window_end=hi, page_size=10))
    expected = {c["id"] for c in emulator.contacts() if lo * 1000 <= modified_ms(c) < hi * 1000}
    got = ids(pages)
    assert set(got) == expected and len(expected) > 40
    stamps = [modified_ms(r) for p in pages for r in p.records]
    assert stamps == sorted(stamps)  # ascending by lastmodifieddate
    assert len(got) - len(set(got)) <= len(pages)  # at most the boundary record of each page again
    searches = [r for r in emulator.requests if r.path.endswith("/search")]
    assert len(searches) == len(pages)


def test_resume_from_a_search_cursor(emulator: HubSpotEmulator) -> None:
    lo, hi = START, END
    with provider_for(emulator) as provider:
        first = list(provider.iter_pages("contacts", window_start=lo, window_end=hi, page_size=20))
        cursor = first[2].next_cursor
        assert cursor is not None and cursor.startswith("search:")
        resumed = list(
            provider.iter_pages("contacts", window_start=lo, window_end=hi, page_size=20, cursor=cursor)
        )
    assert set(ids(resumed)) == set(ids(first[3:]))
    with provider_for(emulator) as provider, pytest.raises(ProviderError) as caught:
        next(provider.iter_pages("contacts", window_start=lo, window_end=hi, cursor="list:200"))
    assert caught.value.code == "bad_cursor" and caught.value.error_class == "client"


def test_contacts_modified_mid_read_do_not_push_others_out(emulator: HubSpotEmulator) -> None:
    """The contacts of page one change between pages and leave the window: paging by offset would
    then skip as many unread contacts; the keyset reads every one."""
    lo, hi = START, END
    expected = {c["id"] for c in emulator.contacts() if modified_ms(c) < hi * 1000}
    with provider_for(emulator) as provider:
        pages = provider.iter_pages("contacts", window_start=lo, window_end=hi, page_size=10)
        got = ids([next(pages)])
        for contact_id in got:
            emulator.update_contact(contact_id, jobtitle="changed mid-read")  # now past the window
        got += ids(pages)
    assert set(got) == expected


def test_more_matches_than_the_search_cap_are_read_by_narrowing(emulator: HubSpotEmulator) -> None:
    emulator.search_cap = 25  # the real cap is 10,000; the client never pages towards it
    with provider_for(emulator) as provider:
        got = ids(provider.iter_pages("contacts", window_start=START, window_end=END, page_size=10))
    assert set(got) == {c["id"] for c in emulator.contacts()}


def test_a_tie_beyond_the_search_cap_is_raised_not_truncated(emulator: HubSpotEmulator) -> None:
    emulator.search_cap = 20
    tie = (END - 3600) * 1000
    for n in range(30):
        emulator.add_contact(modified_ms=tie, email=f"tie{n}@example.com", firstname="Tie")
    with provider_for(emulator) as provider, pytest.raises(ProviderError) as caught:
        list(provider.iter_pages("contacts", window_start=END - 7200, window_end=END, page_size=10))
    assert caught.value.code == "search_cap" and not caught.value.retryable


def test_a_tie_read_up_to_the_cap_is_narrowed_past(emulator: HubSpotEmulator) -> None:
    """Fifteen contacts share a millisecond and twenty follow: the tie is paged with `after`, the
    cap stops that paging on a page that reaches past the tie, and the window narrows from there."""
    emulator.search_cap = 20
    tie = (END - 3600) * 1000
    made = [emulator.add_contact(modified_ms=tie, email=f"tie{n}@example.com")["id"] for n in range(15)]
    made += [
        emulator.add_contact(modified_ms=tie + n, email=f"next{n}@example.com")["id"] for n in range(1, 21)
    ]
    with provider_for(emulator) as provider:
        got = ids(provider.iter_pages("contacts", window_start=END - 3600, window_end=END, page_size=10))
    assert set(got) == set(made)


def test_archived_contacts_are_a_stream(emulator: HubSpotEmulator) -> None:
    emulator.archive_contact(151)
    with provider_for(emulator) as provider:
        everything = list(provider.iter_pages("contacts_archived", page_size=4))
        recent = list(
            provider.iter_pages("contacts_archived", window_start=int(emulator.now_ms() / 1000) - 60)
        )
    archived = emulator.contacts(archived=True)
    assert len(archived) == 7 and ids(everything) == [c["id"] for c in archived]
    assert all(r["archived"] is True and r["archivedAt"] for p in everything for r in p.records)
    assert ids(recent) == ["151"]


def test_upsert_then_read_back_and_repeat_changes_nothing(emulator: HubSpotEmulator) -> None:
    existing = emulator.contacts()[3]
    records = [
        {
            "email": "new.member@example.com",
            "firstname": "New",
            "lastname": "Member",
            "phone": "+66812345678",
        },
        {"email": existing["properties"]["email"].upper(), "lifecyclestage": "customer", "jobtitle": "Coach"},
    ]
    keys = ["esm:user:1:v1", "esm:user:2:v1"]
    with provider_for(emulator) as provider:
        first = provider.write("contacts_upsert", records, idempotency_keys=keys)
        before = emulator.contacts()
        again = provider.write("contacts_upsert", records, idempotency_keys=keys)
        read = ids(provider.iter_pages("contacts"))
    assert [r["new"] for r in first] == [True, False] and [r["new"] for r in again] == [False, False]
    assert first[1]["id"] == existing["id"] and first[0]["id"] == again[0]["id"]
    assert emulator.contacts() == before  # the repeat changed nothing, not even lastmodifieddate
    assert read.count(first[0]["id"]) == 1
    stored = emulator.get_contact(existing["id"])
    assert stored is not None and stored["properties"]["jobtitle"] == "Coach"
    assert stored["properties"]["email"] == existing["properties"]["email"]


def test_an_upsert_whose_answer_was_lost_is_retried_into_one_contact(emulator: HubSpotEmulator) -> None:
    before = len(emulator.contacts())
    emulator.faults.lose_response_next(1, path="/crm/v3/objects/contacts/batch/upsert")
    with provider_for(emulator) as provider:
        out = provider.write("contacts_upsert", [{"email": "lost@example.com"}], idempotency_keys=["k1"])
        assert provider.metrics.errors_by_class == {"network": 1}
    assert emulator.faults.pending == 0
    assert len(emulator.contacts()) == before + 1
    assert out[0]["new"] is False  # the retry found the contact the lost attempt had made


def test_invalid_upserts_are_validation_errors_naming_the_problem(emulator: HubSpotEmulator) -> None:
    with provider_for(emulator) as provider:
        with pytest.raises(ProviderError) as caught:
            provider.write("contacts_upsert", [{"email": "not-an-email"}], idempotency_keys=["k"])
        assert (caught.value.status, caught.value.error_class, caught.value.retryable) == (
            400,
            "validation",
            False,
        )
        assert "not-an-email" in str(caught.value)
        with pytest.raises(ProviderError) as unknown:
            provider.write(
                "contacts_upsert", [{"email": "a@example.com", "shoe_size": 9}], idempotency_keys=["k"]
            )
        assert "shoe_size" in str(unknown.value)
        with pytest.raises(ValueError, match="same email"):
            provider.write(
                "contacts_upsert", [{"email": "a@x.org"}, {"email": "A@x.org"}], idempotency_keys=["1", "2"]
            )
        with pytest.raises(ValueError, match="1 to 100"):
            provider.write(
                "contacts_upsert", [{"email": f"{n}@x.org"} for n in range(101)], idempotency_keys=["k"] * 101
            )
    assert provider.write_spec("contacts_upsert").idempotency == "natural"


def test_wrong_token_is_auth_not_retryable_and_never_printed(emulator: HubSpotEmulator) -> None:
    wrong = "pat-na1-99999999-8888-7777-6666-000000000000"
    with provider_for(emulator, token=wrong) as provider, pytest.raises(ProviderError) as caught:
        provider.probe()
    error = caught.value
    assert (error.status, error.error_class, error.retryable, error.code) == (
        401,
        "auth",
        False,
        "INVALID_AUTHENTICATION",
    )
    assert provider.metrics.api_calls == 1
    for text in (str(error), repr(error), repr(provider)):
        assert wrong not in text and "99999999" not in text
    assert all(wrong not in r.query for r in emulator.requests)


def test_expired_token_is_auth(emulator: HubSpotEmulator) -> None:
    emulator.faults.expire_credentials_after(1)
    with provider_for(emulator) as provider:
        provider.probe()
        with pytest.raises(ProviderError) as caught:
            provider.probe()
    assert caught.value.error_class == "auth" and caught.value.code == "EXPIRED_AUTHENTICATION"
    assert TOKEN not in str(caught.value)


def test_secondly_429_waits_a_second_then_succeeds(emulator: HubSpotEmulator) -> None:
    emulator.faults.rate_limit_next(1, retry_after=None)
    with provider_for(emulator) as provider:
        provider.probe()
        assert provider.metrics.rate_limit_waits == 1
    times = emulator.request_times
    assert len(times) == 2 and times[1] - times[0] >= 0.95


def test_search_limit_of_four_per_second_is_waited_out() -> None:
    with HubSpotEmulator([TOKEN], contacts=60, seed=2, search_per_second=4) as emulator:
        with provider_for(emulator) as provider:
            got = ids(provider.iter_pages("contacts", window_start=START, window_end=END, page_size=10))
            waits = provider.metrics.rate_limit_waits
        assert set(got) == {c["id"] for c in emulator.contacts()}
        assert waits >= 1  # seven searches in a row meet the limit at least once


def test_server_errors_are_retried_and_classified(emulator: HubSpotEmulator) -> None:
    emulator.faults.fail_next(2, status=502)
    with provider_for(emulator) as provider:
        provider.probe()
        assert provider.metrics.retries == 2
    emulator.faults.fail_next(3, status=500)
    with provider_for(emulator, retries=1) as provider, pytest.raises(ProviderError) as caught:
        provider.probe()
    assert (caught.value.error_class, caught.value.retryable, caught.value.code) == (
        "server",
        True,
        "INTERNAL_ERROR",
    )


def test_timeout_and_disconnect_are_classified(emulator: HubSpotEmulator) -> None:
    emulator.faults.delay_next(1, seconds=0.6)
    with provider_for(emulator, retries=0, timeout=0.2) as provider, pytest.raises(ProviderError) as caught:
        provider.probe()
    assert (caught.value.error_class, caught.value.retryable) == ("timeout", True)
    emulator.faults.disconnect_next(1)
    with provider_for(emulator, retries=0) as provider, pytest.raises(ProviderError) as dropped:
        provider.probe()
    assert dropped.value.error_class == "network" and TOKEN not in str(dropped.value)


def test_rate_limit_waits_by_policy() -> None:
    assert rate_limit_wait("SECONDLY", httpx.Headers()) == 1.0
    rolling = httpx.Headers({"X-HubSpot-RateLimit-Interval-Milliseconds": "10000"})
    assert rate_limit_wait("TEN_SECONDLY_ROLLING", rolling) == 10.0
    assert rate_limit_wait("SECONDLY", httpx.Headers({"Retry-After": "3"})) == 3.0
    import datetime as dt

    late = dt.datetime(2026, 12, 4, 23, 0, tzinfo=dt.UTC)
    assert rate_limit_wait("DAILY", httpx.Headers(), now=late) == 3600.0


class _LoopingHubSpot(LoopbackEmulator):
    """A broken server that always offers the same next page."""

    def handle(self, request: Request) -> Response:
        body = {"results": [{"id": "1", "properties": {}}], "paging": {"next": {"after": "2"}}}
        return Response(200, json.dumps(body).encode())

    def render_fault(self, request: Request, fault: Fault) -> Response:
        return Response(500, b"{}")


def test_a_server_repeating_its_cursor_is_stopped() -> None:
    with _LoopingHubSpot() as server:
        provider = HubSpotProvider(server.url, token=Secret(TOKEN), policy=TransportPolicy(0, 5))
        pages = provider.iter_pages("contacts")
        assert next(pages).next_cursor == "list:2"
        with pytest.raises(ProviderError) as caught:
            next(pages)
    assert caught.value.code == "repeated_cursor" and not caught.value.retryable


def test_registry_streams_and_bad_arguments() -> None:
    assert get_provider_class("HubSpot") is HubSpotProvider
    assert [s.name for s in HubSpotProvider.STREAMS] == ["contacts", "contacts_archived"]
    with pytest.raises(TypeError):
        HubSpotProvider("https://api.hubapi.com", token=TOKEN, policy=TransportPolicy(0, 5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="https"):
        HubSpotProvider("http://api.hubapi.com", token=Secret(TOKEN), policy=TransportPolicy(0, 5))
    provider = HubSpotProvider(
        "https://api.hubapi.com/crm/v3/", token=Secret(TOKEN), policy=TransportPolicy(0, 5)
    )
    assert provider.base_url == "https://api.hubapi.com" and TOKEN not in repr(provider)


class _BrokenHubSpot(LoopbackEmulator):
    """A server answering 200 with whatever body the test sets."""

    body = b"<html>gateway</html>"

    def handle(self, request: Request) -> Response:
        return Response(200, self.body)

    def render_fault(self, request: Request, fault: Fault) -> Response:
        return Response(500, b"{}")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"<html>gateway</html>", "invalid_json"),
        (b'{"results": {"id": "1"}}', "unexpected_response"),
        (b'{"results": [{"name": "no id"}]}', "unexpected_response"),
        (b'{"results": [], "paging": {"next": {"after": "9"}}}', "empty_page_with_next"),
    ],
)
def test_bad_bodies_are_server_errors_without_the_token(body: bytes, code: str) -> None:
    with _BrokenHubSpot() as server:
        server.body = body
        provider = HubSpotProvider(server.url, token=Secret(TOKEN), policy=TransportPolicy(0, 5))
        with pytest.raises(ProviderError) as caught:
            list(provider.iter_pages("contacts"))
    assert caught.value.error_class == "server" and caught.value.code == code
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value)


def test_a_timeout_never_carries_the_token(emulator: HubSpotEmulator) -> None:
    emulator.faults.delay_next(1, seconds=0.5)
    with provider_for(emulator, retries=0, timeout=0.2) as provider, pytest.raises(ProviderError) as caught:
        list(provider.iter_pages("contacts", window_start=START, window_end=END))
    assert caught.value.error_class == "timeout" and caught.value.method == "POST"
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value)
