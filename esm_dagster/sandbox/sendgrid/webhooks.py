"""SendGrid's Event Webhook as the emulator sends it: ECDSA-signed arrays of delivery events.

SendGrid posts a JSON array of events to the Event Webhook URL with
`X-Twilio-Email-Event-Webhook-Signature` (base64 DER ECDSA P-256 / SHA-256 over timestamp + raw
body) and `X-Twilio-Email-Event-Webhook-Timestamp` (PROVIDERS.md §3). The mapping holds the
verification key SendGrid shows (base64 DER SubjectPublicKeyInfo); the emulator keeps the private
half. Each accepted mail send gives `processed` then `delivered` for every `to` recipient, with
`email, timestamp, event, sg_event_id, sg_message_id` ([U] field list, as PROVIDERS.md says)
and the personalization's `custom_args` at the top level, as SendGrid puts them.

Retries: SendGrid retries a POST that does not get a 2xx for up to 24 hours (SendGrid's Event
Webhook docs; not in PROVIDERS.md). The emulator makes 3 tries, seconds apart.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from esm_dagster.sandbox.webhook_sender import RetryPolicy
from esm_dagster.sandbox.webhook_signers import sendgrid_headers

SENDGRID_RETRY = RetryPolicy(attempts=3, first_wait=0.5, max_wait=5.0)


@dataclass(frozen=True, slots=True)
class SendGridWebhookConfig:
    url: str
    private_key: ec.EllipticCurvePrivateKey

    def __repr__(self) -> str:  # the key object has no secret repr of its own to rely on
        return f"SendGridWebhookConfig(url={self.url!r}, private_key=***)"

    def sign(self, body: bytes, attempt: int) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            **sendgrid_headers(body, self.private_key, int(time.time())),
        }


def mail_events(message_id: str, body: dict[str, Any], now: int) -> list[dict[str, Any]]:
    """The events one accepted mail send produces: processed, then delivered, per recipient."""
    events: list[dict[str, Any]] = []
    for index, personalization in enumerate(body.get("personalizations") or []):
        custom = dict(body.get("custom_args") or {}) | dict(personalization.get("custom_args") or {})
        for recipient in personalization.get("to") or []:
            for kind in ("processed", "delivered"):
                event = {
                    "email": str(recipient["email"]).lower(),
                    "timestamp": now,
                    "event": kind,
                    "sg_event_id": secrets.token_urlsafe(16)[:22],
                    "sg_message_id": f"{message_id}.filter{index:04d}.{now}.0",
                    "smtp-id": f"<{message_id}@ismtpd0001p1lon1.sendgrid.net>",
                    **({"category": body["categories"]} if body.get("categories") else {}),
                    **custom,
                }
                if kind == "delivered":
                    event["response"] = "250 OK"
                events.append(event)
    return events


def encode(events: list[dict[str, Any]]) -> bytes:
    return json.dumps(events, separators=(",", ":")).encode()
