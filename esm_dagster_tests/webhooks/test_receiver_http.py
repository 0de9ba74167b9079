"""`esm webhooks serve` over real HTTP: the ASGI app under uvicorn on loopback, a real catalog.

For every provider: a correctly signed delivery is accepted once and lands in the inbox; the same
signed request again is a 409 replay; a provider retry (re-signed) is a 200 duplicate that adds
nothing; stale, tampered and unsigned ones get a clear 4xx; no secret reaches a response, a log
line or the inbox.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.models import WebhookInboxEvent
from esm_dagster.webhooks.serve import BackgroundServer
from esm_dagster_tests.webhooks.deliveries import PROVIDERS, Provider, add_mapping

SIGNATURE_HEADERS = {
    "stripe-signature", "x-twilio-signature", "x-twilio-email-event-webhook-signature",
    "x-slack-signature", "x-hubspot-signature-v3", "x-telegram-bot-api-secret-token",
    "paypal-transmission-sig",
}  # fmt: skip


@pytest.fixture
def server(db_url: str, fernet_key: str) -> Iterator[BackgroundServer]:
    with BackgroundServer(db_url, max_body_bytes=64 * 1024) as running:
        yield running


def inbox(url: str) -> list[WebhookInboxEvent]:
    with session_factory(url)() as session:
        return list(session.scalars(sa.select(WebhookInboxEvent).order_by(WebhookInboxEvent.event_id)))


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_signed_delivery_is_accepted_once_and_every_bad_one_refused(
    name: str, db_url: str, server: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    provider: Provider = PROVIDERS[name]()
    mapping_id = add_mapping(db_url, provider.name, provider.credentials)
    hook = f"{server.url}/webhooks/{mapping_id}"
    now = int(time.time())
    texts: list[str] = []
    with httpx.Client(timeout=10) as client:

        def post(headers: dict[str, str], body: bytes) -> httpx.Response:
            response = client.post(hook, headers=headers, content=body)
            texts.append(response.text)
            return response

        first = provider.sign(hook, 1, now)
        accepted = post(first.headers, first.body)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json() == {
            "status": "accepted",
            "stored": provider.events_per_delivery,
            "duplicates": 0,
        }

        again = post(first.headers, first.body)
        if name == "telegram":  # one constant token, no per-request signature: the update_id decides
            assert (again.status_code, again.json()["status"]) == (200, "duplicate")
        else:
            assert again.status_code == 409, again.text
            assert "replay" in again.json()["error"]

        if provider.timestamped:  # the provider's own retry is signed anew: acknowledged, not stored
            retry = provider.sign(hook, 1, now + 5)
            response = post(retry.headers, retry.body)
            assert response.status_code == 200 and response.json()["status"] == "duplicate", response.text

        if provider.window:
            old = provider.sign(hook, 2, now - 400)
            response = post(old.headers, old.body)
            assert response.status_code == 401 and "window is 300 s" in response.json()["error"], (
                response.text
            )

        fresh = provider.sign(hook, 3, now)
        if name == "telegram":
            forged = {**fresh.headers, "X-Telegram-Bot-Api-Secret-Token": "guessed-token"}
            response = post(forged, fresh.body)
        else:
            tampered = fresh.body.replace(b"delivered", b"bounced").replace(b"3", b"4")
            assert tampered != fresh.body
            response = post(fresh.headers, tampered)
        assert response.status_code == 401 and "match" in response.json()["error"], response.text

        unsigned = {k: v for k, v in fresh.headers.items() if k.lower() not in SIGNATURE_HEADERS}
        response = post(unsigned, fresh.body)
        assert response.status_code == 401 and response.json()["error"].startswith("missing "), response.text

    rows = inbox(db_url)
    assert len(rows) == provider.events_per_delivery
    assert {r.provider for r in rows} == {name} and {str(r.mapping_id) for r in rows} == {mapping_id}
    assert all(r.processed_at is None and r.received_at.tzinfo is not None and r.event_type for r in rows)
    stored = json.dumps([r.payload for r in rows])
    leaks = [v for v in [provider.secret, *provider.credentials.values()] if len(v) < 200 and v in stored]
    leaks += [v for v in provider.credentials.values() if any(v in t for t in [*texts, caplog.text])]
    assert not leaks
    if name == "stripe":
        assert rows[0].event_id == "evt_1Webhook0001" and rows[0].event_type == "payment_intent.succeeded"
        assert rows[0].payload["data"]["object"]["client_secret"] == "***"
    if name == "slack":
        assert rows[0].payload["token"] == "***" and rows[0].event_type == "message"


def test_routes_limits_and_configuration_errors(db_url: str, server: BackgroundServer) -> None:
    stripe = PROVIDERS["stripe"]()
    mapping_id = add_mapping(db_url, "stripe", stripe.credentials, system_name="Club Stripe")
    add_mapping(db_url, "slack", {"bot_token": "xoxb-1"}, system_name="Club Slack")  # no signing secret
    add_mapping(db_url, "mailchimp", {"api_key": "mc-key-us6"}, system_name="Club Mailchimp")
    add_mapping(db_url, "twilio", {"auth_token": "a"}, system_name="Twins")
    add_mapping(db_url, "twilio", {"auth_token": "b"}, system_name="twins")
    now = int(time.time())
    with httpx.Client(base_url=server.url, timeout=10) as client:
        by_slug = stripe.sign(f"{server.url}/webhooks/club_stripe", 1, now)
        response = client.post("/webhooks/club_stripe", headers=by_slug.headers, content=by_slug.body)
        assert response.status_code == 200 and response.json()["stored"] == 1, response.text

        big = b'{"id": "evt_big", "pad": "' + b"x" * (64 * 1024) + b'"}'
        response = client.post(
            f"/webhooks/{mapping_id}", headers=stripe.sign("", 9, now).headers, content=big
        )
        assert response.status_code == 413 and "larger than 65536 bytes" in response.json()["error"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
            for _ in range(80):
                yield b"y" * 1024

        response = client.post(
            f"/webhooks/{mapping_id}", headers={"Stripe-Signature": "t=1,v1=0"}, content=chunks()
        )
        assert response.status_code == 413

        response = client.post(f"/webhooks/{uuid.uuid4()}", content=b"{}")
        assert response.status_code == 404 and "no mapping" in response.json()["error"]
        response = client.post("/webhooks/twins", content=b"{}")
        assert response.status_code == 404 and "names 2 mappings" in response.json()["error"]
        response = client.post("/webhooks/club_mailchimp", content=b"{}")
        assert response.status_code == 404 and "sends no signed webhooks" in response.json()["error"]
        response = client.post("/webhooks/club_slack", content=b"{}")
        assert (
            response.status_code == 503
            and "credentials.signing_secret is not set" in response.json()["error"]
        )
        assert client.get(f"/webhooks/{mapping_id}").status_code == 405
        assert client.get("/healthz").json() == {"status": "ok"}
    assert [r.event_id for r in inbox(db_url)] == ["evt_1Webhook0001"]


def test_slack_url_verification_is_answered_not_stored(db_url: str, server: BackgroundServer) -> None:
    from esm_dagster.sandbox.webhook_signers import slack_headers

    secret = "slack-signing-secret-0000"
    mapping_id = add_mapping(db_url, "slack", {"signing_secret": secret})
    body = json.dumps(
        {
            "token": "t",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        }
    ).encode()
    response = httpx.post(
        f"{server.url}/webhooks/{mapping_id}",
        headers={"Content-Type": "application/json", **slack_headers(body, secret, int(time.time()))},
        content=body,
    )
    assert response.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    assert inbox(db_url) == []


def test_key_that_cannot_be_decrypted_is_a_503_without_the_key(
    db_url: str, server: BackgroundServer, monkeypatch
) -> None:
    from esm_dagster.security.vault import Vault, generate_key

    stripe = PROVIDERS["stripe"]()
    with monkeypatch.context() as patch:
        patch.setenv("ESM_FERNET_KEYS", generate_key())  # written under a key the server does not hold
        mapping_id = add_mapping(db_url, "stripe", stripe.credentials)
        assert Vault.from_env()
    delivery = stripe.sign("", 1, int(time.time()))
    response = httpx.post(
        f"{server.url}/webhooks/{mapping_id}", headers=delivery.headers, content=delivery.body
    )
    assert response.status_code == 503 and "cannot be decrypted" in response.json()["error"]
    assert stripe.secret not in response.text


def test_a_catalog_failure_is_a_500_the_provider_retries(
    db_url: str, server: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    from esm_dagster.catalog.db import get_engine

    stripe = PROVIDERS["stripe"]()
    mapping_id = add_mapping(db_url, "stripe", stripe.credentials)
    with get_engine(db_url).begin() as conn:
        conn.execute(sa.text("DROP TABLE esm_webhook_inbox"))
    delivery = stripe.sign("", 1, int(time.time()))
    response = httpx.post(
        f"{server.url}/webhooks/{mapping_id}", headers=delivery.headers, content=delivery.body
    )
    assert response.status_code == 500 and "retry later" in response.json()["error"]
    assert "not stored" in caplog.text
    assert stripe.secret not in response.text + caplog.text
