"""`esm messages list|send`: the queue as a person operates it, against loopback emulators."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.models import User, UserRole
from esm_dagster.cli import main
from esm_dagster.sandbox.telegram import TelegramEmulator
from esm_dagster.sandbox.twilio import TwilioEmulator
from esm_dagster_tests.providers.messaging_helpers import OWNER
from esm_dagster_tests.sync.message_helpers import (
    BOT_TOKEN,
    MESSAGES_PATH,
    TWILIO_TOKEN,
    queue,
    register_routes,
    telegram_emulator,
    twilio_emulator,
)

VIEWER = "viewer@padel.example"


@pytest.fixture
def twilio() -> Iterator[TwilioEmulator]:
    with twilio_emulator() as em:
        yield em


@pytest.fixture
def telegram() -> Iterator[TelegramEmulator]:
    with telegram_emulator() as em:
        yield em


@pytest.fixture
def catalog(
    db_url: str,
    fernet_key: str,
    twilio: TwilioEmulator,
    telegram: TelegramEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    monkeypatch.setenv("ESM_DATABASE_URL", db_url)
    register_routes(db_url, twilio, telegram)
    with session_factory(db_url).begin() as session:
        session.add(User(email=VIEWER, full_name="Front desk", role=UserRole.VIEWER))
    return db_url


def test_send_then_list_shows_the_route_each_message_took(
    catalog: str, twilio: TwilioEmulator, telegram: TelegramEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    queue(catalog, telegram, 3)
    assert main(["--as", VIEWER, "messages", "list"]) == 0
    listed = capsys.readouterr().out
    assert listed.count("queued") == 3 and "+14155550002" in listed

    assert main(["--as", VIEWER, "messages", "send"]) == 2  # a viewer may look, not send
    assert "sync.run" in capsys.readouterr().err and telegram.sent_messages() == []

    twilio.faults.rate_limit_next(1, retry_after=None, path=MESSAGES_PATH)
    assert main(["--as", OWNER, "messages", "send"]) == 0
    out = capsys.readouterr().out
    assert "3 claimed, 3 sent" in out and "Club Bot SMS fallback: 1" in out and "Club SMS: 2" in out

    assert main(["--as", VIEWER, "messages", "list"]) == 0
    assert "no unsent messages" in capsys.readouterr().out
    assert main(["--as", VIEWER, "messages", "list", "--all"]) == 0
    table = capsys.readouterr().out
    assert "Club SMS: failed (rate_limit) > Club Bot SMS fallback: sent" in table
    assert main(["--as", VIEWER, "messages", "list", "--status", "sent", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert sorted(r["sent_via"] for r in records) == ["Club Bot SMS fallback", "Club SMS", "Club SMS"]
    dumped = json.dumps(records)
    assert TWILIO_TOKEN not in dumped and BOT_TOKEN not in dumped and BOT_TOKEN.split(":")[1] not in dumped


def test_send_exits_1_when_a_message_needs_a_person(
    catalog: str, twilio: TwilioEmulator, telegram: TelegramEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    queue(catalog, telegram, 1)
    twilio.faults.rate_limit_next(1, retry_after=None, path=MESSAGES_PATH)
    telegram.faults.lose_response_next(1, path="/bot")
    assert main(["--as", OWNER, "messages", "send"]) == 1
    assert "1 need a person" in capsys.readouterr().out
    assert main(["--as", OWNER, "messages", "list", "--status", "needs_person"]) == 0
    assert "needs_person" in capsys.readouterr().out
