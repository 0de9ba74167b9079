"""Slack's Events API as the emulator sends it: `url_verification`, then signed `event_callback`s.

When an app's Request URL is set, Slack first posts `{type:"url_verification",challenge}` and
expects the challenge back; then every subscribed event comes in an `event_callback` envelope,
signed `X-Slack-Signature: v0=hex(HMAC-SHA256(signing secret, "v0:" + ts + ":" + body))` with
`X-Slack-Request-Timestamp` (PROVIDERS.md §8), re-signed on every attempt.

Retries: Slack retries a delivery not answered 2xx within 3 seconds three times (nearly at once,
after a minute, after five), each with `X-Slack-Retry-Num` and `X-Slack-Retry-Reason` (Slack's
Events API docs; the headers are [U] in PROVIDERS.md). The emulator keeps the shape (4 tries, the
waits growing fivefold) in seconds. The deprecated verification `token` field is left out.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from esm_dagster.sandbox.slack.data import TEAM_ID
from esm_dagster.sandbox.webhook_sender import RetryPolicy
from esm_dagster.sandbox.webhook_signers import slack_headers
from esm_dagster.security.secret import Secret

SLACK_RETRY = RetryPolicy(attempts=4, first_wait=0.1, factor=5.0, max_wait=2.5)
APP_ID = "A0PADELAPP1"


@dataclass(frozen=True, slots=True)
class SlackEventsConfig:
    url: str
    signing_secret: Secret

    def sign(self, body: bytes, attempt: int) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            **slack_headers(body, self.signing_secret, int(time.time())),
        }
        if attempt > 1:
            headers |= {"X-Slack-Retry-Num": str(attempt - 1), "X-Slack-Retry-Reason": "http_error"}
        return headers


def url_verification() -> tuple[bytes, str]:
    """The verification body and its challenge."""
    challenge = secrets.token_urlsafe(24)
    return json.dumps({"type": "url_verification", "challenge": challenge}).encode(), challenge


def challenge_echoed(challenge: str) -> Callable[[httpx.Response], bool]:
    def check(response: httpx.Response) -> bool:
        text = response.text.strip()
        if text == challenge:  # Slack takes the bare challenge, or JSON carrying it
            return True
        try:
            body = response.json()
        except ValueError:
            return False
        return isinstance(body, dict) and body.get("challenge") == challenge

    return check


def event_callback(event: dict[str, Any], bot_user: str, now: int) -> tuple[str, bytes]:
    """(event_id, body) of one event in its envelope."""
    event_id = "Ev" + secrets.token_hex(5).upper()
    envelope = {
        "team_id": TEAM_ID,
        "api_app_id": APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": now,
        "authorizations": [
            {"team_id": TEAM_ID, "user_id": bot_user, "is_bot": True, "is_enterprise_install": False}
        ],
        "is_ext_shared_channel": False,
    }
    return event_id, json.dumps(envelope, ensure_ascii=False).encode("utf-8")
