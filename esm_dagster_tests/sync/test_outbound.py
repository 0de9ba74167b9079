"""`sync.outbound.write_records` against real emulators: each kind of write idempotency survives a
lost answer without writing twice (issue 4 item 6)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from esm_dagster.providers.auth import BasicAuth
from esm_dagster.providers.stripe import StripeProvider
from esm_dagster.providers.twilio import TwilioProvider
from esm_dagster.sandbox.stripe import StripeEmulator
from esm_dagster.sandbox.twilio import TwilioEmulator
from esm_dagster.security.secret import Secret
from esm_dagster.sync.outbound import idempotency_key, write_records
from esm_dagster_tests.providers.messaging_helpers import Sleeps, fast_policy

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "twilio-auth-token-outbound-5a6b"
MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
STRIPE_KEY = "sk_test_51OutboundWrites00000000000000000042"
MAPPING = uuid.UUID("5f0c1a9e-0000-4000-8000-000000000001")


@pytest.fixture
def twilio() -> Iterator[TwilioEmulator]:
    with TwilioEmulator(account_sid=ACCOUNT, auth_token=TOKEN, messages=0, seed=1) as em:
        yield em


def twilio_client(emulator: TwilioEmulator, sleeps: Sleeps) -> TwilioProvider:
    return TwilioProvider(
        emulator.url,
        account_sid=ACCOUNT,
        auth=BasicAuth(ACCOUNT, Secret(TOKEN)),
        policy=fast_policy(sleep=sleeps),
    )


def sms(n: int) -> list[dict[str, str]]:
    return [
        {"To": f"+6681234{i:04d}", "From": "+15005550006", "Body": f"Court {i} at 18:00"} for i in range(n)
    ]


def keys_for(records: list[dict[str, str]], version: int = 1) -> list[str]:
    return [idempotency_key(MAPPING, "messages", r["To"], version) for r in records]


def test_the_key_is_deterministic_and_carries_no_record_data() -> None:
    key = idempotency_key(MAPPING, "messages", "+66812340001", 3)
    assert key == idempotency_key(MAPPING, "messages", "+66812340001", 3)
    assert key != idempotency_key(MAPPING, "messages", "+66812340001", 4)
    assert key != idempotency_key(uuid.uuid4(), "messages", "+66812340001", 3)
    assert key.startswith("esm1-") and len(key) == 45 and "6681234" not in key


def test_lost_answers_of_unguarded_sends_are_looked_up_never_resent(twilio: TwilioEmulator) -> None:
    records = sms(5)
    twilio.faults.lose_response_next(1, path=MESSAGES, after=1)  # send 2 commits, its answer is lost
    sleeps = Sleeps()
    with twilio_client(twilio, sleeps) as client:
        outcomes = write_records(client, "messages", records, keys_for(records))
    assert [o.status for o in outcomes] == ["written", "found", "written", "written", "written"]
    assert twilio.faults.pending == 0
    assert sorted(m["to"] for m in twilio.messages()) == sorted(r["To"] for r in records)  # once each
    assert [r.method for r in twilio.requests] == ["POST", "POST", "GET", "POST", "POST", "POST"]
    assert sleeps == []  # found at once: no resend, no wait
    found = [o for o in outcomes if o.status == "found"]
    assert all(o.result is not None and o.result["to"] == records[o.index]["To"] for o in found)


def test_a_send_that_failed_before_the_provider_acted_is_resent_once(twilio: TwilioEmulator) -> None:
    records = sms(1)
    twilio.faults.fail_next(1, status=503, path=MESSAGES)  # refused: nothing was sent
    sleeps = Sleeps()
    with twilio_client(twilio, sleeps) as client:
        (outcome,) = write_records(client, "messages", records, keys_for(records))
    assert outcome.status == "written" and outcome.attempts == 2
    assert len(twilio.messages()) == 1
    assert len(sleeps) == 1  # one backoff before the resend, after the lookup found nothing
    # the lookup ran between the failed send and the resend
    methods = [r.method for r in twilio.requests]
    assert methods == ["POST", "GET", "POST"]


def test_a_validation_error_is_not_resent(twilio: TwilioEmulator) -> None:
    bad = [{"To": "12", "From": "+15005550006", "Body": "x"}]
    with twilio_client(twilio, Sleeps()) as client:
        (outcome,) = write_records(client, "messages", bad, ["k-1"])
    assert outcome.status == "failed" and outcome.error is not None
    assert outcome.error.error_class == "validation" and outcome.attempts == 1
    assert [r.method for r in twilio.requests] == ["POST"]


def test_a_rerun_of_the_same_records_with_keyed_writes_creates_nothing_new() -> None:
    """Stripe replays the first answer for a repeated Idempotency-Key: a re-run is harmless."""
    with StripeEmulator(api_keys=[STRIPE_KEY], customers=0, charges=0, seed=2) as emulator:
        records = [{"email": f"member{i}@padel.example", "name": f"Member {i}"} for i in range(3)]
        keys = [idempotency_key(MAPPING, "customers", r["email"], 1) for r in records]
        emulator.faults.lose_response_next(1, path="/v1/customers", after=1)
        with StripeProvider(emulator.url, Secret(STRIPE_KEY), policy=fast_policy()) as client:
            first = write_records(client, "create_customer", records, keys)
            again = write_records(client, "create_customer", records, keys)
        assert [o.status for o in first] == ["written"] * 3 and [o.status for o in again] == ["written"] * 3
        assert [o.result["id"] for o in first] == [o.result["id"] for o in again]  # type: ignore[index]
        assert emulator.count("customers") == 3


def test_records_and_keys_must_pair_up(twilio: TwilioEmulator) -> None:
    with twilio_client(twilio, Sleeps()) as client:
        with pytest.raises(ValueError, match="same length"):
            write_records(client, "messages", sms(2), ["only-one"])
        with pytest.raises(ValueError, match="same idempotency key"):
            write_records(client, "messages", sms(2), ["same", "same"])
    assert twilio.request_count == 0
