"""PayPal's webhooks as the emulator sends them: `PAYMENT.CAPTURE.COMPLETED`, RSA-signed.

PayPal signs `transmission_id|transmission_time|webhook_id|crc32(raw body)` (CRC32 in decimal)
with SHA256withRSA under the key of the certificate `PAYPAL-CERT-URL` points to, and sends the
`PAYPAL-TRANSMISSION-ID/-TIME/-SIG`, `PAYPAL-CERT-URL` and `PAYPAL-AUTH-ALGO` headers (PROVIDERS.md
§9, the offline check [3P]). The receiver pins the certificate on the mapping (`webhook_cert`) and
never fetches the URL, so the emulator makes its own signing identity and hands out its PEM.
Every attempt is a new transmission (its own id, time and signature); the event id stays.

Retries: PayPal retries a delivery not answered 2xx up to 25 times over 3 days (PROVIDERS.md §9
[D]). The emulator makes 3 tries, seconds apart.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from esm_dagster.sandbox.paypal.data import rfc3339
from esm_dagster.sandbox.webhook_sender import RetryPolicy
from esm_dagster.sandbox.webhook_signers import paypal_headers

PAYPAL_RETRY = RetryPolicy(attempts=3, first_wait=0.5, max_wait=5.0)
_EVENT_ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXY"
_EVENTS_URL = "https://api.sandbox.paypal.com/v1/notifications/webhooks-events"


@dataclass(frozen=True, slots=True)
class PayPalWebhookConfig:
    url: str
    webhook_id: str
    private_key: rsa.RSAPrivateKey

    def __repr__(self) -> str:
        return f"PayPalWebhookConfig(url={self.url!r}, webhook_id={self.webhook_id!r}, private_key=***)"

    def sign(self, body: bytes, attempt: int) -> dict[str, str]:
        headers = paypal_headers(
            body,
            self.webhook_id,
            self.private_key,
            transmission_id=str(uuid.uuid4()),
            transmission_time=rfc3339(time.time()),
        )
        return {"Content-Type": "application/json", "User-Agent": "PayPal/AUHD-214.0-58843921", **headers}


def _random_id() -> str:
    return "".join(secrets.choice(_EVENT_ALPHABET) for _ in range(17))


def capture_completed(
    order_id: str, capture: dict[str, Any], unit: dict[str, Any], now: float
) -> tuple[str, bytes]:
    """(event id, body) of the webhook event for one completed capture."""
    event_id = f"WH-{_random_id()}-{_random_id()}"
    amount = capture["amount"]
    resource: dict[str, Any] = {
        **capture,
        "final_capture": True,
        "update_time": capture["create_time"],
        "supplementary_data": {"related_ids": {"order_id": order_id}},
        **{k: unit[k] for k in ("custom_id", "invoice_id") if k in unit},
        "links": [
            {
                "href": f"https://api.sandbox.paypal.com/v2/payments/captures/{capture['id']}",
                "rel": "self",
                "method": "GET",
            }
        ],
    }
    event = {
        "id": event_id,
        "event_version": "1.0",
        "create_time": rfc3339(now),
        "resource_type": "capture",
        "resource_version": "2.0",
        "event_type": "PAYMENT.CAPTURE.COMPLETED",
        "summary": f"Payment completed for {amount['currency_code']} {amount['value']}",
        "resource": resource,
        "links": [
            {"href": f"{_EVENTS_URL}/{event_id}", "rel": "self", "method": "GET"},
            {"href": f"{_EVENTS_URL}/{event_id}/resend", "rel": "resend", "method": "POST"},
        ],
    }
    return event_id, json.dumps(event).encode()
