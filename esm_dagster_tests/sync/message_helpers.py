"""Shared by the outbound-message tests: Twilio (priority 1) and Telegram (priority 2) SMS routes.

Both are real emulators on loopback; the member's Telegram chat id travels in the message payload
(`x-messages.recipient: payload.telegram_chat_id`).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.mappings import get_mapping
from esm_dagster.catalog.models import OutboundMessage
from esm_dagster.sandbox.telegram import TelegramEmulator
from esm_dagster.sandbox.twilio import TwilioEmulator
from esm_dagster.sync.messages import enqueue
from esm_dagster_tests.providers.messaging_helpers import register_mapping

ACCOUNT = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-auth-token-0f9e8d7c6b5a"
BOT_TOKEN = "246813579:AAFtestTokenSecretPart_0123456789xyz"
MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
SENDER = "+15005550006"


def twilio_emulator() -> TwilioEmulator:
    return TwilioEmulator(account_sid=ACCOUNT, auth_token=TWILIO_TOKEN, messages=5, seed=3)


def telegram_emulator() -> TelegramEmulator:
    return TelegramEmulator(tokens=[BOT_TOKEN], updates=12, seed=4)


def sms_mapping(url: str, token: str = TWILIO_TOKEN) -> dict[str, Any]:
    return {
        "system_name": "Club SMS",
        "system_type": "sms_provider",
        "provider_name": "twilio",
        "api_endpoint": url,
        "authentication_type": "basic_auth",
        "credentials": {"account_sid": ACCOUNT, "auth_token": token, "from_number": SENDER},
        "sync_frequency": "hourly",
        "priority": 1,
        "retry_attempts": 0,
        "timeout_seconds": 5,
        "mapping_rules": {
            "field_mappings": {"to": "message.to_number", "body": "message.body"},
            "sync_config": {"stream": "messages", "key": "sid", "error_threshold": 3},
        },
    }


def bot_mapping(url: str) -> dict[str, Any]:
    return {
        "system_name": "Club Bot SMS fallback",
        "system_type": "sms_provider",
        "provider_name": "telegram",
        "api_endpoint": url,
        "authentication_type": "api_key",
        "credentials": {"bot_token": BOT_TOKEN},
        "sync_frequency": "manual",
        "priority": 2,
        "retry_attempts": 0,
        "timeout_seconds": 5,
        "mapping_rules": {
            "field_mappings": {"message.text": "message.body"},
            "sync_config": {"stream": "updates", "key": "update_id"},
            "x-messages": {"recipient": "payload.telegram_chat_id"},
        },
    }


def register_routes(url: str, twilio: TwilioEmulator, telegram: TelegramEmulator) -> str:
    """Twilio first, Telegram as its fallback, both `sms_provider`."""
    register_mapping(url, sms_mapping(twilio.url))
    register_mapping(url, bot_mapping(telegram.url))
    return url


def queue(url: str, telegram: TelegramEmulator, n: int, prefix: str = "reminder") -> list[str]:
    chats = [c["id"] for c in telegram.chats()]
    keys = [f"{prefix}-{i}" for i in range(n)]
    with session_factory(url).begin() as session:
        for i, key in enumerate(keys):
            enqueue(
                session,
                "sms_provider",
                f"+1415555{i:04d}",
                f"Court {i} is booked for 18:00",
                key,
                payload={"telegram_chat_id": chats[i % len(chats)]},
            )
    return keys


def messages(url: str) -> list[OutboundMessage]:
    with session_factory(url)() as session:
        found = list(session.scalars(sa.select(OutboundMessage).order_by(OutboundMessage.created_at)))
        session.expunge_all()
        return found


def mapping_id(url: str, ref: str) -> Any:
    with session_factory(url)() as session:
        return get_mapping(session, ref).id


def new_twilio_sends(twilio: TwilioEmulator) -> list[dict[str, Any]]:
    return [m for m in twilio.messages() if "[esm:" in (m.get("body") or "")]
