"""Which verifier a provider's webhooks go through, and which credential fields hold its key.

The key lives in the mapping's encrypted `credentials`, next to the API credentials, under the
field names below (the first present wins). Twilio signs with the account's Auth Token, HubSpot
with the app's client secret, so those mappings usually need no extra field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from esm_dagster.security.secret import Secret
from esm_dagster.webhooks.errors import WebhookRejected
from esm_dagster.webhooks.verifiers import (
    SignedRequest,
    verify_hubspot,
    verify_paypal,
    verify_sendgrid,
    verify_slack,
    verify_stripe,
    verify_telegram,
    verify_twilio,
)

Credentials = Mapping[str, Secret]


@dataclass(frozen=True, slots=True)
class Scheme:
    name: str
    key_fields: tuple[str, ...]
    check: Callable[[SignedRequest, Credentials, float, str], str | None]

    def key_field(self, credentials: Credentials) -> str | None:
        return next((f for f in self.key_fields if credentials.get(f)), None)

    def verify(
        self, request: SignedRequest, credentials: Credentials, *, now: float, mapping: str
    ) -> str | None:
        """The replay token of a verified request; `WebhookRejected` otherwise."""
        return self.check(request, credentials, now, mapping)


def _key(scheme: str, fields: tuple[str, ...], credentials: Credentials, mapping: str) -> Secret:
    for name in fields:
        value = credentials.get(name)
        if value:
            return value
    # 503, not 4xx: our configuration is missing, and the provider should keep retrying until
    # someone sets it rather than drop the event.
    raise WebhookRejected(
        503, f"mapping {mapping}: credentials.{fields[0]} is not set, so {scheme} webhooks cannot be verified"
    )


def _hmac_scheme(name: str, fields: tuple[str, ...], verify: Callable[..., str | None]) -> Scheme:
    def check(request: SignedRequest, credentials: Credentials, now: float, mapping: str) -> str | None:
        return verify(request, _key(name, fields, credentials, mapping), now=now)

    return Scheme(name, fields, check)


def _paypal(request: SignedRequest, credentials: Credentials, now: float, mapping: str) -> str | None:
    webhook_id = _key("PayPal", ("webhook_id",), credentials, mapping)
    cert = _key("PayPal", ("webhook_cert",), credentials, mapping)
    return verify_paypal(request, webhook_id.reveal(), cert, now=now)


SCHEMES: dict[str, Scheme] = {
    "stripe": _hmac_scheme("Stripe", ("webhook_secret",), verify_stripe),
    "twilio": _hmac_scheme("Twilio", ("webhook_secret", "auth_token"), verify_twilio),
    "sendgrid": _hmac_scheme("SendGrid", ("webhook_public_key",), verify_sendgrid),
    "slack": _hmac_scheme("Slack", ("signing_secret", "webhook_secret"), verify_slack),
    "hubspot": _hmac_scheme("HubSpot", ("client_secret", "webhook_secret"), verify_hubspot),
    "telegram": _hmac_scheme("Telegram", ("webhook_secret", "secret_token"), verify_telegram),
    "paypal": Scheme("PayPal", ("webhook_id",), _paypal),
}


def scheme_for(provider_name: str) -> Scheme | None:
    return SCHEMES.get(provider_name.strip().lower())


def receives_webhooks(provider_name: str, credentials: Credentials) -> bool:
    """A mapping gets its changes pushed when its provider signs webhooks and its key is set."""
    scheme = scheme_for(provider_name)
    return scheme is not None and scheme.key_field(credentials) is not None
