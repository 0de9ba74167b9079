"""Each emulator pushes its provider's own webhook, signed as that provider signs, to the real
receiver (`esm webhooks serve`'s app under uvicorn on loopback), and the events land in the inbox
under the provider's event ids; signed with the wrong key, every attempt is refused and nothing is
stored. The path from the inbox on (sensor, run, table) is the same for every provider and is
proved for Stripe in `test_emulator_webhooks_stripe.py`."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.models import ExternalSystemMapping, WebhookInboxEvent
from esm_dagster.sandbox.hubspot import HubSpotEmulator
from esm_dagster.sandbox.paypal import PayPalEmulator
from esm_dagster.sandbox.sendgrid import SendGridEmulator
from esm_dagster.sandbox.slack import SlackEmulator
from esm_dagster.sandbox.telegram import TelegramEmulator
from esm_dagster.sandbox.twilio import TwilioEmulator
from esm_dagster.sandbox.webhook_sender import RetryPolicy, WebhookSender
from esm_dagster.sandbox.webhook_signers import paypal_signing_identity, sendgrid_keypair
from esm_dagster.security.vault import Vault
from esm_dagster.webhooks.serve import BackgroundServer
from esm_dagster_tests.webhooks.deliveries import add_mapping

FAST = RetryPolicy(attempts=3, first_wait=0.05, max_wait=0.2)


@pytest.fixture
def server(db_url: str, fernet_key: str) -> Iterator[BackgroundServer]:
    with BackgroundServer(db_url) as running:
        yield running


def inbox(url: str, mapping_id: str) -> list[WebhookInboxEvent]:
    with session_factory(url)() as session:
        rows = session.scalars(
            sa.select(WebhookInboxEvent).where(WebhookInboxEvent.mapping_id == uuid.UUID(mapping_id))
        ).all()
        session.expunge_all()
    return list(rows)


def statuses(sender: WebhookSender) -> list[tuple[int, int | None]]:
    assert sender.drain(10)
    return [(a.attempt, a.status) for a in sender.attempts]


def endpoint(server: BackgroundServer, mapping_id: str) -> str:
    return f"{server.url}/webhooks/{mapping_id}"


# ---- Twilio ---------------------------------------------------------------------------------------
ACCOUNT = "AC" + "7" * 32
AUTH_TOKEN = "twilio_auth_token_0123456789abcdef"


@pytest.mark.parametrize("forged", [False, True])
def test_twilio_status_callbacks(db_url: str, server: BackgroundServer, forged: bool) -> None:
    mapping = add_mapping(db_url, "twilio", {"account_sid": ACCOUNT, "auth_token": AUTH_TOKEN})
    with TwilioEmulator(account_sid=ACCOUNT, auth_token=AUTH_TOKEN, messages=3) as emulator:
        sender = emulator.send_status_callbacks(
            endpoint(server, mapping), auth_token="not-the-auth-token-000000" if forged else None
        )
        created = httpx.post(
            f"{emulator.url}/2010-04-01/Accounts/{ACCOUNT}/Messages.json",
            data={"To": "+66811112222", "From": "+15005550006", "Body": "Court 3 at 18:00"},
            auth=(ACCOUNT, AUTH_TOKEN),
        )
        assert created.status_code == 201 and created.json()["status"] == "queued"
        sid = created.json()["sid"]
        if forged:  # Twilio does not retry a status callback: one refused attempt each
            assert statuses(sender) == [(1, 401), (1, 401)]
            assert inbox(db_url, mapping) == []
            return
        assert statuses(sender) == [(1, 200), (1, 200)]
        emulator.set_status(sid, "undelivered", error_code=30003)
        assert statuses(sender)[-1] == (1, 200)
    expected = [f"{sid}:sent", f"{sid}:delivered", f"{sid}:undelivered"]
    assert [a.event_id for a in sender.attempts] == expected  # in the order the statuses changed
    rows = {r.event_id: r for r in inbox(db_url, mapping)}
    assert sorted(rows) == sorted(expected)
    failed = rows[f"{sid}:undelivered"].payload
    assert failed["ErrorCode"] == "30003" and failed["To"] == "+66811112222"


# ---- Slack ----------------------------------------------------------------------------------------
SLACK_TOKEN = "xoxb-123-456-emulatorPushesEvents"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


@pytest.mark.parametrize("forged", [False, True])
def test_slack_events_api(db_url: str, server: BackgroundServer, forged: bool) -> None:
    mapping = add_mapping(db_url, "slack", {"signing_secret": SIGNING_SECRET})
    with SlackEmulator(tokens=[SLACK_TOKEN], users=4, channels=2, messages_per_channel=1) as emulator:
        secret = "0" * 32 if forged else SIGNING_SECRET
        sender = emulator.send_events(endpoint(server, mapping), secret, retry=FAST)
        channel = emulator.channels()[0]["id"]
        posted = httpx.post(
            f"{emulator.url}/api/chat.postMessage",
            json={"channel": channel, "text": "Ladder results are up"},
            headers={"Authorization": f"Bearer {SLACK_TOKEN}"},
        ).json()
        assert posted["ok"] is True
        if forged:  # url_verification and the event: three refused attempts each
            assert sorted(statuses(sender)) == [(1, 401), (1, 401), (2, 401), (2, 401), (3, 401), (3, 401)]
            assert not emulator.events_url_verified and inbox(db_url, mapping) == []
            return
        assert statuses(sender) == [(1, 200), (1, 200)]
        assert emulator.events_url_verified  # the receiver echoed the challenge
    (row,) = inbox(db_url, mapping)
    assert row.event_id.startswith("Ev") and row.event_type == "message"
    assert row.payload["type"] == "event_callback"
    assert row.payload["event"]["ts"] == posted["ts"] and row.payload["event"]["channel"] == channel


def test_slack_retries_a_non_2xx_answer_with_a_new_signature(
    db_url: str, server: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The mapping's signing secret is not set yet: the receiver answers 503, the emulator retries,
    and once the secret is set the retried (re-signed) event is accepted."""
    caplog.set_level(logging.INFO)
    mapping = add_mapping(db_url, "slack", {})
    with SlackEmulator(tokens=[SLACK_TOKEN], users=4, channels=2, messages_per_channel=1) as emulator:
        retry = RetryPolicy(attempts=3, first_wait=0.5, max_wait=0.5)
        sender = emulator.send_events(endpoint(server, mapping), SIGNING_SECRET, retry=retry)
        emulator.add_message(emulator.channels()[0]["id"], emulator.users()[0]["id"], "Anyone for doubles?")
        deadline = time.monotonic() + 5
        while len(sender.attempts) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        with session_factory(db_url).begin() as session:
            row = session.get(ExternalSystemMapping, uuid.UUID(mapping))
            assert row is not None
            row.credentials = Vault.from_env().encrypt({"signing_secret": SIGNING_SECRET})
        assert sorted(statuses(sender)) == [(1, 503), (1, 503), (2, 200), (2, 200)]
    (row,) = inbox(db_url, mapping)
    assert (
        row.payload["event"]["text"] == "Anyone for doubles?"
        and row.payload["event"]["channel_type"] == "channel"
    )
    assert SIGNING_SECRET not in caplog.text


# ---- HubSpot --------------------------------------------------------------------------------------
HUBSPOT_TOKEN = "pat-na1-00000000-emulator-pushes"
CLIENT_SECRET = "hubspot-app-client-secret-0001"


@pytest.mark.parametrize("forged", [False, True])
def test_hubspot_contact_batches(db_url: str, server: BackgroundServer, forged: bool) -> None:
    mapping = add_mapping(db_url, "hubspot", {"client_secret": CLIENT_SECRET})
    with HubSpotEmulator([HUBSPOT_TOKEN], contacts=3, archived=0) as emulator:
        existing = emulator.contacts()[0]
        secret = "another-apps-secret" if forged else CLIENT_SECRET
        sender = emulator.send_webhooks(endpoint(server, mapping), secret, retry=FAST)
        upsert = httpx.post(
            f"{emulator.url}/crm/v3/objects/contacts/batch/upsert",
            json={
                "inputs": [
                    {
                        "idProperty": "email",
                        "id": "new.member@padel.example",
                        "properties": {"firstname": "Nok"},
                    },
                    {
                        "idProperty": "email",
                        "id": existing["properties"]["email"],
                        "properties": {"firstname": existing["properties"]["firstname"] + "x"},
                    },
                ]
            },
            headers={"Authorization": f"Bearer {HUBSPOT_TOKEN}"},
        )
        assert upsert.status_code == 200
        if forged:
            assert statuses(sender) == [(1, 401), (2, 401), (3, 401)]
            assert inbox(db_url, mapping) == []
            return
        assert statuses(sender) == [(1, 200)]  # one call, one batch
    new = next(r for r in upsert.json()["results"] if r["new"])
    rows = inbox(db_url, mapping)
    seen = {(r.event_type, r.payload["objectId"], r.payload.get("propertyName")) for r in rows}
    assert seen == {
        ("contact.creation", int(new["id"]), None),
        ("contact.propertyChange", int(new["id"]), "email"),
        ("contact.propertyChange", int(new["id"]), "firstname"),
        ("contact.propertyChange", int(existing["id"]), "firstname"),
    }
    assert len({r.event_id for r in rows}) == 4


# ---- SendGrid -------------------------------------------------------------------------------------
SENDGRID_KEY = "SG.emulator-pushes.events-0000000000000"


@pytest.mark.parametrize("forged", [False, True])
def test_sendgrid_event_webhook(db_url: str, server: BackgroundServer, forged: bool) -> None:
    private, public = sendgrid_keypair()
    mapping = add_mapping(
        db_url, "sendgrid", {"webhook_public_key": sendgrid_keypair()[1] if forged else public}
    )
    with SendGridEmulator(api_keys=[SENDGRID_KEY], contacts=2, suppressions=1) as emulator:
        sender = emulator.send_event_webhook(endpoint(server, mapping), private_key=private, retry=FAST)
        assert emulator.verification_key == public
        sent = httpx.post(
            f"{emulator.url}/v3/mail/send",
            json={
                "personalizations": [
                    {
                        "to": [{"email": "Ann@padel.example"}, {"email": "bo@padel.example"}],
                        "custom_args": {"booking": "B-17"},
                    }
                ],
                "from": {"email": "club@padel.example"},
                "subject": "Your booking",
                "content": [{"type": "text/plain", "value": "See you on court 2"}],
            },
            headers={"Authorization": f"Bearer {SENDGRID_KEY}"},
        )
        assert sent.status_code == 202
        if forged:
            assert statuses(sender) == [(1, 401), (2, 401), (3, 401)]
            assert inbox(db_url, mapping) == []
            return
        assert statuses(sender) == [(1, 200)]
    rows = inbox(db_url, mapping)
    assert sorted((r.payload["email"], r.event_type) for r in rows) == [
        ("ann@padel.example", "delivered"),
        ("ann@padel.example", "processed"),
        ("bo@padel.example", "delivered"),
        ("bo@padel.example", "processed"),
    ]
    assert all(r.payload["booking"] == "B-17" and r.event_id == r.payload["sg_event_id"] for r in rows)
    assert all(r.payload["sg_message_id"].startswith(sent.headers["X-Message-Id"]) for r in rows)


# ---- Telegram -------------------------------------------------------------------------------------
BOT_TOKEN = "123456789:AAEmulatorPushesUpdates0000000000"
SECRET_TOKEN = "club_webhook-secret_0001"


def bot(emulator: TelegramEmulator, method: str, **params: object) -> dict[str, object]:
    return dict(httpx.post(f"{emulator.url}/bot{BOT_TOKEN}/{method}", json=params).json())


@pytest.mark.parametrize("forged", [False, True])
def test_telegram_set_webhook_pushes_updates(db_url: str, server: BackgroundServer, forged: bool) -> None:
    mapping = add_mapping(db_url, "telegram", {"bot_token": BOT_TOKEN, "secret_token": SECRET_TOKEN})
    with TelegramEmulator(tokens=[BOT_TOKEN], updates=3) as emulator:
        emulator.webhook_retry = FAST
        given = "someone_elses_token" if forged else SECRET_TOKEN
        answer = bot(
            emulator,
            "setWebhook",
            url=endpoint(server, mapping),
            secret_token=given,
            drop_pending_updates=True,
        )
        assert answer == {"ok": True, "result": True}
        assert bot(emulator, "getUpdates")["error_code"] == 409  # pushed now, not polled
        chat = emulator.chats()[0]["id"]
        update = emulator.add_update(chat, "Is court 4 free at 7?")
        assert emulator.webhooks is not None
        sender = emulator.webhooks
        if forged:
            assert statuses(sender) == [(1, 401), (2, 401), (3, 401)]
            assert inbox(db_url, mapping) == []
            info = bot(emulator, "getWebhookInfo")["result"]
            assert isinstance(info, dict) and info["pending_update_count"] == 1  # given up on, kept
            return
        assert statuses(sender) == [(1, 200)]
        assert emulator.pending_updates() == []  # delivered, so confirmed
        assert all(given not in r.query for r in emulator.requests)  # the request log masks it
    (row,) = inbox(db_url, mapping)
    assert row.event_id == str(update["update_id"]) and row.event_type == "message"
    assert row.payload["message"]["text"] == "Is court 4 free at 7?"


# ---- PayPal ---------------------------------------------------------------------------------------
CLIENT_ID, CLIENT_SECRET_PP = "AbCdEfClientId0001", "EFGHclientSecret0001"
WEBHOOK_ID = "4JH86294D6297924G"


@pytest.mark.parametrize("forged", [False, True])
def test_paypal_capture_completed(db_url: str, server: BackgroundServer, forged: bool) -> None:
    identity = paypal_signing_identity()
    pinned = paypal_signing_identity()[1] if forged else identity[1]
    mapping = add_mapping(db_url, "paypal", {"webhook_id": WEBHOOK_ID, "webhook_cert": pinned})
    with PayPalEmulator(clients={CLIENT_ID: CLIENT_SECRET_PP}, transactions=2) as emulator:
        sender = emulator.send_webhooks(
            endpoint(server, mapping), WEBHOOK_ID, signing_identity=identity, retry=FAST
        )
        assert emulator.webhook_cert == identity[1]
        with httpx.Client(base_url=emulator.url) as client:
            token = client.post(
                "/v1/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=(CLIENT_ID, CLIENT_SECRET_PP),
            ).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            order = client.post(
                "/v2/checkout/orders",
                json={
                    "intent": "CAPTURE",
                    "purchase_units": [{"amount": {"currency_code": "THB", "value": "450.00"}}],
                },
                headers=auth,
            ).json()
            emulator.approve(order["id"])
            captured = client.post(f"/v2/checkout/orders/{order['id']}/capture", headers=auth)
        assert captured.status_code in (200, 201)
        if forged:
            assert statuses(sender) == [(1, 401), (2, 401), (3, 401)]
            assert inbox(db_url, mapping) == []
            return
        assert statuses(sender) == [(1, 200)]
    capture = captured.json()["purchase_units"][0]["payments"]["captures"][0]
    (row,) = inbox(db_url, mapping)
    assert row.event_id.startswith("WH-") and row.event_type == "PAYMENT.CAPTURE.COMPLETED"
    assert row.payload["resource"]["id"] == capture["id"]
    assert row.payload["resource"]["amount"] == {"currency_code": "THB", "value": "450.00"}
    assert row.payload["resource"]["supplementary_data"]["related_ids"]["order_id"] == order["id"]
