"""Outbound messages with fallback: real Twilio and Telegram emulators on loopback, real catalogs."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
from collections import Counter
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from esm_dagster.catalog import audit
from esm_dagster.catalog.circuit import circuit_of
from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.mappings import get_mapping
from esm_dagster.catalog.models import MessageStatus, OutboundMessage, Task
from esm_dagster.catalog.types import utcnow
from esm_dagster.providers.factory import build_provider
from esm_dagster.providers.markers import carries_marker
from esm_dagster.sandbox.slack import SlackEmulator
from esm_dagster.sandbox.telegram import TelegramEmulator
from esm_dagster.sandbox.twilio import TwilioEmulator
from esm_dagster.security.vault import Vault
from esm_dagster.sync.engine import SyncFailed, run_mapping
from esm_dagster.sync.messages import Dispatcher, dispatch, enqueue
from esm_dagster.sync.messages.dispatch import route_key
from esm_dagster.sync.messages.shaping import send_record
from esm_dagster_tests.providers.messaging_helpers import register_mapping
from esm_dagster_tests.sendgrid_fixtures import mapping as sendgrid_mapping
from esm_dagster_tests.sendgrid_fixtures import sendgrid_emulator
from esm_dagster_tests.sync.message_helpers import (
    BOT_TOKEN,
    MESSAGES_PATH,
    TWILIO_TOKEN,
    bot_mapping,
    mapping_id,
    messages,
    new_twilio_sends,
    queue,
    register_routes,
    sms_mapping,
    telegram_emulator,
    twilio_emulator,
)


@pytest.fixture
def twilio() -> Iterator[TwilioEmulator]:
    with twilio_emulator() as em:
        yield em


@pytest.fixture
def telegram() -> Iterator[TelegramEmulator]:
    with telegram_emulator() as em:
        yield em


@pytest.fixture
def catalog(db_url: str, fernet_key: str, twilio: TwilioEmulator, telegram: TelegramEmulator) -> str:
    return register_routes(db_url, twilio, telegram)


def test_enqueue_twice_with_one_key_is_one_message(catalog: str, telegram: TelegramEmulator) -> None:
    queue(catalog, telegram, 3)
    queue(catalog, telegram, 3)
    assert len(messages(catalog)) == 3
    with pytest.raises(ValueError, match="sends no messages"), session_factory(catalog).begin() as session:
        enqueue(session, "crm", "+14155550000", "hi", "k")


def test_two_processes_queueing_one_key_at_once_make_one_message(catalog: str) -> None:
    """The second waits for the first's transaction and then inserts nothing (ON CONFLICT)."""
    import threading
    import time

    inside = threading.Event()

    def first() -> bool:
        with session_factory(catalog).begin() as session:
            _, created = enqueue(session, "sms_provider", "+14155550101", "first", "same-key")
            inside.set()
            time.sleep(0.3)  # hold the transaction open while the second one tries
        return created

    def second() -> tuple[bool, str]:
        inside.wait(5)
        with session_factory(catalog).begin() as session:
            message, created = enqueue(session, "sms_provider", "+14155550101", "second", "same-key")
            return created, message.body

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        a, b = pool.submit(first), pool.submit(second)
        assert a.result() is True and b.result() == (False, "first")
    assert [m.body for m in messages(catalog)] == ["first"]


def test_a_failing_primary_sends_each_of_100_messages_once_through_the_fallback(
    catalog: str, twilio: TwilioEmulator, telegram: TelegramEmulator
) -> None:
    """The Done-when bullet: Twilio answers 500 to everything, sends and lookups alike."""
    queue(catalog, telegram, 100)
    twilio.faults.fail_next(100, status=500, path=MESSAGES_PATH)
    first = dispatch(catalog)
    # Three sends failed and their lookups failed too: unknown, held back; after three failures in
    # a row Twilio is skipped for the rest of the pass and the other 97 go to Telegram.
    assert (first.claimed, first.sent, first.waiting) == (100, 97, 3)
    held = [m for m in messages(catalog) if m.status == MessageStatus.QUEUED.value]
    assert [m.routing[-1]["outcome"] for m in held] == ["unknown"] * 3
    assert len(telegram.sent_messages()) == 97
    second = dispatch(catalog)  # Twilio still failing: the three stay unresolved, sent nowhere
    assert (second.claimed, second.sent, second.waiting) == (3, 0, 3)
    assert len(telegram.sent_messages()) == 97
    twilio.faults.clear()  # Twilio answers again: the lookups show the three were never sent
    third = dispatch(catalog)
    assert (third.sent, third.waiting) == (3, 0)

    bot = mapping_id(catalog, "club bot sms fallback/updates")
    rows = messages(catalog)
    assert {m.status for m in rows} == {MessageStatus.SENT.value}
    assert {m.routed_mapping_id for m in rows} == {bot}
    sent = telegram.sent_messages()
    assert len(sent) == 100 and new_twilio_sends(twilio) == []
    texts = Counter(m["text"] for m in sent)
    assert texts == Counter(f"Court {i} is booked for 18:00" for i in range(100))  # each exactly once
    assert {r.provider_message_id for r in rows} == {f"{m['chat']['id']}:{m['message_id']}" for m in sent}
    for row in rows:
        assert row.provider_message_id.split(":")[0] == str(row.payload["telegram_chat_id"])
        assert row.routing[-1]["outcome"] == "sent" and row.routing[-1]["mapping_id"] == str(bot)
        assert row.routing[0]["provider"] == "twilio" and row.routing[0]["outcome"] in ("unknown", "skipped")
    assert sum(1 for r in rows if r.routing[0]["outcome"] == "unknown") == 3
    assert sum(1 for r in rows if any(e["outcome"] == "not_sent" for e in r.routing)) == 3
    assert dispatch(catalog).claimed == 0  # nothing left to send
    reads = audit.list_entries(catalog, action="credentials.read", limit=100)
    # audited once per pass that opened them: Twilio in all three, Telegram in the first and last
    assert Counter(r.mapping for r in reads) == {"Club SMS": 3, "Club Bot SMS fallback": 2}
    assert {r.details["purpose"] for r in reads} == {"messages"}


def test_a_primary_that_is_down_falls_back_at_once_without_a_lookup(
    catalog: str, twilio: TwilioEmulator, telegram: TelegramEmulator
) -> None:
    """Twilio's emulator stopped: the connection is refused, so nothing was sent. Each message was
    held as 'answer lost, lookup failed' on Twilio and never reached Telegram."""
    queue(catalog, telegram, 5)
    twilio.stop()
    report = dispatch(catalog)
    assert (report.sent, report.waiting, report.by_mapping) == (5, 0, {"Club Bot SMS fallback": 5})
    assert Counter(m["text"] for m in telegram.sent_messages()) == Counter(
        f"Court {i} is booked for 18:00" for i in range(5)
    )
    tried = [m.routing[0] for m in messages(catalog) if m.routing[0]["outcome"] == "failed"]
    assert len(tried) == 3  # then Twilio is skipped for the rest of the pass
    assert all(e["code"] == "not_sent" and "looked up" not in e["reason"] for e in tried)
    assert all(TWILIO_TOKEN not in json.dumps(m.routing) for m in messages(catalog))


def test_messages_the_fallback_refuses_do_not_make_it_skip_the_next_ones(
    catalog: str, twilio: TwilioEmulator, telegram: TelegramEmulator
) -> None:
    """Three messages to a chat the bot does not know (Telegram's 400 `chat not found`) counted as
    three route failures: the fourth, to a real chat, skipped Telegram and waited."""
    with session_factory(catalog).begin() as session:
        for i in range(3):
            enqueue(
                session,
                "sms_provider",
                "+14155550100",
                f"lost {i}",
                f"x-{i}",
                payload={"telegram_chat_id": 7},
            )
    queue(catalog, telegram, 1)
    twilio.stop()
    report = dispatch(catalog)
    assert (report.sent, report.by_mapping) == (1, {"Club Bot SMS fallback": 1})
    assert [m["text"] for m in telegram.sent_messages()] == ["Court 0 is booked for 18:00"]
    refused = [m for m in messages(catalog) if m.body.startswith("lost ")]
    assert all("chat not found" in m.routing[-1]["reason"] for m in refused)


def test_a_lost_answer_at_the_primary_is_found_not_resent(
    catalog: str, twilio: TwilioEmulator, telegram: TelegramEmulator
) -> None:
    queue(catalog, telegram, 2)
    twilio.faults.lose_response_next(1, path=MESSAGES_PATH)  # Twilio sends it, the answer is lost
    report = dispatch(catalog)
    assert (report.sent, report.found) == (2, 1)
    sms = mapping_id(catalog, "club sms/messages")
    first, second = messages(catalog)
    assert first.routed_mapping_id == second.routed_mapping_id == sms
    assert first.routing[-1]["outcome"] == "found" and second.routing[-1]["outcome"] == "sent"
    sent = new_twilio_sends(twilio)
    assert len(sent) == 2 and telegram.sent_messages() == []
    assert first.provider_message_id in {m["sid"] for m in sent}
    with session_factory(catalog)() as session:
        row = get_mapping(session, "club sms/messages")
    key = route_key(row, first)
    assert sum(1 for m in sent if carries_marker(m["body"], key)) == 1  # once, not twice


def test_a_rate_limited_primary_falls_back_without_a_lookup(
    catalog: str, twilio: TwilioEmulator, telegram: TelegramEmulator
) -> None:
    queue(catalog, telegram, 1)
    twilio.faults.rate_limit_next(1, retry_after=None, path=MESSAGES_PATH)  # 20429: never processed
    assert dispatch(catalog).by_mapping == {"Club Bot SMS fallback": 1}
    (row,) = messages(catalog)
    assert [(e["provider"], e["outcome"]) for e in row.routing] == [
        ("twilio", "failed"),
        ("telegram", "sent"),
    ]
    assert row.routing[0]["error_class"] == "rate_limit" and row.routing[0]["retryable"] is True
    assert [r.method for r in twilio.requests] == ["POST"]  # no lookup: a 429 proves nothing was sent


def test_an_open_circuit_skips_the_primary_without_calling_it(
    catalog: str, twilio: TwilioEmulator, telegram: TelegramEmulator
) -> None:
    for _ in range(3):  # three failed syncs of the Twilio mapping open its circuit
        twilio.faults.fail_next(1, status=500, path=MESSAGES_PATH)
        with pytest.raises(SyncFailed):
            run_mapping(catalog, "club sms/messages")
    with session_factory(catalog)() as session:
        assert circuit_of(session, get_mapping(session, "club sms/messages"), utcnow()).is_open
    calls = twilio.request_count
    queue(catalog, telegram, 5)
    report = dispatch(catalog)
    assert report.by_mapping == {"Club Bot SMS fallback": 5}
    assert twilio.request_count == calls  # not one call to the open circuit
    for row in messages(catalog):
        assert row.routing[0]["outcome"] == "skipped" and "circuit open until" in row.routing[0]["reason"]


def test_an_unverifiable_lost_send_needs_a_person_and_is_never_resent(
    catalog: str, twilio: TwilioEmulator, telegram: TelegramEmulator
) -> None:
    queue(catalog, telegram, 1)
    twilio.faults.rate_limit_next(1, retry_after=None, path=MESSAGES_PATH)
    telegram.faults.lose_response_next(1, path="/bot")  # delivered, answer lost; no Bot API lookup
    report = dispatch(catalog)
    assert (report.sent, report.needs_person) == (0, 1)
    (row,) = messages(catalog)
    assert row.status == MessageStatus.NEEDS_PERSON.value and row.routed_mapping_id is None
    assert row.routing[-1]["outcome"] == "needs_person" and row.routing[-1]["code"] == "send_unverifiable"
    assert dispatch(catalog).claimed == 0
    assert len(telegram.sent_messages()) == 1  # the one lost send, never a second
    with session_factory(catalog)() as session:
        (task,) = session.scalars(sa.select(Task)).all()
    assert task.mapping_id == mapping_id(catalog, "club bot sms fallback/updates")
    assert task.reason == "unverifiable_message" and row.idempotency_key in (task.description or "")


def test_a_claim_left_by_a_dead_dispatcher_is_looked_up_before_any_resend(
    catalog: str, twilio: TwilioEmulator, telegram: TelegramEmulator
) -> None:
    """A dispatcher sent through Twilio and died before writing the outcome: the next one finds it."""
    queue(catalog, telegram, 1)
    (message,) = messages(catalog)
    with session_factory(catalog)() as session:
        row = get_mapping(session, "club sms/messages")
        session.expunge(row)
    credentials = Vault.from_env().decrypt(row.credentials)
    with build_provider(row, credentials) as provider:  # the dead dispatcher's send
        record = send_record(row, message, credentials)
        (sent,) = provider.write("messages", [record], idempotency_keys=[route_key(row, message)])
    stale = utcnow() - dt.timedelta(hours=1)
    attempt = {
        "mapping_id": str(row.id),
        "mapping": row.system_name,
        "provider": "twilio",
        "outcome": "attempting",
    }
    with session_factory(catalog).begin() as session:
        live = session.get(OutboundMessage, message.id)
        assert live is not None
        live.status, live.claimed_at, live.attempts, live.routing = "sending", stale, 1, [attempt]
    report = dispatch(catalog)
    assert (report.sent, report.found) == (1, 1)
    (after,) = messages(catalog)
    assert after.provider_message_id == sent["sid"] and after.routed_mapping_id == row.id
    assert len(new_twilio_sends(twilio)) == 1 and telegram.sent_messages() == []


def test_a_rejected_credential_falls_back_and_its_secret_is_nowhere(
    db_url: str, fernet_key: str, twilio: TwilioEmulator, telegram: TelegramEmulator
) -> None:
    wrong = "twilio-wrong-token-77aa88bb99cc"
    register_mapping(db_url, sms_mapping(twilio.url, token=wrong))
    register_mapping(db_url, bot_mapping(telegram.url))
    queue(db_url, telegram, 2)
    assert dispatch(db_url).by_mapping == {"Club Bot SMS fallback": 2}
    for row in messages(db_url):
        assert row.routing[0]["error_class"] == "auth" and row.routing[0]["outcome"] == "failed"
        stored = json.dumps(row.routing) + (row.last_error or "")
        assert wrong not in stored and TWILIO_TOKEN not in stored and BOT_TOKEN not in stored
        assert BOT_TOKEN.split(":")[1] not in stored


def only_twilio(db_url: str, twilio: TwilioEmulator) -> str:
    register_mapping(db_url, sms_mapping(twilio.url))
    with session_factory(db_url).begin() as session:
        enqueue(session, "sms_provider", "+14155550100", "Your lesson moved to 19:00", "lesson-1")
    return db_url


def test_an_attempt_looked_up_as_not_sent_goes_back_to_the_queue_and_is_sent_once(
    db_url: str, fernet_key: str, twilio: TwilioEmulator
) -> None:
    url = only_twilio(db_url, twilio)
    twilio.faults.fail_next(2, status=500, path=MESSAGES_PATH)  # the send, then its lookup
    assert dispatch(url).waiting == 1
    resolved = dispatch(url)  # the lookup works now: not sent; no route after Twilio in this pass
    assert (resolved.sent, resolved.waiting) == (0, 1)
    (row,) = messages(url)
    assert row.status == MessageStatus.QUEUED.value
    assert [e["outcome"] for e in row.routing] == ["unknown", "not_sent"]
    assert dispatch(url).sent == 1
    (row,) = messages(url)
    assert [e["outcome"] for e in row.routing] == ["unknown", "not_sent", "sent"]
    assert len(new_twilio_sends(twilio)) == 1


def test_an_attempt_that_stays_unresolved_goes_to_a_person_never_to_failed(
    db_url: str, fernet_key: str, twilio: TwilioEmulator
) -> None:
    url = only_twilio(db_url, twilio)
    twilio.faults.fail_next(10, status=500, path=MESSAGES_PATH)
    statuses = []
    for _ in range(3):
        Dispatcher(url, max_attempts=3).run()
        statuses.append(messages(url)[0].status)
    assert statuses == ["queued", "queued", "needs_person"]
    (row,) = messages(url)
    assert "unresolved after 3 passes" in (row.last_error or "")
    assert dispatch(url).claimed == 0 and new_twilio_sends(twilio) == []


# ---- email: SendGrid's mail_send, shaped from the message --------------------------------------
def test_an_email_goes_out_once_through_sendgrid_and_a_lost_answer_needs_a_person(
    db_url: str, fernet_key: str
) -> None:
    with sendgrid_emulator() as emulator:
        rules = {"field_mappings": {"email": "user.email"}, "x-messages": {"from": "club@padel.example"}}
        register_mapping(db_url, sendgrid_mapping(emulator.url, "contacts", rules, retry_attempts=0))
        with session_factory(db_url).begin() as session:
            for n in (1, 2):
                enqueue(
                    session,
                    "email_service",
                    f"member{n}@padel.example",
                    "See you",
                    f"mail-{n}",
                    subject="Court",
                )
            with pytest.raises(ValueError, match="needs a subject"):
                enqueue(session, "email_service", "member3@padel.example", "See you", "mail-3")
        emulator.faults.rate_limit_next(1, retry_after=None, path="/v3/mail/send")
        first = dispatch(db_url)  # a 429 and no other email route: back in the queue, then sent
        assert (first.sent, first.waiting) == (1, 1)
        emulator.faults.lose_response_next(1, path="/v3/mail/send")
        second = dispatch(db_url)  # SendGrid offers no lookup: the lost send goes to a person
        assert (second.sent, second.needs_person) == (0, 1)
        one, two = messages(db_url)
        assert (one.status, two.status) == (MessageStatus.NEEDS_PERSON.value, MessageStatus.SENT.value)
        assert [e["outcome"] for e in one.routing] == ["failed", "needs_person"]
        assert one.routing[-1]["code"] == "needs_a_person"
        (mail,) = emulator.sent_to("member2@padel.example")
        assert mail["body"]["from"] == {"email": "club@padel.example"} and mail["body"]["subject"] == "Court"
        assert two.provider_message_id == mail["message_id"]  # X-Message-Id
        assert len(emulator.sent_to("member1@padel.example")) == 1  # the lost one, sent once
        assert dispatch(db_url).claimed == 0


def test_two_dispatchers_at_once_send_each_message_once(
    catalog: str, twilio: TwilioEmulator, telegram: TelegramEmulator
) -> None:
    """The claim is a compare-and-set on the row: two passes racing over one queue split it."""
    queue(catalog, telegram, 40)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda _: dispatch(catalog), range(2)))
    assert sum(r.claimed for r in reports) == 40 and sum(r.sent for r in reports) == 40
    bodies = [m["body"] for m in new_twilio_sends(twilio)]
    assert len(bodies) == 40
    assert Counter(b.split(" [esm:")[0] for b in bodies) == Counter(
        f"Court {i} is booked for 18:00" for i in range(40)
    )
    assert {m.status for m in messages(catalog)} == {MessageStatus.SENT.value}


# ---- chat: a Slack channel first, the member's Telegram chat second -------------------------------
SLACK_TOKEN = "xoxb-1234567890-0987654321-TestTokenValue42"


def test_a_slack_announcement_falls_back_to_telegram_or_is_found_after_a_lost_answer(
    db_url: str, fernet_key: str, telegram: TelegramEmulator
) -> None:
    with SlackEmulator(tokens=[SLACK_TOKEN], users=5, channels=3, seed=4) as slack:
        channel = slack.channels()[0]["id"]
        register_mapping(
            db_url,
            {
                "system_name": "Club Slack",
                "system_type": "social_media",
                "provider_name": "slack",
                "api_endpoint": slack.url + "/api",
                "authentication_type": "oauth2",
                "credentials": {"bot_token": SLACK_TOKEN, "channel": channel},
                "sync_frequency": "daily",
                "priority": 1,
                "retry_attempts": 0,
                "mapping_rules": {
                    "field_mappings": {"name": "user.slack_handle"},
                    "sync_config": {"stream": "users"},
                    "x-messages": {"recipient": "credentials.channel"},  # one fixed channel
                },
            },
        )
        register_mapping(db_url, {**bot_mapping(telegram.url), "system_type": "social_media"})
        chat = telegram.chats()[0]["id"]
        with session_factory(db_url).begin() as session:
            for n in (1, 2):
                enqueue(session, "social_media", "members", f"Courts close at {20 + n}:00", f"notice-{n}",
                        subject="Tonight", payload={"telegram_chat_id": chat})  # fmt: skip
        slack.faults.fail_next(1, status=500, path="/api/chat.postMessage")  # the lookup still works
        slack.faults.lose_response_next(1, path="/api/chat.postMessage", after=0)
        report = dispatch(db_url)
        assert report.by_mapping == {"Club Bot SMS fallback": 1, "Club Slack": 1} and report.found == 1
        first, second = messages(db_url)
        assert [e["outcome"] for e in first.routing] == ["failed", "sent"]
        assert "looked up: not sent" in first.routing[0]["reason"]
        assert second.routing[-1]["outcome"] == "found" and second.provider_message_id
        posted = [m for m in slack.history(channel) if "[esm:" in m.get("text", "")]
        assert [m["text"].split(" [esm:")[0] for m in posted] == ["*Tonight*\nCourts close at 22:00"]
        assert [m["text"] for m in telegram.sent_messages()] == ["Tonight\n\nCourts close at 21:00"]
        stored = json.dumps([first.routing, second.routing])
        assert SLACK_TOKEN not in stored and SLACK_TOKEN.split("-")[-1] not in stored


def test_a_refused_credential_waits_while_a_refused_message_fails(
    db_url: str, fernet_key: str, twilio: TwilioEmulator
) -> None:
    register_mapping(db_url, sms_mapping(twilio.url, token="twilio-revoked-token-00aa11bb22"))
    with session_factory(db_url).begin() as session:
        enqueue(session, "sms_provider", "+14155550102", "Lesson at 9", "lesson-2")
    report = dispatch(db_url)  # 401: the mapping's problem; the message waits for new credentials
    assert (report.waiting, report.failed) == (1, 0)
    assert messages(db_url)[0].routing[-1]["error_class"] == "auth"

    with session_factory(db_url).begin() as session:  # the credential is replaced by a good one
        get_mapping(session, "club sms/messages").is_active = False
    register_mapping(db_url, {**sms_mapping(twilio.url), "system_name": "Club SMS 2"})
    with session_factory(db_url).begin() as session:
        enqueue(session, "sms_provider", "+1555", "Lesson at 10", "lesson-3")  # Twilio 21211
    report = dispatch(db_url)  # the waiting message goes out; the bad number is refused for good
    assert (report.sent, report.failed) == (1, 1)
    failed = next(m for m in messages(db_url) if m.idempotency_key == "lesson-3")
    assert failed.status == MessageStatus.FAILED.value and failed.routing[-1]["error_class"] == "validation"
    assert "21211" in (failed.routing[-1].get("code") or "")
