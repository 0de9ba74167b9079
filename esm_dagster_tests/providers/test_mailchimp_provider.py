"""MailchimpProvider against the Mailchimp emulator over loopback: offset paging, windows, upsert,
data-centre checks, problem+json errors and the 10-connection limit."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from esm_dagster.providers import get_provider_class
from esm_dagster.providers.base import ProviderError
from esm_dagster.providers.context import ProviderConfigError
from esm_dagster.providers.mailchimp import (
    MailchimpProvider,
    check_endpoint_matches_key,
    subscriber_hash,
    to_seconds,
)
from esm_dagster.sandbox._http import Fault, LoopbackEmulator, Request, Response
from esm_dagster.sandbox.mailchimp import MailchimpEmulator
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy

KEY = "3f2c7a9d1e4b6a8c0d2e4f6a8b0c2d4e-us6"
START, END = 1788220800, 1796083200


@pytest.fixture
def emulator() -> Iterator[MailchimpEmulator]:
    with MailchimpEmulator([KEY], members=75, archived=5, seed=13) as em:
        yield em


def provider_for(
    emulator: MailchimpEmulator, *, key: str = KEY, retries: int = 3, timeout: float = 5.0
) -> MailchimpProvider:
    policy = TransportPolicy(retries, timeout, base_delay=0.01, max_delay=5.0)
    return MailchimpProvider(emulator.url, api_key=Secret(key), list_id=emulator.list_id, policy=policy)


def ids(pages: Any) -> list[str]:
    return [m["id"] for page in pages for m in page.records]


def changed(member: dict[str, Any]) -> int:
    stamp = to_seconds(member["last_changed"])
    assert stamp is not None
    return stamp


def test_pages_by_offset_until_total_items(emulator: MailchimpEmulator) -> None:
    with provider_for(emulator) as provider:
        pages = list(provider.iter_pages("members", page_size=20))
    expected = [m["id"] for m in emulator.members()]
    assert len(expected) == 70 and ids(pages) == expected
    assert [p.next_cursor for p in pages] == ["20:70", "40:70", "60:70", None]
    assert all(m["id"] == subscriber_hash(m["email_address"]) for p in pages for m in p.records)
    offsets = [r.query for r in emulator.requests]
    assert offsets == [f"count=20&offset={n}" for n in (0, 20, 40, 60)]


def test_resume_from_a_cursor(emulator: MailchimpEmulator) -> None:
    with provider_for(emulator) as provider:
        first = list(provider.iter_pages("members", page_size=25))
        resumed = list(provider.iter_pages("members", page_size=25, cursor=first[0].next_cursor))
        with pytest.raises(ProviderError) as bad:
            next(provider.iter_pages("members", cursor="search:1:"))
    assert ids(resumed) == ids(first[1:])
    assert bad.value.code == "bad_cursor"


def test_window_on_last_changed_is_start_inclusive_end_exclusive(emulator: MailchimpEmulator) -> None:
    members = sorted(emulator.members(), key=changed)
    lo, hi = changed(members[10]), changed(members[40])  # both bounds fall on a member exactly
    with provider_for(emulator) as provider:
        got = ids(provider.iter_pages("members", window_start=lo, window_end=hi, page_size=10))
    expected = {m["id"] for m in members if lo <= changed(m) < hi}
    assert set(got) == expected and len(got) == len(expected) >= 30
    assert members[10]["id"] in got and members[40]["id"] not in got
    query = emulator.requests[0].query
    assert "since_last_changed=" in query and "before_last_changed=" in query


def test_members_leaving_mid_read_do_not_push_others_out(emulator: MailchimpEmulator) -> None:
    """Between pages, the members of page one change and leave the window: the shrunk total_items
    makes the reader step back instead of skipping as many unread members."""
    expected = {m["id"] for m in emulator.members() if changed(m) < END}
    with provider_for(emulator) as provider:
        pages = provider.iter_pages("members", window_start=START, window_end=END, page_size=10)
        got = ids([next(pages)])
        for member_id in got:
            emulator.update_member(member_id, LNAME="changed mid-read")  # last_changed is now: past END
        got += ids(pages)
    assert set(got) == expected


def test_mutate_fault_between_pages_loses_nothing(emulator: MailchimpEmulator) -> None:
    expected = {m["id"] for m in emulator.members()}
    emulator.faults.mutate_next(1, path="/3.0/lists/")
    with provider_for(emulator) as provider:
        got = ids(provider.iter_pages("members", window_start=START, window_end=END, page_size=15))
    assert len(emulator.mutations) == 1
    assert set(got) == expected  # the changed member was read before it changed; no other skipped


def test_archived_members_are_a_stream(emulator: MailchimpEmulator) -> None:
    target = emulator.members()[0]
    emulator.archive_member(target["email_address"])
    with provider_for(emulator) as provider:
        archived = ids(provider.iter_pages("members_archived"))
        recent = ids(provider.iter_pages("members_archived", window_start=emulator.now() - 60))
        active = ids(provider.iter_pages("members"))
    assert len(archived) == 6 and target["id"] in archived and target["id"] not in active
    assert recent == [target["id"]]


def test_upsert_creates_then_updates_and_a_repeat_changes_nothing(emulator: MailchimpEmulator) -> None:
    record = {
        "email_address": "New.Member@Example.com",
        "status_if_new": "subscribed",
        "merge_fields": {"FNAME": "New"},
    }
    with provider_for(emulator) as provider:
        [created] = provider.write("members_upsert", [record], idempotency_keys=["esm:user:9:v1"])
        before = emulator.members()
        [again] = provider.write("members_upsert", [record], idempotency_keys=["esm:user:9:v1"])
        after = emulator.members()
        [updated] = provider.write(
            "members_upsert",
            [
                {
                    "email_address": "new.member@example.com",
                    "status_if_new": "subscribed",
                    "merge_fields": {"LNAME": "Member"},
                }
            ],
            idempotency_keys=["esm:user:9:v2"],
        )
        read = ids(provider.iter_pages("members", page_size=100))
    assert created["id"] == subscriber_hash("new.member@example.com") == again["id"] == updated["id"]
    assert before == after  # the same PUT twice: one member, last_changed untouched
    assert read.count(created["id"]) == 1
    assert updated["merge_fields"]["FNAME"] == "New" and updated["merge_fields"]["LNAME"] == "Member"
    assert updated["status"] == "subscribed"


def test_an_upsert_whose_answer_was_lost_is_retried_into_one_member(emulator: MailchimpEmulator) -> None:
    before = len(emulator.members())
    emulator.faults.lose_response_next(1, path="/3.0/lists/")
    record = {"email_address": "lost@example.com", "status_if_new": "pending"}
    with provider_for(emulator) as provider:
        [member] = provider.write("members_upsert", [record], idempotency_keys=["k"])
        assert provider.metrics.errors_by_class == {"network": 1}
    assert emulator.faults.pending == 0 and len(emulator.members()) == before + 1
    assert member["status"] == "pending"


def test_invalid_upserts_name_the_problem(emulator: MailchimpEmulator) -> None:
    with provider_for(emulator) as provider:
        with pytest.raises(ProviderError) as caught:
            provider.write(
                "members_upsert",
                [
                    {
                        "email_address": "a@example.com",
                        "status_if_new": "subscribed",
                        "merge_fields": {"SHOE": "9"},
                    }
                ],
                idempotency_keys=["k"],
            )
        assert (caught.value.status, caught.value.error_class, caught.value.code) == (
            400,
            "validation",
            "Invalid Resource",
        )
        assert "merge_fields.SHOE" in str(caught.value)
        with pytest.raises(ProviderError) as fake:
            provider.write(
                "members_upsert",
                [{"email_address": "not-an-email", "status": "subscribed"}],
                idempotency_keys=["k"],
            )
        assert "not-an-email" in str(fake.value) and not fake.value.retryable
        with pytest.raises(ValueError, match="status_if_new"):
            provider.write("members_upsert", [{"email_address": "b@example.com"}], idempotency_keys=["k"])
        with pytest.raises(ValueError, match="one idempotency key"):
            provider.write(
                "members_upsert", [{"email_address": "b@example.com"}] * 2, idempotency_keys=["k", "l"]
            )
    assert MailchimpProvider.WRITES[0].idempotency == "natural"


@pytest.mark.parametrize(
    "wrong", ["00000000000000000000000000000bad-us6", "3f2c7a9d1e4b6a8c0d2e4f6a8b0c2d4e-us9"]
)
def test_a_wrong_key_or_data_centre_is_auth_and_never_printed(
    emulator: MailchimpEmulator, wrong: str
) -> None:
    with provider_for(emulator, key=wrong) as provider, pytest.raises(ProviderError) as caught:
        provider.probe()
    error = caught.value
    assert (error.status, error.error_class, error.retryable, error.code) == (
        401,
        "auth",
        False,
        "API Key Invalid",
    )
    assert "datacenter" in str(error)
    for text in (str(error), repr(error), repr(provider)):
        assert wrong not in text and wrong[:32] not in text
    assert provider.metrics.api_calls == 1


def test_an_expired_key_is_auth(emulator: MailchimpEmulator) -> None:
    emulator.faults.expire_credentials_after(0)
    with provider_for(emulator) as provider, pytest.raises(ProviderError) as caught:
        provider.probe()
    assert caught.value.error_class == "auth" and KEY not in str(caught.value)


def test_the_eleventh_connection_is_refused_and_the_provider_waits_it_out() -> None:
    """Connections are opened (and kept alive) first, then twelve requests go out together, each held
    0.6 s by the emulator: ten are served, two refused. Then twelve providers do the same and retry."""
    with MailchimpEmulator([KEY], members=5, seed=1) as emulator:
        path = f"/3.0/lists/{emulator.list_id}/members"
        clients = [
            httpx.Client(base_url=emulator.url, auth=httpx.BasicAuth("anystring", KEY), timeout=5)
            for _ in range(12)
        ]
        for client in clients:
            assert client.get(path).status_code == 200  # connected, one at a time
        emulator.latency = 0.6
        barrier = threading.Barrier(12)
        statuses: list[int] = []

        def raw(client: httpx.Client) -> None:
            barrier.wait()
            statuses.append(client.get(path).status_code)

        run_together(raw, clients)
        assert sorted(statuses) == [200] * 10 + [429] * 2
        assert emulator.peak_in_flight == 10
        for client in clients:
            client.close()

        emulator.latency = 0.0
        providers = [
            MailchimpProvider(
                emulator.url,
                api_key=Secret(KEY),
                list_id=emulator.list_id,
                policy=TransportPolicy(6, 5, base_delay=0.1, max_delay=2.0),
            )
            for _ in range(12)
        ]
        for provider in providers:
            provider.probe()
        emulator.latency = 0.2
        outcomes: list[str] = []

        def probe(provider: MailchimpProvider) -> None:
            barrier.wait()
            provider.probe()
            outcomes.append("ok")

        run_together(probe, providers)
        assert outcomes == ["ok"] * 12
        assert sum(p.metrics.rate_limit_waits for p in providers) >= 2
        for provider in providers:
            provider.close()


def run_together(target: Any, items: list[Any]) -> None:
    threads = [threading.Thread(target=target, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_429_body_is_problem_json_and_retried(emulator: MailchimpEmulator) -> None:
    emulator.faults.rate_limit_next(1)
    with httpx.Client(base_url=emulator.url, auth=httpx.BasicAuth("u", KEY)) as client:
        answer = client.get(f"/3.0/lists/{emulator.list_id}/members")
    assert answer.status_code == 429 and answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["title"] == "TooManyConnections" and "retry-after" not in answer.headers
    emulator.faults.rate_limit_next(1)
    with provider_for(emulator) as provider:
        provider.probe()
        assert provider.metrics.rate_limit_waits == 1 and provider.metrics.errors_by_class == {
            "rate_limit": 1
        }


def test_server_errors_are_retried_then_raised(emulator: MailchimpEmulator) -> None:
    emulator.faults.fail_next(2, status=503)
    with provider_for(emulator) as provider:
        provider.probe()
        assert provider.metrics.retries == 2
    emulator.faults.fail_next(2, status=500)
    with provider_for(emulator, retries=1) as provider, pytest.raises(ProviderError) as caught:
        provider.probe()
    assert (caught.value.error_class, caught.value.retryable, caught.value.code) == (
        "server",
        True,
        "Internal Server Error",
    )


def test_unknown_list_is_a_client_error(emulator: MailchimpEmulator) -> None:
    policy = TransportPolicy(0, 5)
    with (
        MailchimpProvider(emulator.url, api_key=Secret(KEY), list_id="nosuchlist", policy=policy) as provider,
        pytest.raises(ProviderError) as caught,
    ):
        provider.probe()
    assert (caught.value.status, caught.value.error_class, caught.value.code) == (
        404,
        "client",
        "Resource Not Found",
    )


def test_base_url_must_match_the_keys_data_centre() -> None:
    policy = TransportPolicy(0, 5)
    provider = MailchimpProvider(api_key=Secret(KEY), list_id="abc123", policy=policy)
    assert provider.base_url == "https://us6.api.mailchimp.com" and KEY not in repr(provider)
    with pytest.raises(ProviderConfigError, match="'us6'") as caught:
        MailchimpProvider(
            "https://us9.api.mailchimp.com/3.0", api_key=Secret(KEY), list_id="abc123", policy=policy
        )
    assert KEY not in str(caught.value)
    with pytest.raises(ProviderConfigError, match="data-centre suffix") as nodc:
        MailchimpProvider(api_key=Secret("3f2c7a9d1e4b6a8c0d2e4f6a8b0c2d4e"), list_id="abc123", policy=policy)
    assert "3f2c7a9d" not in str(nodc.value)
    check_endpoint_matches_key("http://127.0.0.1:9999/3.0", "us6")  # a loopback emulator is fine
    check_endpoint_matches_key("https://us6.api.mailchimp.com/3.0", "us6")
    with pytest.raises(TypeError):
        MailchimpProvider(api_key=KEY, list_id="abc123", policy=policy)  # type: ignore[arg-type]
    assert get_provider_class("mailchimp") is MailchimpProvider


class _BrokenMailchimp(LoopbackEmulator):
    """A server answering with whatever status and body the test sets."""

    status, body = 200, b"not json"

    def handle(self, request: Request) -> Response:
        return Response(self.status, self.body)

    def render_fault(self, request: Request, fault: Fault) -> Response:
        return Response(500, b"{}")


@pytest.mark.parametrize(
    ("status", "body", "error_class", "code"),
    [
        (200, b"not json", "server", "invalid_json"),
        (200, b'{"members": []}', "server", "unexpected_response"),
        (
            200,
            b'{"members": [{"email_address": "x@y.z"}], "total_items": 1}',
            "server",
            "unexpected_response",
        ),
        (200, b'{"members": [], "total_items": 5}', "server", "empty_page_with_more"),
        (403, b"", "rate_limit", None),  # the bare 403 of the high-volume throttle
    ],
)
def test_bad_answers_are_classified_without_the_key(
    status: int, body: bytes, error_class: str, code: str | None
) -> None:
    with _BrokenMailchimp() as server:
        server.status, server.body = status, body
        policy = TransportPolicy(0, 5)
        provider = MailchimpProvider(server.url, api_key=Secret(KEY), list_id="abc123", policy=policy)
        with pytest.raises(ProviderError) as caught:
            list(provider.iter_pages("members"))
    assert (caught.value.error_class, caught.value.code) == (error_class, code)
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)


def test_a_timeout_never_carries_the_key(emulator: MailchimpEmulator) -> None:
    emulator.faults.delay_next(1, seconds=0.5)
    with provider_for(emulator, retries=0, timeout=0.2) as provider, pytest.raises(ProviderError) as caught:
        provider.write(
            "members_upsert",
            [{"email_address": "slow@example.com", "status_if_new": "subscribed"}],
            idempotency_keys=["k"],
        )
    assert (caught.value.error_class, caught.value.retryable, caught.value.method) == ("timeout", True, "PUT")
    assert KEY not in str(caught.value) and KEY[:32] not in repr(caught.value)
