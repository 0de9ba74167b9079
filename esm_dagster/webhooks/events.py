"""From a verified webhook body to inbox events: the provider's event id, type and payload.

One delivery can carry several events (SendGrid and HubSpot post JSON arrays): each becomes its
own inbox row under its own id, so a retried batch adds only the events not stored yet. Where a
provider gives no id (a Twilio status callback, a Slack slash command) the id is derived from the
content, which makes a byte-identical retry the same event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from esm_dagster.webhooks.errors import WebhookRejected
from esm_dagster.webhooks.verifiers import SignedRequest

MAX_ID = 200


@dataclass(frozen=True, slots=True)
class InboxEvent:
    event_id: str
    event_type: str | None
    payload: Any


def _content_id(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)[:MAX_ID]


def _json(request: SignedRequest, provider: str) -> Any:
    try:
        return json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected(400, f"{provider} webhook body is not JSON") from None


def _form(request: SignedRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, value in parse_qsl(request.body.decode("utf-8", errors="replace"), keep_blank_values=True):
        fields[name] = value if name not in fields else [*_as_list(fields[name]), value]
    return fields


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _object(body: Any, provider: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise WebhookRejected(400, f"{provider} webhook body is not a JSON object")
    return body


def _stripe(request: SignedRequest) -> list[InboxEvent]:
    event = _object(_json(request, "Stripe"), "Stripe")
    event_id = _text(event.get("id"))
    if not event_id:
        raise WebhookRejected(400, "Stripe event has no id")
    return [InboxEvent(event_id, _text(event.get("type")), event)]


def _twilio(request: SignedRequest) -> list[InboxEvent]:
    fields = (
        _form(request)
        if request.content_type != "application/json"
        else _object(_json(request, "Twilio"), "Twilio")
    )
    sid = _text(fields.get("MessageSid") or fields.get("SmsSid") or fields.get("CallSid"))
    status = _text(fields.get("MessageStatus") or fields.get("SmsStatus") or fields.get("CallStatus"))
    # A status callback comes once per status change of a message: sid + status is the event.
    event_id = f"{sid}:{status}" if sid and status else _content_id(request.body)
    return [InboxEvent(event_id[:MAX_ID], status, fields)]


def _sendgrid(request: SignedRequest) -> list[InboxEvent]:
    body = _json(request, "SendGrid")
    if not isinstance(body, list):
        raise WebhookRejected(400, "SendGrid event webhook body is not a JSON array")
    events = []
    for item in body:
        if not isinstance(item, dict):
            raise WebhookRejected(400, "SendGrid event webhook body holds a non-object")
        raw = json.dumps(item, sort_keys=True).encode()
        events.append(
            InboxEvent(_text(item.get("sg_event_id")) or _content_id(raw), _text(item.get("event")), item)
        )
    return events


def _hubspot(request: SignedRequest) -> list[InboxEvent]:
    body = _json(request, "HubSpot")
    items = body if isinstance(body, list) else [body]
    events = []
    for item in items:
        if not isinstance(item, dict):
            raise WebhookRejected(400, "HubSpot webhook body holds a non-object")
        raw = json.dumps(item, sort_keys=True).encode()
        event_id = _text(item.get("eventId")) or _content_id(raw)
        events.append(InboxEvent(event_id, _text(item.get("subscriptionType")), item))
    return events


def _slack(request: SignedRequest) -> list[InboxEvent]:
    if request.content_type == "application/x-www-form-urlencoded":  # slash commands, interactivity
        fields = _form(request)
        action = "command" if "command" in fields else "interaction"
        return [InboxEvent(_text(fields.get("trigger_id")) or _content_id(request.body), action, fields)]
    body = _object(_json(request, "Slack"), "Slack")
    inner = body.get("event")
    kind = (_text(inner.get("type")) if isinstance(inner, dict) else None) or _text(body.get("type"))
    return [InboxEvent(_text(body.get("event_id")) or _content_id(request.body), kind, body)]


def _telegram(request: SignedRequest) -> list[InboxEvent]:
    update = _object(_json(request, "Telegram"), "Telegram")
    update_id = _text(update.get("update_id"))
    if not update_id:
        raise WebhookRejected(400, "Telegram update has no update_id")
    kind = next((k for k in update if k != "update_id"), None)
    return [InboxEvent(update_id, kind, update)]


def _paypal(request: SignedRequest) -> list[InboxEvent]:
    event = _object(_json(request, "PayPal"), "PayPal")
    event_id = _text(event.get("id")) or request.header("PAYPAL-TRANSMISSION-ID")
    if not event_id:
        raise WebhookRejected(400, "PayPal event has no id")
    return [InboxEvent(event_id, _text(event.get("event_type")), event)]


_SPLITTERS: dict[str, Callable[[SignedRequest], list[InboxEvent]]] = {
    "stripe": _stripe,
    "twilio": _twilio,
    "sendgrid": _sendgrid,
    "hubspot": _hubspot,
    "slack": _slack,
    "telegram": _telegram,
    "paypal": _paypal,
}


def split_events(provider: str, request: SignedRequest) -> list[InboxEvent]:
    """The events of a verified delivery (`WebhookRejected` 400 when its body is not the provider's shape)."""
    return _SPLITTERS[provider](request)


def slack_challenge(request: SignedRequest) -> str | None:
    """The `challenge` of a Slack `url_verification` request, which is answered, not stored."""
    if request.content_type == "application/x-www-form-urlencoded":
        return None
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(body, dict) and body.get("type") == "url_verification":
        challenge = body.get("challenge")
        return challenge if isinstance(challenge, str) else None
    return None
