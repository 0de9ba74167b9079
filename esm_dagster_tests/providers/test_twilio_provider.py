"""Twilio provider against the Twilio emulator: real HTTP on loopback, real databases for the engine."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from esm_dagster.catalog.models import ExternalSystemMapping
from esm_dagster.providers.auth import BasicAuth
from esm_dagster.providers.base import ProviderError
from esm_dagster.providers.context import ProviderConfigError, ProviderContext
from esm_dagster.providers.markers import marker_for
from esm_dagster.providers.twilio import TwilioProvider, parse_rfc2822
from esm_dagster.sandbox.twilio import TwilioEmulator
from esm_dagster.sandbox.twilio.data import BAD_NUMBERS
from esm_dagster.security.secret import Secret
from esm_dagster.sync.engine import run_mapping
from esm_dagster_tests.providers.messaging_helpers import Sleeps, fast_policy, register_mapping, rows, unix

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "twilio-auth-token-0f9e8d7c6b5a"
KEY_SID = "SK" + "fedcba9876543210" * 2
KEY_SECRET = "twilio-key-secret-1a2b3c4d5e"
MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"


@pytest.fixture
def emulator() -> Iterator[TwilioEmulator]:
    with TwilioEmulator(
        account_sid=ACCOUNT, auth_token=TOKEN, api_keys={KEY_SID: KEY_SECRET}, messages=120, seed=5
    ) as em:
        yield em


def provider(emulator: TwilioEmulator, token: str = TOKEN, **policy: Any) -> TwilioProvider:
    return TwilioProvider(
        emulator.url,
        account_sid=ACCOUNT,
        auth=BasicAuth(ACCOUNT, Secret(token)),
        policy=fast_policy(**policy),
    )


def sids(pages: Any) -> list[str]:
    return [r["sid"] for page in pages for r in page.records]


def test_pages_follow_next_page_uri_to_the_end(emulator: TwilioEmulator) -> None:
    with provider(emulator) as client:
        pages = list(client.iter_pages("messages", page_size=25))
    assert [len(p.records) for p in pages] == [25, 25, 25, 25, 20]
    assert sids(pages) == [m["sid"] for m in emulator.messages()]
    assert [p.has_more for p in pages] == [True] * 4 + [False]
    assert pages[-1].next_cursor is None
    tokens = [r.query for r in emulator.requests if "PageToken=PA" in r.query]
    assert len(tokens) == 4  # pages 2..5 were asked for with the token Twilio handed back


def test_resume_from_a_next_page_uri(emulator: TwilioEmulator) -> None:
    with provider(emulator) as client:
        first_two = list(zip(range(2), client.iter_pages("messages", page_size=30), strict=False))
        cursor = first_two[-1][1].next_cursor
        assert cursor is not None and "PageToken=" in cursor
        rest = list(client.iter_pages("messages", page_size=30, cursor=cursor))
    everything = [m["sid"] for m in emulator.messages()]
    assert sids(p for _, p in first_two) + sids(rest) == everything


def test_a_cursor_of_another_account_or_path_is_refused(emulator: TwilioEmulator) -> None:
    with provider(emulator) as client, pytest.raises(ProviderError) as err:
        next(client.iter_pages("messages", cursor="/2010-04-01/Accounts/ACffff/Calls.json?PageToken=x"))
    assert err.value.code == "invalid_cursor"
    assert emulator.request_count == 0


class LoopingTwilio(TwilioEmulator):
    """A server that hands back the same next_page_uri forever."""

    def _list(self, account: str, query: str) -> dict[str, Any]:
        page = super()._list(account, "PageSize=10")
        page["next_page_uri"] = MESSAGES_PATH + "?PageSize=10&Page=1&PageToken=PAloop"
        return page


def test_a_repeated_next_page_uri_stops_the_stream() -> None:
    with LoopingTwilio(account_sid=ACCOUNT, auth_token=TOKEN, messages=30) as em, provider(em) as client:
        pages = client.iter_pages("messages", page_size=10)
        next(pages)
        with pytest.raises(ProviderError) as err:
            next(pages)
    assert err.value.code == "repeated_cursor"
    assert em.request_count == 2


def test_window_asks_for_the_days_and_cuts_exactly(emulator: TwilioEmulator) -> None:
    every = emulator.messages()
    sent = sorted(parse_rfc2822(m["date_sent"]) for m in every)
    start, end = sent[30], sent[90]  # start inclusive, end exclusive
    with provider(emulator) as client:
        got = sids(client.iter_pages("messages", window_start=start, window_end=end, page_size=1000))
    expected = [m["sid"] for m in every if start <= parse_rfc2822(m["date_sent"]) < end]
    assert got == expected and len(expected) == 60
    query = emulator.requests[0].query
    day = dt.datetime.fromtimestamp(start, dt.UTC).strftime("%Y-%m-%d")
    assert f"DateSent%3E={day}" in query and "DateSent%3C=" in query


def test_send_then_read_back_through_the_stream(emulator: TwilioEmulator) -> None:
    record = {"To": "+66812345678", "From": "+15005550006", "Body": "Court 3 is yours at 18:00"}
    with provider(emulator) as client:
        [sent] = client.write("messages", [record], idempotency_keys=["mapping-1/booking-9/v1"])
        listed = {r["sid"]: r for r in sids_records(client)}
    assert sent["status"] == "queued" and sent["to"] == record["To"]
    assert listed[sent["sid"]]["body"] == f"Court 3 is yours at 18:00 {marker_for('mapping-1/booking-9/v1')}"
    assert len(emulator.messages()) == 121


def sids_records(client: TwilioProvider) -> list[dict[str, Any]]:
    return [r for page in client.iter_pages("messages", page_size=1000) for r in page.records]


def test_a_lost_answer_is_found_not_resent(emulator: TwilioEmulator) -> None:
    record = {"To": "+66899999999", "From": "+15005550006", "Body": "Your lesson moved to 9:00"}
    key = "mapping-1/lesson-4/v2"
    emulator.faults.lose_response_next(1, path=MESSAGES_PATH)
    with provider(emulator) as client:
        with pytest.raises(ProviderError) as err:
            client.write("messages", [record], idempotency_keys=[key])
        assert err.value.error_class == "network"
        found = client.find_written("messages", record, key)
        assert client.find_written("messages", record, "another-key") is None
    to_them = [m for m in emulator.messages() if m["to"] == record["To"]]
    assert len(to_them) == 1 and found is not None and found["sid"] == to_them[0]["sid"]
    posts = [r for r in emulator.requests if r.method == "POST"]
    assert len(posts) == 1  # the send was not retried blindly


def test_a_write_without_a_sender_names_the_field(emulator: TwilioEmulator) -> None:
    with provider(emulator) as client, pytest.raises(ValueError, match="From or MessagingServiceSid"):
        client.write("messages", [{"To": "+66812345678", "Body": "x"}], idempotency_keys=["k"])
    assert emulator.request_count == 0


def test_an_invalid_recipient_is_a_validation_error(emulator: TwilioEmulator) -> None:
    with provider(emulator) as client, pytest.raises(ProviderError) as err:
        client.write("messages", [{"To": "12", "From": "+15005550006", "Body": "x"}], idempotency_keys=["k"])
    assert (err.value.error_class, err.value.code, err.value.status) == ("validation", "21211", 400)


@pytest.mark.parametrize("use_api_key", [False, True])
def test_wrong_credentials_are_auth_errors_without_the_secret(
    emulator: TwilioEmulator, use_api_key: bool
) -> None:
    wrong = "wrong-secret-value-77777"
    auth = BasicAuth(KEY_SID if use_api_key else ACCOUNT, Secret(wrong))
    client = TwilioProvider(emulator.url, account_sid=ACCOUNT, auth=auth, policy=fast_policy())
    with client, pytest.raises(ProviderError) as err:
        client.probe()
    assert (err.value.error_class, err.value.retryable, err.value.code) == ("auth", False, "20003")
    assert wrong not in str(err.value) and wrong not in repr(err.value)
    assert emulator.request_count == 1  # a 401 is not retried


def test_an_api_key_authenticates(emulator: TwilioEmulator) -> None:
    auth = BasicAuth(KEY_SID, Secret(KEY_SECRET))
    with TwilioProvider(emulator.url, account_sid=ACCOUNT, auth=auth, policy=fast_policy()) as client:
        assert client.probe() >= 0


def test_expired_credentials_mid_stream(emulator: TwilioEmulator) -> None:
    emulator.faults.expire_credentials_after(2)
    with provider(emulator) as client:
        pages = client.iter_pages("messages", page_size=20)
        next(pages), next(pages)
        with pytest.raises(ProviderError) as err:
            next(pages)
    assert err.value.error_class == "auth" and TOKEN not in str(err.value)


def test_rate_limit_is_retried_and_retry_after_honoured() -> None:
    sleeps = Sleeps()
    with (
        TwilioEmulator(account_sid=ACCOUNT, auth_token=TOKEN, messages=10, retry_after_header=True) as em,
        provider(em, sleep=sleeps) as client,
    ):
        em.faults.rate_limit_next(1, retry_after=2)
        assert client.probe() >= 0
    assert len(sleeps) == 1 and sleeps[0] >= 2.0
    assert client.metrics.retries == 1


def test_rate_limit_without_retry_after_backs_off_and_retries(emulator: TwilioEmulator) -> None:
    emulator.faults.rate_limit_next(2)
    sleeps = Sleeps()
    with provider(emulator, sleep=sleeps) as client:
        assert len(sids(client.iter_pages("messages", page_size=1000))) == 120
    assert len(sleeps) == 2 and emulator.request_count == 3


def test_server_errors_are_retried_then_raised(emulator: TwilioEmulator) -> None:
    emulator.faults.fail_next(2, status=503)
    with provider(emulator) as client:
        assert client.probe() >= 0
        emulator.faults.fail_next(5, status=500)
        with pytest.raises(ProviderError) as err:
            client.probe()
    assert (err.value.error_class, err.value.retryable, err.value.code) == ("server", True, "20500")


def test_a_timeout_is_classified_and_names_no_secret(emulator: TwilioEmulator) -> None:
    emulator.faults.delay_next(1, seconds=1.0)
    with (
        provider(emulator, retry_attempts=0, timeout_seconds=0.3) as client,
        pytest.raises(ProviderError) as err,
    ):
        client.probe()
    assert (err.value.error_class, err.value.retryable) == ("timeout", True)
    assert TOKEN not in str(err.value) and TOKEN not in repr(err.value)


def test_duplicated_page_starts_are_served_like_offset_drift(emulator: TwilioEmulator) -> None:
    emulator.faults.duplicate_next(1, items=3, path=MESSAGES_PATH)
    with provider(emulator) as client:
        got = sids(client.iter_pages("messages", page_size=40))
    assert len(got) == 123 and len(set(got)) == 120


# ---- through the engine ---------------------------------------------------------------------------
def twilio_mapping(url: str) -> dict[str, Any]:
    return {
        "system_name": "Club SMS",
        "system_type": "sms_provider",
        "provider_name": "twilio",
        "api_endpoint": url,
        "authentication_type": "basic_auth",
        "credentials": {"account_sid": ACCOUNT, "auth_token": TOKEN},
        "sync_frequency": "hourly",
        "mapping_rules": {
            "field_mappings": {
                "to": {"target": "message.to_number", "type": "phone_number"},
                "from": "message.from_number",
                "body": "message.body",
                "status": "message.status",
                "date_sent": {"target": "message.sent_at", "type": "timestamp"},
                "price": {"target": "message.price", "type": "decimal"},
                "num_segments": {"target": "message.segments", "type": "integer"},
            },
            "validation_rules": {"required_fields": ["to", "date_sent"]},
            "sync_config": {"stream": "messages", "key": "sid", "batch_size": 50},
        },
    }


def test_messages_sync_through_the_engine(db_url: str, fernet_key: str, emulator: TwilioEmulator) -> None:
    register_mapping(db_url, twilio_mapping(emulator.url))
    first = run_mapping(db_url, "club sms/messages")
    source = {m["sid"]: m for m in emulator.messages()}
    bad = {sid for sid, m in source.items() if m["to"] in BAD_NUMBERS}
    assert bad and first.records_read == 120
    assert (first.records_written, first.records_rejected) == (120 - len(bad), len(bad))
    loaded = rows(
        db_url,
        "message",
        "esm_external_id",
        "to_number",
        "from_number",
        "body",
        "status",
        "sent_at",
        "price",
        "segments",
    )
    assert {r[0] for r in loaded} == set(source) - bad
    for sid, to, sender, body, status, sent_at, price, segments in loaded:
        m = source[sid]
        assert (to, sender, body, status) == (m["to"], m["from"], m["body"], m["status"])
        assert unix(sent_at) == parse_rfc2822(m["date_sent"])
        assert (None if price is None else Decimal(str(price))) == (
            None if m["price"] is None else Decimal(m["price"])
        )
        assert segments == int(m["num_segments"])
    again = run_mapping(db_url, "club sms/messages")
    assert again.records_written == 0
    assert len(rows(db_url, "message", "id")) == len(loaded)


def config_context(credentials: dict[str, str]) -> ProviderContext:
    return ProviderContext(
        row=ExternalSystemMapping(system_name="Club SMS", provider_name="twilio"),
        credentials=credentials,
        base_url="https://api.twilio.com",
        policy=fast_policy(),
    )


@pytest.mark.parametrize(
    ("credentials", "field"),
    [
        ({"account_sid": "ACnothex", "auth_token": TOKEN}, "credentials.account_sid"),
        ({"account_sid": ACCOUNT}, "credentials.auth_token"),
        (
            {"account_sid": ACCOUNT, "api_key_sid": "SK123", "api_key_secret": KEY_SECRET},
            "credentials.api_key_sid",
        ),
        ({"account_sid": ACCOUNT, "api_key_sid": KEY_SID}, "credentials.api_key_secret"),
    ],
)
def test_credential_problems_name_the_field_not_the_value(credentials: dict[str, str], field: str) -> None:
    with pytest.raises(ProviderConfigError) as err:
        TwilioProvider.from_context(config_context(credentials))
    assert field in str(err.value)
    assert TOKEN not in str(err.value) and KEY_SECRET not in str(err.value)
