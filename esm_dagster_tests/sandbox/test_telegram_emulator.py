"""The Telegram emulator's protocol details, over raw HTTP: token errors, the queue, masking, faults."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from esm_dagster.sandbox.telegram import TelegramEmulator

TOKEN = "13572468:AAEmulatorTokenSecretPart_abcdefgh"


@pytest.fixture
def emulator() -> Iterator[TelegramEmulator]:
    with TelegramEmulator(tokens=[TOKEN], updates=30, seed=3) as em:
        yield em


def call(emulator: TelegramEmulator, method: str, token: str = TOKEN, **params: object) -> httpx.Response:
    return httpx.post(f"{emulator.url}/bot{token}/{method}", json=params)


@pytest.mark.parametrize(
    ("token", "method", "status", "description"),
    [
        ("13572468:AAWrongWrongWrongWrongWrong", "getMe", 401, "Unauthorized"),
        ("no-colon-token", "getMe", 404, "Not Found"),
        (TOKEN, "getTeapot", 404, "Not Found"),
    ],
)
def test_token_and_method_errors(
    emulator: TelegramEmulator, token: str, method: str, status: int, description: str
) -> None:
    response = call(emulator, method, token=token)
    assert (response.status_code, response.json()) == (
        status,
        {"ok": False, "error_code": status, "description": description},
    )


def test_the_request_log_masks_every_token(emulator: TelegramEmulator) -> None:
    call(emulator, "getMe")
    call(emulator, "getMe", token="13572468:AAWrongWrongWrongWrongWrong")
    httpx.get(f"{emulator.url}/bot{TOKEN}/getUpdates", params={"offset": 1, "x": TOKEN})
    assert [r.path for r in emulator.requests] == ["/bot***/getMe", "/bot***/getMe", "/bot***/getUpdates"]
    assert all("AAEmulator" not in r.query and "AAWrong" not in r.query for r in emulator.requests)


def test_offset_confirms_and_drops(emulator: TelegramEmulator) -> None:
    queue = emulator.pending_updates()
    first = call(emulator, "getUpdates", limit=10).json()["result"]
    assert [u["update_id"] for u in first] == [u["update_id"] for u in queue[:10]]
    assert len(emulator.pending_updates()) == 30  # reading without an offset confirms nothing
    call(emulator, "getUpdates", offset=first[-1]["update_id"] + 1, limit=1)
    assert len(emulator.pending_updates()) == 20 and emulator.confirmed == 10
    assert [u["update_id"] for u in call(emulator, "getUpdates", offset=-3).json()["result"]] == [
        u["update_id"] for u in queue[-3:]
    ]
    assert len(emulator.pending_updates()) == 3
    assert len(call(emulator, "getUpdates", limit=500).json()["result"]) == 3  # limit is capped, not refused


def test_query_string_parameters_work_too(emulator: TelegramEmulator) -> None:
    response = httpx.get(f"{emulator.url}/bot{TOKEN}/getUpdates", params={"limit": 2})
    assert len(response.json()["result"]) == 2


def test_send_message_validation(emulator: TelegramEmulator) -> None:
    chat = emulator.chats()[0]["id"]
    assert (
        call(emulator, "sendMessage", chat_id=chat, text="").json()["description"]
        == "Bad Request: message text is empty"
    )
    too_long = call(emulator, "sendMessage", chat_id=chat, text="x" * 4097)
    assert (too_long.status_code, too_long.json()["description"]) == (400, "Bad Request: message is too long")
    assert call(emulator, "sendMessage", chat_id=chat, text="ok").json()["result"]["text"] == "ok"
    assert len(emulator.sent_messages(chat)) == 1


def test_webhooks_block_get_updates_and_can_drop_pending(emulator: TelegramEmulator) -> None:
    assert call(emulator, "setWebhook", url="https://club.example/tg").json() == {"ok": True, "result": True}
    assert call(emulator, "getUpdates").status_code == 409
    call(emulator, "deleteWebhook", drop_pending_updates=True)
    assert call(emulator, "getUpdates").json() == {"ok": True, "result": []}


def test_rate_limit_body_carries_retry_after(emulator: TelegramEmulator) -> None:
    emulator.faults.rate_limit_next(1, retry_after=5)
    response = call(emulator, "getMe")
    assert (response.status_code, response.json()) == (
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 5",
            "parameters": {"retry_after": 5},
        },
    )


def test_seeding_is_deterministic() -> None:
    def ids(seed: int) -> list[int]:
        with TelegramEmulator(tokens=[TOKEN], updates=5, seed=seed) as em:
            return [u["message"]["chat"]["id"] for u in em.pending_updates()]

    assert ids(1) == ids(1) != ids(2)
