"""Telegram provider against the Telegram emulator: real HTTP on loopback, real databases for the engine."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from esm_dagster.catalog.models import ExternalSystemMapping
from esm_dagster.providers.base import ProviderError
from esm_dagster.providers.context import ProviderConfigError, ProviderContext
from esm_dagster.providers.telegram import TelegramProvider
from esm_dagster.sandbox.telegram import TelegramEmulator
from esm_dagster.sandbox.telegram.data import BAD_PHONES
from esm_dagster.security.secret import Secret
from esm_dagster.sync.engine import SyncFailed, run_mapping
from esm_dagster_tests.providers.messaging_helpers import Sleeps, fast_policy, register_mapping, rows, unix

TOKEN = "246813579:AAFtestTokenSecretPart_0123456789xyz"
WRONG = "246813579:AAFwrongTokenSecretPart_987654321abc"


@pytest.fixture
def emulator() -> Iterator[TelegramEmulator]:
    with TelegramEmulator(tokens=[TOKEN], updates=60, seed=9) as em:
        yield em


def provider(emulator: TelegramEmulator, token: str = TOKEN, **policy: Any) -> TelegramProvider:
    return TelegramProvider(emulator.url, token=Secret(token), policy=fast_policy(**policy))


def update_ids(pages: Any) -> list[int]:
    return [r["update_id"] for page in pages for r in page.records]


def test_offset_paging_confirms_a_page_by_asking_for_the_next(emulator: TelegramEmulator) -> None:
    queue = emulator.pending_updates()
    with provider(emulator) as client:
        pages = list(client.iter_pages("updates", page_size=25))
    assert update_ids(pages) == [u["update_id"] for u in queue]
    assert [p.next_cursor for p in pages] == [
        str(queue[24]["update_id"] + 1),
        str(queue[49]["update_id"] + 1),
        None,
    ]
    # The last page is left unconfirmed: the next run reads it again (and upserts it).
    assert [u["update_id"] for u in emulator.pending_updates()] == [u["update_id"] for u in queue[50:]]
    assert emulator.confirmed == 50


def test_resume_from_an_offset(emulator: TelegramEmulator) -> None:
    queue = emulator.pending_updates()
    with provider(emulator) as client:
        first = next(client.iter_pages("updates", page_size=20))
        rest = list(client.iter_pages("updates", page_size=20, cursor=first.next_cursor))
    assert [r["update_id"] for r in first.records] + update_ids(rest) == [u["update_id"] for u in queue]


class StuckTelegram(TelegramEmulator):
    """A server that ignores the offset and hands back the same updates every time."""

    def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self.pending_updates()[: int(params.get("limit") or 100)]


def test_a_repeated_offset_stops_the_stream() -> None:
    with StuckTelegram(tokens=[TOKEN], updates=30) as em, provider(em) as client:
        pages = client.iter_pages("updates", page_size=10)
        next(pages)
        with pytest.raises(ProviderError) as err:
            next(pages)
    assert err.value.code == "repeated_cursor"


def test_window_end_stops_before_confirming_what_it_does_not_keep(emulator: TelegramEmulator) -> None:
    queue = emulator.pending_updates()
    start, end = queue[10]["message"]["date"], queue[40]["message"]["date"]
    with provider(emulator) as client:
        got = update_ids(client.iter_pages("updates", window_start=start, window_end=end, page_size=100))
    assert got == [u["update_id"] for u in queue if start <= u["message"]["date"] < end]
    # Nothing at or after window_end was confirmed, nor anything on the last page read.
    assert all(u in emulator.pending_updates() for u in queue if u["message"]["date"] >= end)


def test_send_message_reaches_the_chat_once(emulator: TelegramEmulator) -> None:
    chat = emulator.chats()[0]["id"]
    with provider(emulator) as client:
        [sent] = client.write(
            "messages", [{"chat_id": chat, "text": "Court 1 at 18:00 is yours"}], idempotency_keys=["k"]
        )
    assert sent["chat"]["id"] == chat and sent["from"]["is_bot"] is True
    assert [m["text"] for m in emulator.sent_messages(chat)] == ["Court 1 at 18:00 is yours"]


def test_a_lost_send_needs_a_person_and_is_not_resent(emulator: TelegramEmulator) -> None:
    chat = emulator.chats()[1]["id"]
    record = {"chat_id": chat, "text": "Your booking is confirmed"}
    emulator.faults.lose_response_next(1, path="/bot")
    with provider(emulator) as client:
        with pytest.raises(ProviderError) as lost:
            client.write("messages", [record], idempotency_keys=["booking-7"])
        assert lost.value.error_class == "network"
        with pytest.raises(ProviderError) as unverifiable:
            client.find_written("messages", record, "booking-7")
    err = unverifiable.value
    assert (err.error_class, err.code, err.retryable) == ("client", "send_unverifiable", False)
    assert "a person must look at the chat" in str(err) and str(chat) in str(err)
    assert len(emulator.sent_messages(chat)) == 1
    assert sum(r.path == "/bot***/sendMessage" for r in emulator.requests) == 1


def test_send_errors_are_classified(emulator: TelegramEmulator) -> None:
    chat = emulator.chats()[2]["id"]
    emulator.block(chat)
    with provider(emulator) as client:
        with pytest.raises(ProviderError) as blocked:
            client.write("messages", [{"chat_id": chat, "text": "x"}], idempotency_keys=["k"])
        with pytest.raises(ProviderError) as unknown:
            client.write("messages", [{"chat_id": 42, "text": "x"}], idempotency_keys=["k"])
    assert (blocked.value.error_class, blocked.value.status, blocked.value.retryable) == (
        "client",
        403,
        False,
    )
    assert "blocked" in str(blocked.value)
    assert (unknown.value.error_class, unknown.value.provider_message) == (
        "validation",
        "Bad Request: chat not found",
    )


def test_the_token_reaches_no_log_error_or_request_log(
    emulator: TelegramEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator.faults.rate_limit_next(1, retry_after=1)
    emulator.faults.fail_next(1, status=502)
    with provider(emulator) as client:
        assert len(update_ids(client.iter_pages("updates", page_size=100))) == 60
    with provider(emulator, token=WRONG) as bad, pytest.raises(ProviderError) as err:
        bad.probe()
    assert (err.value.error_class, err.value.status, err.value.retryable) == ("auth", 401, False)
    assert "/bot***/getMe" in str(err.value)
    for secret in (TOKEN, WRONG, TOKEN.split(":")[1], WRONG.split(":")[1]):
        assert secret not in caplog.text
        assert secret not in str(err.value) and secret not in repr(err.value)
        assert all(secret not in r.path and secret not in r.query for r in emulator.requests)
    assert "/bot***/getUpdates" in caplog.text  # the log is there, with the token masked


def test_a_malformed_token_is_an_auth_error(emulator: TelegramEmulator) -> None:
    with provider(emulator, token="not-a-bot-token") as client, pytest.raises(ProviderError) as err:
        client.probe()
    assert (err.value.error_class, err.value.status) == ("auth", 404)


def test_retry_after_from_the_body_is_honoured(emulator: TelegramEmulator) -> None:
    emulator.faults.rate_limit_next(1, retry_after=4)
    sleeps = Sleeps()
    with provider(emulator, sleep=sleeps) as client:
        assert client.probe() >= 0
    assert sleeps == [pytest.approx(sleeps[0])] and sleeps[0] >= 4.0
    assert client.metrics.rate_limit_waits == 1


def test_server_errors_are_retried(emulator: TelegramEmulator) -> None:
    emulator.faults.fail_next(2, status=500)
    with provider(emulator) as client:
        assert client.probe() >= 0
    assert emulator.request_count == 3


def test_a_timeout_names_no_token(emulator: TelegramEmulator) -> None:
    emulator.faults.delay_next(1, seconds=1.0)
    with (
        provider(emulator, retry_attempts=0, timeout_seconds=0.3) as client,
        pytest.raises(ProviderError) as err,
    ):
        client.probe()
    assert (err.value.error_class, err.value.retryable) == ("timeout", True)
    assert TOKEN not in str(err.value) and TOKEN.split(":")[1] not in str(err.value)


def test_get_updates_while_a_webhook_is_set_is_a_clear_client_error(emulator: TelegramEmulator) -> None:
    with provider(emulator) as client:
        client.call("setWebhook", {"url": "https://club.example/telegram"})
        with pytest.raises(ProviderError) as err:
            next(client.iter_pages("updates"))
    assert (err.value.error_class, err.value.status) == ("client", 409)
    assert "webhook" in str(err.value)


# ---- through the engine ---------------------------------------------------------------------------
def telegram_mapping(url: str, retry_attempts: int = 2) -> dict[str, Any]:
    return {
        "system_name": "Club Bot",
        "system_type": "social_media",
        "provider_name": "telegram",
        "api_endpoint": url,
        "authentication_type": "api_key",
        "credentials": {"bot_token": TOKEN},
        "sync_frequency": "hourly",
        "retry_attempts": retry_attempts,
        "mapping_rules": {
            "field_mappings": {
                "message.text": "message.body",
                "message.chat.id": {"target": "message.chat_id", "type": "integer"},
                "message.from.first_name": "message.first_name",
                "message.date": {"target": "message.sent_at", "type": "timestamp", "unit": "s"},
                "message.contact.phone_number": {"target": "message.contact_phone", "type": "phone_number"},
            },
            "validation_rules": {"required_fields": ["message.date"]},
            "sync_config": {"stream": "updates", "key": "update_id", "batch_size": 20},
        },
    }


def expected_rows(updates: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        str(u["update_id"]): u["message"]
        for u in updates
        if u["message"].get("contact", {}).get("phone_number") not in BAD_PHONES
    }


def test_updates_sync_through_the_engine(db_url: str, fernet_key: str, emulator: TelegramEmulator) -> None:
    queue = emulator.pending_updates()
    register_mapping(db_url, telegram_mapping(emulator.url))
    first = run_mapping(db_url, "club bot/updates")
    expected = expected_rows(queue)
    assert first.records_read == 60 and first.records_rejected == 60 - len(expected) > 0
    loaded = rows(
        db_url, "message", "esm_external_id", "body", "chat_id", "first_name", "sent_at", "contact_phone"
    )
    assert {r[0] for r in loaded} == set(expected)
    for update_id, body, chat_id, first_name, sent_at, phone in loaded:
        message = expected[update_id]
        assert (body, chat_id, first_name) == (
            message.get("text"),
            message["chat"]["id"],
            message["from"]["first_name"],
        )
        assert unix(sent_at) == message["date"]
        assert phone == message.get("contact", {}).get("phone_number")
    # The second run re-reads the unconfirmed last page, adds nothing, and then sees a new update.
    again = run_mapping(db_url, "club bot/updates")
    assert again.records_read == 0 and len(rows(db_url, "message", "id")) == len(loaded)
    chat = queue[0]["message"]["chat"]["id"]
    new = emulator.add_update(chat, "See you at 7", date=int(time.time()) - 5)
    third = run_mapping(db_url, "club bot/updates", full_refresh=True)
    assert third.records_written >= 1
    bodies = {r[0]: r[1] for r in rows(db_url, "message", "esm_external_id", "body")}
    assert bodies[str(new["update_id"])] == "See you at 7" and len(bodies) == len(loaded) + 1


def test_a_run_that_dies_mid_stream_loses_no_update(
    db_url: str, fernet_key: str, emulator: TelegramEmulator
) -> None:
    queue = emulator.pending_updates()
    register_mapping(db_url, telegram_mapping(emulator.url, retry_attempts=0))
    emulator.faults.fail_next(1, status=500, path="/bot", after=2)  # the third getUpdates fails
    with pytest.raises(SyncFailed) as failed:
        run_mapping(db_url, "club bot/updates")
    assert failed.value.report.records_read == 40  # two pages stored
    # The failed call confirmed nothing: page 2 (stored) and page 3 (never read) are still queued.
    assert [u["update_id"] for u in emulator.pending_updates()] == [u["update_id"] for u in queue[20:]]
    resumed = run_mapping(db_url, "club bot/updates")
    assert resumed.resumed and resumed.records_read == 20
    assert {r[0] for r in rows(db_url, "message", "esm_external_id")} == set(expected_rows(queue))


def config_context(credentials: dict[str, str]) -> ProviderContext:
    return ProviderContext(
        row=ExternalSystemMapping(system_name="Club Bot", provider_name="telegram"),
        credentials=credentials,
        base_url="https://api.telegram.org",
        policy=fast_policy(),
    )


def test_a_token_of_the_wrong_shape_is_refused_without_showing_it() -> None:
    with pytest.raises(ProviderConfigError) as err:
        TelegramProvider.from_context(config_context({"bot_token": "xoxb-not-telegram-secret"}))
    assert "credentials.bot_token" in str(err.value) and "not-telegram-secret" not in str(err.value)
    with pytest.raises(ProviderConfigError, match=r"credentials\.bot_token is missing"):
        TelegramProvider.from_context(config_context({}))
    client = TelegramProvider.from_context(config_context({"bot_token": TOKEN}))
    assert TOKEN not in repr(client) and TOKEN.split(":")[1] not in repr(client)
    client.close()


def test_an_endpoint_holding_the_token_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as err:
        TelegramProvider(f"https://api.telegram.org/bot{TOKEN}", token=Secret(TOKEN), policy=fast_policy())
    assert TOKEN.split(":")[1] not in str(err.value)
