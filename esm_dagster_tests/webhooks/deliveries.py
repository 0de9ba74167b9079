"""Test helpers: catalog mappings that receive webhooks, and each provider's deliveries signed the
way that provider signs them (`esm_dagster.sandbox.webhook_signers`)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.models import ExternalSystemMapping
from esm_dagster.sandbox import webhook_signers as signers
from esm_dagster.security.vault import Vault

JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PAYPAL_WEBHOOK_ID = "8PT597110X687430LKGECATA"


def add_mapping(
    url: str,
    provider: str,
    credentials: dict[str, str],
    *,
    system_name: str | None = None,
    mapping_rules: dict[str, Any] | None = None,
) -> str:
    """A mapping row as `esm mapping add` leaves it (credentials encrypted), for any provider name:
    the receiver needs no provider client, only the row and its key."""
    with session_factory(url).begin() as session:
        row = ExternalSystemMapping(
            id=uuid.uuid4(),
            system_name=system_name or f"{provider.title()} Webhooks",
            system_type="payment_gateway",
            provider_name=provider,
            api_endpoint="https://api.example",
            authentication_type="webhook",
            credentials=Vault.from_env().encrypt(credentials),
            mapping_rules=mapping_rules or {},
            sync_frequency="real_time",
        )
        session.add(row)
    return str(row.id)


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes


@dataclass
class Provider:
    """How one provider signs: `sign(url, n, when)` is the delivery of event number n signed at
    unix time `when` for the webhook URL; `secret` is the value that must never leak."""

    name: str
    credentials: dict[str, str]
    secret: str
    sign: Callable[[str, int, int], Delivery]
    timestamped: bool  # signs a time inside the signature (so a retry is signed anew)
    window: bool  # the provider documents a time window we enforce
    events_per_delivery: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def stripe() -> Provider:
    secret = "whsec_test_Q2Fv1nXb7Lr4sT9uWc3yZ8aD"

    def sign(url: str, n: int, when: int) -> Delivery:
        body = json.dumps(
            {
                "id": f"evt_1Webhook{n:04d}",
                "object": "event",
                "api_version": "2026-10-28.endive",
                "created": when,
                "type": "payment_intent.succeeded",
                "data": {
                    "object": {
                        "id": f"pi_{n}",
                        "object": "payment_intent",
                        "client_secret": f"pi_{n}_secret_x",
                    }
                },
                "livemode": False,
                "pending_webhooks": 1,
                "request": {"id": None, "idempotency_key": None},
            }
        ).encode()
        return Delivery(
            {**JSON, "Stripe-Signature": signers.stripe_signature_header(body, secret, when)}, body
        )

    return Provider(
        "stripe", {"api_key": "sk_test_apikeyapikey0001", "webhook_secret": secret}, secret, sign, True, True
    )


def twilio() -> Provider:
    token = "twilio-auth-token-7f3a9c"

    def sign(url: str, n: int, when: int) -> Delivery:
        params = {
            "MessageSid": f"SM{n:032d}",
            "MessageStatus": "delivered",
            "AccountSid": "AC" + "0" * 32,
            "To": "+15558881111",
        }
        return Delivery(
            {**FORM, "X-Twilio-Signature": signers.twilio_signature(url, params, token)},
            signers.twilio_form(params),
        )

    return Provider(
        "twilio", {"account_sid": "AC" + "0" * 32, "auth_token": token}, token, sign, False, False
    )


def sendgrid() -> Provider:
    private, public = signers.sendgrid_keypair()

    def sign(url: str, n: int, when: int) -> Delivery:
        events = [
            {
                "email": f"m{n}@club.example",
                "timestamp": when,
                "event": "delivered",
                "sg_event_id": f"sg{n}a",
            },
            {"email": f"m{n}@club.example", "timestamp": when, "event": "open", "sg_event_id": f"sg{n}b"},
        ]
        body = json.dumps(events).encode()
        return Delivery({**JSON, **signers.sendgrid_headers(body, private, when)}, body)

    # The verification key is public: what must not leak is the API key next to it.
    api_key = "SG.sendgridkey000000.sendgridsecret000000"
    return Provider(
        "sendgrid",
        {"api_key": api_key, "webhook_public_key": public},
        api_key,
        sign,
        True,
        False,
        events_per_delivery=2,
    )


def slack() -> Provider:
    secret = "slack-signing-secret-5c1e0d"

    def sign(url: str, n: int, when: int) -> Delivery:
        body = json.dumps(
            {
                "token": "legacy-verification-token",
                "team_id": "T1",
                "type": "event_callback",
                "event_id": f"Ev{n:08d}",
                "event": {"type": "message", "text": "court 3 booked", "ts": f"{when}.000100"},
            }
        ).encode()
        return Delivery({**JSON, **signers.slack_headers(body, secret, when)}, body)

    return Provider(
        "slack", {"bot_token": "xoxb-slackbottoken0001", "signing_secret": secret}, secret, sign, True, True
    )


def hubspot() -> Provider:
    secret = "hubspot-client-secret-93b1"

    def sign(url: str, n: int, when: int) -> Delivery:
        body = json.dumps(
            [
                {
                    "eventId": 1000 + n,
                    "subscriptionType": "contact.propertyChange",
                    "objectId": n,
                    "occurredAt": when * 1000,
                }
            ]
        ).encode()
        return Delivery({**JSON, **signers.hubspot_headers("POST", url, body, secret, when * 1000)}, body)

    return Provider(
        "hubspot", {"access_token": "pat-na1-hubspottoken", "client_secret": secret}, secret, sign, True, True
    )


def telegram() -> Provider:
    token = "telegram_webhook-Secret_42"

    def sign(url: str, n: int, when: int) -> Delivery:
        body = json.dumps(
            {"update_id": 5000 + n, "message": {"message_id": n, "date": when, "text": "hello"}}
        ).encode()
        return Delivery({**JSON, **signers.telegram_headers(token)}, body)

    return Provider(
        "telegram",
        {"bot_token": "123456:telegram-bot-token", "webhook_secret": token},
        token,
        sign,
        False,
        False,
    )


def paypal() -> Provider:
    key, cert = signers.paypal_signing_identity()

    def sign(url: str, n: int, when: int) -> Delivery:
        body = json.dumps(
            {"id": f"WH-{n:06d}-8HN650336L201105X", "event_type": "PAYMENT.CAPTURE.COMPLETED"}
        ).encode()
        moment = dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = signers.paypal_headers(
            body, PAYPAL_WEBHOOK_ID, key, transmission_id=f"tx-{n}-{when}", transmission_time=moment
        )
        return Delivery({**JSON, **headers}, body)

    client_secret = "paypal-client-secret-0b7e"
    credentials = {
        "client_id": "paypal-client",
        "client_secret": client_secret,
        "webhook_id": PAYPAL_WEBHOOK_ID,
        "webhook_cert": cert,
    }
    return Provider("paypal", credentials, client_secret, sign, True, False)


PROVIDERS: dict[str, Callable[[], Provider]] = {
    "stripe": stripe,
    "twilio": twilio,
    "sendgrid": sendgrid,
    "slack": slack,
    "hubspot": hubspot,
    "telegram": telegram,
    "paypal": paypal,
}
