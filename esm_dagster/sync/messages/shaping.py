"""From a queued message to the record one route's provider sends.

The message holds what the sender knows (a recipient, a subject, a body, extras in `payload`);
each provider wants its own fields: Twilio a phone in `To`, Telegram a `chat_id`, SendGrid a
personalization with an email, Slack a channel. Where that value lives differs per route, so the
mapping says it in `mapping_rules["x-messages"]` (an extension key: the rules schema keeps `x-`
keys without validating them):

- `recipient`: where the route's address comes from: `recipient` (the message's own, the default
  for a route of the message's system_type), `payload.<name>` (an extra the sender added, e.g. the
  member's Telegram chat id), or `credentials.<name>` (one fixed address of the mapping, e.g. the
  club's Telegram chat for a broadcast);
- `from` (SendGrid): the sender address, else `credentials.from_email`.

A route without an address for a message is skipped for it (and the skip is recorded), never sent
to a wrong or empty address.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from esm_dagster.catalog.models import ExternalSystemMapping, OutboundMessage
from esm_dagster.security.secret import Secret

# The write each provider sends a message with.
SEND_WRITES: dict[str, str] = {
    "twilio": "messages",
    "telegram": "messages",
    "slack": "messages",
    "sendgrid": "mail_send",
}
# Where a route finds its address when the mapping does not say.
DEFAULT_RECIPIENT: dict[str, str] = {
    "twilio": "recipient",
    "telegram": "payload.telegram_chat_id",
    "slack": "payload.slack_channel",
    "sendgrid": "recipient",
}


class NoAddress(ValueError):
    """The route has no address for this message: skip the route, not the message."""


def settings_of(row: ExternalSystemMapping) -> dict[str, Any]:
    found = (row.mapping_rules or {}).get("x-messages")
    return dict(found) if isinstance(found, dict) else {}


def address_of(
    row: ExternalSystemMapping, message: OutboundMessage, credentials: Mapping[str, Any]
) -> str | int:
    source = str(settings_of(row).get("recipient") or DEFAULT_RECIPIENT.get(row.provider_name, "recipient"))
    where, _, name = source.partition(".")
    value: Any
    if where == "recipient" and not name:
        value = message.recipient
    elif where == "payload" and name:
        value = (message.payload or {}).get(name)
    elif where == "credentials" and name:
        found = credentials.get(name)
        value = found.reveal() if isinstance(found, Secret) else found
    else:
        raise NoAddress(
            f"x-messages.recipient {source!r} is not recipient, payload.<name> or credentials.<name>"
        )
    if value in (None, "") or isinstance(value, bool):
        raise NoAddress(f"no address in {source}")
    if isinstance(value, int):
        return value
    return str(value)


def send_record(
    row: ExternalSystemMapping, message: OutboundMessage, credentials: Mapping[str, Any]
) -> dict[str, Any]:
    """The record `row`'s provider sends for `message`; NoAddress when the route cannot reach it."""
    provider = row.provider_name
    if provider not in SEND_WRITES:
        raise NoAddress(f"provider {provider} sends no messages")
    address = address_of(row, message, credentials)
    if provider == "twilio":
        return {"To": str(address), "Body": message.body}
    if provider == "telegram":
        text = f"{message.subject}\n\n{message.body}" if message.subject else message.body
        chat = int(address) if isinstance(address, str) and address.lstrip("-").isdigit() else address
        return {"chat_id": chat, "text": text}
    if provider == "slack":
        text = f"*{message.subject}*\n{message.body}" if message.subject else message.body
        return {"channel": str(address), "text": text}
    sender = settings_of(row).get("from") or _plain(credentials.get("from_email"))
    if not sender:
        raise NoAddress("no sender: set x-messages.from or credentials.from_email")
    if not message.subject:
        raise NoAddress("an email needs a subject")
    return {
        "personalizations": [{"to": [{"email": str(address)}]}],
        "from": {"email": str(sender)},
        "subject": message.subject,
        "content": [{"type": "text/plain", "value": message.body}],
    }


def provider_message_id(provider: str, result: Mapping[str, Any]) -> str | None:
    """The provider's id of a sent message (Twilio sid, Telegram chat:message_id, Slack ts, SendGrid id)."""
    if provider == "telegram":
        chat = result.get("chat")
        chat_id = chat.get("id") if isinstance(chat, dict) else None
        return f"{chat_id}:{result.get('message_id')}" if result.get("message_id") is not None else None
    for name in ("sid", "ts", "message_id", "id"):
        if result.get(name) not in (None, ""):
            return str(result[name])
    return None


def _plain(value: Any) -> str | None:
    if isinstance(value, Secret):
        return value.reveal()
    return str(value) if value else None
