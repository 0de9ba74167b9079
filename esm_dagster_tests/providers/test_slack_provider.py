"""Slack provider against the Slack emulator: real HTTP on loopback, real databases for the engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from esm_dagster.providers.base import ProviderError
from esm_dagster.providers.markers import marker_for
from esm_dagster.providers.slack import SlackProvider, classify
from esm_dagster.sandbox.slack import SlackEmulator
from esm_dagster.sandbox.slack.data import BAD_EMAILS
from esm_dagster.security.secret import Secret
from esm_dagster.sync.engine import run_mapping
from esm_dagster_tests.providers.messaging_helpers import Sleeps, fast_policy, register_mapping, rows, unix

TOKEN = "xoxb-1234567890-0987654321-TestTokenValue42"


@pytest.fixture
def emulator() -> Iterator[SlackEmulator]:
    with SlackEmulator(tokens=[TOKEN], users=40, channels=9, seed=4) as em:
        yield em


def provider(emulator: SlackEmulator, token: str = TOKEN, **policy: Any) -> SlackProvider:
    return SlackProvider(emulator.url + "/api", token=Secret(token), policy=fast_policy(**policy))


def ids(pages: Any) -> list[str]:
    return [r["id"] for page in pages for r in page.records]


def open_channel(emulator: SlackEmulator) -> str:
    return next(c["id"] for c in emulator.channels() if not c["is_archived"] and not c["is_general"])


@pytest.mark.parametrize(
    ("stream", "size", "counts"), [("users", 15, [15, 15, 11]), ("conversations", 4, [4, 4, 1])]
)
def test_cursor_paging_to_the_empty_next_cursor(
    emulator: SlackEmulator, stream: str, size: int, counts: list[int]
) -> None:
    with provider(emulator) as client:
        pages = list(client.iter_pages(stream, page_size=size))
    assert [len(p.records) for p in pages] == counts
    source = emulator.users() if stream == "users" else emulator.channels()
    assert ids(pages) == [item["id"] for item in source]
    assert pages[-1].next_cursor is None and not pages[-1].has_more
    assert sum("cursor=" in r.query for r in emulator.requests) == len(counts) - 1


def test_resume_from_a_cursor(emulator: SlackEmulator) -> None:
    with provider(emulator) as client:
        first = next(client.iter_pages("users", page_size=10))
        rest = list(client.iter_pages("users", page_size=10, cursor=first.next_cursor))
    assert [r["id"] for r in first.records] + ids(rest) == [u["id"] for u in emulator.users()]


class LoopingSlack(SlackEmulator):
    def _users_list(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        page = super()._users_list(path, {"limit": "5"})
        page["response_metadata"] = {"next_cursor": "dXNlcjpsb29w"}
        return page


def test_a_repeated_cursor_stops_the_stream() -> None:
    with LoopingSlack(tokens=[TOKEN], users=12) as em, provider(em) as client:
        pages = client.iter_pages("users", page_size=5)
        next(pages)
        with pytest.raises(ProviderError) as err:
            next(pages)
    assert err.value.code == "repeated_cursor"
    assert em.request_count == 2


def test_an_unknown_cursor_is_a_validation_error(emulator: SlackEmulator) -> None:
    with provider(emulator) as client, pytest.raises(ProviderError) as err:
        next(client.iter_pages("users", cursor="bm90OmFjdXJzb3I="))
    assert (err.value.error_class, err.value.code, err.value.status) == ("validation", "invalid_cursor", 200)


def test_window_cuts_users_on_updated(emulator: SlackEmulator) -> None:
    users = emulator.users()
    stamps = sorted(u["updated"] for u in users)
    start, end = stamps[10], stamps[30]
    with provider(emulator) as client:
        got = ids(client.iter_pages("users", window_start=start, window_end=end, page_size=7))
    assert got == [u["id"] for u in users if start <= u["updated"] < end] and len(got) == 20


def test_post_then_read_back_from_history(emulator: SlackEmulator) -> None:
    channel = open_channel(emulator)
    key = "mapping-2/announcement-1/v1"
    with provider(emulator) as client:
        [posted] = client.write(
            "messages", [{"channel": channel, "text": "Courts close at 20:00"}], idempotency_keys=[key]
        )
        found = client.find_written("messages", {"channel": channel}, key)
        assert client.find_written("messages", {"channel": channel}, "other-key") is None
    assert posted["ok"] is True and posted["channel"] == channel
    assert emulator.history(channel)[0]["text"] == f"Courts close at 20:00 {marker_for(key)}"
    assert found is not None and found["ts"] == posted["ts"]


def test_a_lost_answer_is_found_not_reposted(emulator: SlackEmulator) -> None:
    channel = open_channel(emulator)
    before = len(emulator.history(channel))
    emulator.faults.lose_response_next(1, path="/api/chat.postMessage")
    with provider(emulator) as client:
        with pytest.raises(ProviderError) as err:
            client.write(
                "messages", [{"channel": channel, "text": "Rain: courts 1-3 closed"}], idempotency_keys=["k9"]
            )
        assert err.value.error_class == "network" and err.value.retryable
        found = client.find_written("messages", {"channel": channel}, "k9")
    assert found is not None and len(emulator.history(channel)) == before + 1
    assert sum(r.path == "/api/chat.postMessage" for r in emulator.requests) == 1


@pytest.mark.parametrize(("which", "error"), [("unknown", "channel_not_found"), ("archived", "is_archived")])
def test_post_errors_are_validation_errors(emulator: SlackEmulator, which: str, error: str) -> None:
    channel = (
        "C0000NOPE00"
        if which == "unknown"
        else next(c["id"] for c in emulator.channels() if c["is_archived"])
    )
    with provider(emulator) as client, pytest.raises(ProviderError) as err:
        client.write("messages", [{"channel": channel, "text": "x"}], idempotency_keys=["k"])
    assert (err.value.error_class, err.value.code, err.value.retryable) == ("validation", error, False)
    assert emulator.request_count == 1


def test_a_wrong_token_is_an_auth_error_without_the_token(emulator: SlackEmulator) -> None:
    wrong = "xoxb-1111111111-2222222222-WrongTokenValue"
    with provider(emulator, token=wrong) as client, pytest.raises(ProviderError) as err:
        client.probe()
    assert (err.value.error_class, err.value.code, err.value.retryable) == ("auth", "invalid_auth", False)
    assert wrong not in str(err.value) and wrong not in repr(err.value)
    assert emulator.request_count == 1
    assert all(wrong not in r.query and TOKEN not in r.query for r in emulator.requests)


def test_a_token_expiring_mid_stream(emulator: SlackEmulator) -> None:
    emulator.faults.expire_credentials_after(1)
    with provider(emulator) as client:
        pages = client.iter_pages("users", page_size=10)
        next(pages)
        with pytest.raises(ProviderError) as err:
            next(pages)
    assert (err.value.error_class, err.value.code) == ("auth", "token_expired")


def test_http_429_retry_after_is_honoured(emulator: SlackEmulator) -> None:
    emulator.faults.rate_limit_next(1, retry_after=3)
    sleeps = Sleeps()
    with provider(emulator, sleep=sleeps) as client:
        assert len(ids(client.iter_pages("users", page_size=200))) == 41
    assert len(sleeps) == 1 and sleeps[0] >= 3.0
    assert client.metrics.rate_limit_waits == 1


def test_server_errors_are_retried(emulator: SlackEmulator) -> None:
    emulator.faults.fail_next(2, status=502)
    with provider(emulator) as client:
        assert client.probe() >= 0
    assert emulator.request_count == 3


def test_a_timeout_is_classified_and_names_no_token(emulator: SlackEmulator) -> None:
    emulator.faults.delay_next(1, seconds=1.0)
    with (
        provider(emulator, retry_attempts=0, timeout_seconds=0.3) as client,
        pytest.raises(ProviderError) as err,
    ):
        client.probe()
    assert (err.value.error_class, err.value.retryable) == ("timeout", True)
    assert TOKEN not in str(err.value) and TOKEN not in repr(err.value)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("invalid_auth", ("auth", False)),
        ("not_authed", ("auth", False)),
        ("token_revoked", ("auth", False)),
        ("ratelimited", ("rate_limit", True)),
        ("channel_not_found", ("validation", False)),
        ("internal_error", ("server", True)),
        ("something_new", ("client", False)),
    ],
)
def test_ok_false_classification(error: str, expected: tuple[str, bool]) -> None:
    assert classify(error) == expected


# ---- through the engine ---------------------------------------------------------------------------
def slack_mapping(url: str) -> dict[str, Any]:
    return {
        "system_name": "Club Slack",
        "system_type": "social_media",
        "provider_name": "slack",
        "api_endpoint": url + "/api",
        "authentication_type": "oauth2",
        "credentials": {"bot_token": TOKEN},
        "sync_frequency": "daily",
        "mapping_rules": {
            "field_mappings": {
                "profile.email": {"target": "user.email", "type": "email"},
                "profile.real_name": "user.full_name",
                "profile.phone": {"target": "user.phone_number", "type": "phone_number"},
                "name": "user.slack_handle",
                "updated": {"target": "user.slack_updated_at", "type": "timestamp", "unit": "s"},
                "is_bot": {"target": "user.slack_is_bot", "type": "boolean"},
            },
            "transformations": {"timezone": "Asia/Bangkok"},
            "validation_rules": {"required_fields": ["profile.email"]},
            "sync_config": {"stream": "users", "batch_size": 20},
        },
    }


def test_users_sync_through_the_engine(db_url: str, fernet_key: str, emulator: SlackEmulator) -> None:
    register_mapping(db_url, slack_mapping(emulator.url))
    first = run_mapping(db_url, "club slack/users")
    users = {u["id"]: u for u in emulator.users()}
    bad = {
        uid
        for uid, u in users.items()
        if u["profile"].get("email") in (None, *BAD_EMAILS) or u["profile"]["phone"] == "12345"
    }
    assert first.records_read == 41 and first.records_rejected == len(bad) and len(bad) >= 5
    loaded = rows(
        db_url,
        "user",
        "esm_external_id",
        "email",
        "full_name",
        "slack_handle",
        "slack_updated_at",
        "slack_is_bot",
    )
    loaded = [r for r in loaded if r[0] is not None]  # the catalog's own users have no external id
    assert {r[0] for r in loaded} == set(users) - bad
    for uid, email, full_name, handle, updated_at, is_bot in loaded:
        user = users[uid]
        assert (email, full_name, handle) == (
            user["profile"]["email"],
            user["profile"]["real_name"],
            user["name"],
        )
        assert unix(updated_at) == user["updated"] and bool(is_bot) is user["is_bot"]
    again = run_mapping(db_url, "club slack/users", full_refresh=True)
    assert again.records_read == 41
    assert len([r for r in rows(db_url, "user", "esm_external_id") if r[0] is not None]) == len(loaded)
