"""HubSpot's webhooks as the emulator sends them: v3-signed batches of contact events.

HubSpot posts a JSON array of events (up to 100 a request) to the app's target URL, signed with
`X-HubSpot-Signature-v3 = base64(HMAC-SHA256(client secret, method + uri + body + timestamp))`
and `X-HubSpot-Request-Timestamp` in milliseconds (PROVIDERS.md §4). One API call that changes
several contacts or properties gives one batch. Event fields follow the v1 body PROVIDERS.md lists
(`eventId, subscriptionId, portalId, occurredAt, subscriptionType, attemptNumber, objectId,
changeSource, appId`) plus `propertyName` / `propertyValue` on `contact.propertyChange` [U: those
two are HubSpot's documented names, not in PROVIDERS.md].

Retries: HubSpot retries a delivery that fails or answers non-2xx up to 10 times over 24 hours
(HubSpot's webhooks docs; not in PROVIDERS.md). The emulator makes 3 tries, seconds apart, and
keeps `attemptNumber` at 0 since the body is signed once per batch.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from esm_dagster.sandbox.webhook_sender import RetryPolicy
from esm_dagster.sandbox.webhook_signers import hubspot_headers
from esm_dagster.security.secret import Secret

HUBSPOT_RETRY = RetryPolicy(attempts=3, first_wait=0.5, max_wait=5.0)
MAX_BATCH = 100
# The subscriptions an app typically has for contacts; the emulator sends propertyChange events
# for these properties only (HubSpot sends one subscription per property).
DEFAULT_PROPERTIES = ("email", "firstname", "lastname", "phone")


@dataclass(frozen=True, slots=True)
class HubSpotWebhookConfig:
    url: str
    client_secret: Secret
    properties: tuple[str, ...] = DEFAULT_PROPERTIES
    app_id: int = 1160452
    portal_id: int = 62515
    subscription_ids: tuple[int, int] = (2181234, 2181235)  # creation, propertyChange

    def event(
        self, event_id: int, kind: str, object_id: int, occurred_ms: int, **extra: Any
    ) -> dict[str, Any]:
        subscription = self.subscription_ids[0 if kind == "contact.creation" else 1]
        return {
            "eventId": event_id,
            "subscriptionId": subscription,
            "portalId": self.portal_id,
            "appId": self.app_id,
            "occurredAt": occurred_ms,
            "subscriptionType": kind,
            "attemptNumber": 0,
            "objectId": object_id,
            "changeSource": "CRM",
            "changeFlag": "NEW" if kind == "contact.creation" else "UPDATED",
            **extra,
        }

    def batches(self, events: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
        """(a name for the log, body) per request of at most 100 events."""
        out = []
        for start in range(0, len(events), MAX_BATCH):
            chunk = events[start : start + MAX_BATCH]
            name = f"hubspot:{chunk[0]['eventId']}-{chunk[-1]['eventId']}"
            out.append((name, json.dumps(chunk, separators=(",", ":")).encode()))
        return out

    def sign(self, body: bytes, attempt: int) -> dict[str, str]:
        headers = hubspot_headers("POST", self.url, body, self.client_secret, int(time.time() * 1000))
        return {
            "Content-Type": "application/json",
            "User-Agent": "HubSpot Connect 2.0 (http://dev.hubspot.com/)",
            **headers,
        }
