"""Twilio's message status callbacks as the emulator sends them.

Each status change of a message is a form POST to its StatusCallback URL, signed
`X-Twilio-Signature = base64(HMAC-SHA1(Auth Token, url + sorted name+value pairs))` (PROVIDERS.md
§2). The fields are `MessageSid, SmsSid, MessageStatus, SmsStatus, AccountSid, From, To,
ApiVersion` and `ErrorCode` on a failure; PROVIDERS.md marks that list [U].

Retries: Twilio does not retry a status callback that answers non-2xx; it retries only a failed
connection, and only when the URL carries connection overrides such as `#rc=` (Twilio's webhook
docs; not in PROVIDERS.md). The emulator's default is therefore one attempt (`TWILIO_RETRY`); give
a `RetryPolicy` to play the connection-override case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from esm_dagster.sandbox.webhook_sender import RetryPolicy, Signer
from esm_dagster.sandbox.webhook_signers import twilio_form, twilio_signature
from esm_dagster.security.secret import Secret

TWILIO_RETRY = RetryPolicy(attempts=1)
# What a carrier reports after `queued`, in order, when the emulator delivers a message itself.
DELIVERY_PATH = ("sent", "delivered")
FAILED = frozenset({"failed", "undelivered"})
# The Message status enum (PROVIDERS.md §2).
MESSAGE_STATUSES = frozenset(
    [
        "queued",
        "sending",
        "sent",
        "failed",
        "delivered",
        "undelivered",
        "receiving",
        "received",
        "accepted",
        "scheduled",
        "read",
        "partially_delivered",
        "canceled",
    ]
)


@dataclass(frozen=True, slots=True)
class StatusCallbacks:
    url: str
    auth_token: Secret

    def params(self, message: dict[str, Any], error_code: int | None) -> dict[str, str]:
        fields = {
            "MessageSid": message["sid"],
            "SmsSid": message["sid"],
            "MessageStatus": message["status"],
            "SmsStatus": message["status"],
            "AccountSid": message["account_sid"],
            "From": message["from"] or "",
            "To": message["to"],
            "ApiVersion": "2010-04-01",
        }
        if message.get("messaging_service_sid"):
            fields["MessagingServiceSid"] = message["messaging_service_sid"]
        if error_code is not None:
            fields["ErrorCode"] = str(error_code)
        return fields

    def delivery(self, message: dict[str, Any], error_code: int | None = None) -> tuple[str, bytes, Signer]:
        """(event name, form body, signer) of the callback for the message's current status."""
        params = self.params(message, error_code)
        signature = twilio_signature(self.url, params, self.auth_token)

        def sign(body: bytes, attempt: int) -> dict[str, str]:
            return {
                "Content-Type": "application/x-www-form-urlencoded",
                "User-Agent": "TwilioProxy/1.1",
                "X-Twilio-Signature": signature,
            }

        return f"{message['sid']}:{message['status']}", twilio_form(params), sign
