"""SalesforceProvider against the Salesforce emulator over loopback HTTP, and through the engine."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from esm_dagster.auth import MemoryTokenStore, OAuth2Auth, RefreshTokenGrant, TokenEndpoint
from esm_dagster.catalog.db import get_engine
from esm_dagster.providers.base import ProviderError
from esm_dagster.providers.salesforce import SalesforceProvider
from esm_dagster.sandbox.salesforce import SalesforceEmulator
from esm_dagster.sandbox.salesforce.soql import parse_time
from esm_dagster.security.secret import Secret
from esm_dagster.sync.engine import run_mapping
from esm_dagster.transport import TransportPolicy
from esm_dagster_tests.oauth_fixtures import SF_CLIENT_ID, SF_CLIENT_SECRET, add_mapping, salesforce_mapping

PAGE = 25  # the emulator's batch cap: Salesforce sends "often fewer" than the batchSize asked for


@pytest.fixture(scope="module")
def emulator() -> Iterator[SalesforceEmulator]:
    with SalesforceEmulator(
        clients={SF_CLIENT_ID: SF_CLIENT_SECRET}, contacts=60, max_batch=PAGE, seed=5
    ) as emu:
        yield emu


@pytest.fixture(autouse=True)
def _no_leftover_faults(emulator: SalesforceEmulator) -> Iterator[None]:
    emulator.faults.clear()
    yield
    emulator.faults.clear()


def provider(
    emulator: SalesforceEmulator, *, secret: str = SF_CLIENT_SECRET, retries: int = 2
) -> SalesforceProvider:
    store = MemoryTokenStore({"refresh_token": emulator.oauth.issue_refresh_token(SF_CLIENT_ID)})
    endpoint = TokenEndpoint(emulator.url + "/services/oauth2/token", provider="salesforce")
    auth = OAuth2Auth(RefreshTokenGrant(SF_CLIENT_ID, Secret(secret)), endpoint, store)
    return SalesforceProvider(emulator.url, auth=auth, policy=TransportPolicy(retries, 5.0, base_delay=0.01))


def modstamp(record: dict) -> float:
    return parse_time(record["SystemModstamp"])


def expected(emulator: SalesforceEmulator, start: float | None = None, end: float | None = None) -> list[str]:
    rows = [
        c
        for c in emulator.snapshot()
        if (start is None or modstamp(c) >= start) and (end is None or modstamp(c) < end)
    ]
    rows.sort(key=lambda c: (modstamp(c), c["Id"]))
    return [c["Id"] for c in rows]


def epoch(value: object) -> float:
    """A loaded timestamp (aware on PostgreSQL; naive UTC or text on SQLite) as unix seconds."""
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def ids(pages) -> list[str]:
    return [r["Id"] for p in pages for r in p.records]


def test_query_follows_next_records_url_until_done(emulator: SalesforceEmulator) -> None:
    with provider(emulator) as client:
        pages = list(client.iter_pages("contacts"))
    assert [len(p.records) for p in pages] == [25, 25, 10]
    assert (
        all(p.next_cursor and "/query/01g" in p.next_cursor for p in pages[:2])
        and pages[-1].next_cursor is None
    )
    assert ids(pages) == expected(emulator)
    assert "attributes" not in pages[0].records[0]


def test_window_on_system_modstamp_is_start_inclusive_end_exclusive(emulator: SalesforceEmulator) -> None:
    stamps = sorted({int(modstamp(c)) for c in emulator.snapshot()})
    start, end = stamps[5], stamps[40]
    with provider(emulator) as client:
        got = ids(client.iter_pages("contacts", window_start=start, window_end=end))
        query = client.soql(start, end)
    assert got == expected(emulator, start, end) and len(got) == 35
    assert "WHERE SystemModstamp >= 20" in query and "'" not in query  # unquoted datetime literals


def test_resume_from_next_records_url(emulator: SalesforceEmulator) -> None:
    with provider(emulator) as client:
        pages = list(client.iter_pages("contacts"))
        resumed = list(client.iter_pages("contacts", cursor=pages[0].next_cursor))
    assert ids(resumed) == ids(pages[1:])


def test_a_next_records_url_seen_twice_stops(emulator: SalesforceEmulator) -> None:
    emulator.faults.duplicate_next(1, items=PAGE)  # the second batch is the first again, same next url
    with provider(emulator) as client, pytest.raises(ProviderError) as info:
        list(client.iter_pages("contacts"))
    assert info.value.code == "repeated_cursor" and not info.value.retryable


def test_upsert_by_external_id_creates_then_updates_and_reads_back(emulator: SalesforceEmulator) -> None:
    record = {
        "External_Id__c": "club-new-1",
        "LastName": "Okoro",
        "FirstName": "Ada",
        "Email": "ada.okoro@example.com",
    }
    with provider(emulator) as client:
        before = time.time() - 1
        [created] = client.write("contacts", [record], idempotency_keys=["k1"])
        [updated] = client.write("contacts", [{**record, "Phone": "+14155550999"}], idempotency_keys=["k2"])
        [repeated] = client.write("contacts", [{**record, "Phone": "+14155550999"}], idempotency_keys=["k2"])
        recent = [
            r
            for p in client.iter_pages("contacts", window_start=int(before), window_end=int(time.time()) + 2)
            for r in p.records
        ]
    assert created["created"] is True and updated["created"] is False and repeated["created"] is False
    assert created["id"] == updated["id"] == repeated["id"]
    written = [c for c in emulator.snapshot() if c["External_Id__c"] == "club-new-1"]
    assert [c["Phone"] for c in written] == ["+14155550999"]
    assert [(r["Id"], r["Phone"], r["Email"]) for r in recent] == [
        (created["id"], "+14155550999", "ada.okoro@example.com")
    ]


def test_upsert_errors_name_the_code_and_field(emulator: SalesforceEmulator) -> None:
    with provider(emulator) as client:
        with pytest.raises(ProviderError) as missing:
            client.write(
                "contacts",
                [{"External_Id__c": "club-new-2", "Email": "x@example.com"}],
                idempotency_keys=["k"],
            )
        with pytest.raises(ProviderError) as bad_email:
            client.write(
                "contacts",
                [{"External_Id__c": "club-new-2", "LastName": "X", "Email": "nope"}],
                idempotency_keys=["k"],
            )
    assert (missing.value.status, missing.value.code, missing.value.error_class) == (
        400,
        "REQUIRED_FIELD_MISSING",
        "validation",
    )
    assert "LastName" in str(missing.value)
    assert bad_email.value.code == "INVALID_EMAIL_ADDRESS" and "fields: Email" in str(bad_email.value)


def test_request_limit_exceeded_is_a_rate_limit_and_retried(emulator: SalesforceEmulator) -> None:
    with provider(emulator) as client:
        client.probe()
        emulator.faults.rate_limit_next(1, path="/services/data")
        client.probe()
        assert client.metrics.errors_by_class == {"rate_limit": 1}
        emulator.faults.rate_limit_next(3, path="/services/data")
        with pytest.raises(ProviderError) as info:
            client.probe()
    assert (info.value.status, info.value.code, info.value.error_class, info.value.retryable) == (
        403,
        "REQUEST_LIMIT_EXCEEDED",
        "rate_limit",
        True,
    )


def test_5xx_is_retried(emulator: SalesforceEmulator) -> None:
    with provider(emulator) as client:
        emulator.faults.fail_next(2, 500, path="/services/data")
        client.probe()
        assert client.metrics.retries == 2


def test_wrong_client_secret_is_auth_and_never_printed(emulator: SalesforceEmulator) -> None:
    wrong = "sf-wrong-secret-Qa1Ws2Ed3"
    with provider(emulator, secret=wrong) as client, pytest.raises(ProviderError) as info:
        client.probe()
    assert (info.value.error_class, info.value.code, info.value.retryable) == (
        "auth",
        "invalid_client",
        False,
    )
    for text in (str(info.value), repr(info.value), repr(client)):
        assert wrong not in text and SF_CLIENT_SECRET not in text


def test_second_401_after_a_fresh_session_is_auth(emulator: SalesforceEmulator) -> None:
    with provider(emulator) as client:
        client.probe()
        emulator.faults.expire_credentials_after(0)  # every session is refused from now on
        with pytest.raises(ProviderError) as info:
            client.probe()
        token = client.oauth.token().access_token.reveal()
    assert (info.value.status, info.value.code, info.value.error_class) == (401, "INVALID_SESSION_ID", "auth")
    assert token not in str(info.value)


def test_emulator_log_never_holds_a_token(emulator: SalesforceEmulator) -> None:
    emulator.reset_request_log()
    with provider(emulator) as client:
        client.probe()
        token = client.oauth.token().access_token.reveal()
    assert token not in str(emulator.requests)
    assert httpx.get(emulator.url + "/services/data/v62.0/query?q=SELECT+Id+FROM+Contact").json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]


def test_engine_syncs_contacts_exactly_and_a_rerun_writes_no_duplicates(
    db_url: str, fernet_key: str, emulator: SalesforceEmulator
) -> None:
    refresh = emulator.oauth.issue_refresh_token(SF_CLIENT_ID)
    mapping = add_mapping(
        db_url,
        salesforce_mapping(emulator.url, {"client_secret": SF_CLIENT_SECRET, "refresh_token": refresh}),
    )
    first = run_mapping(db_url, mapping, full_refresh=True)
    assert first.window_end is not None  # records modified in this very second belong to the next run
    contacts = {c["Id"]: c for c in emulator.snapshot() if modstamp(c) < first.window_end}
    assert first.status == "success" and first.records_read == len(contacts) and first.pages == 3
    assert first.records_rejected > 0  # the seed's broken e-mails and phones
    with get_engine(db_url).connect() as conn:
        rows = conn.execute(
            sa.text(
                'select esm_external_id, email, full_name, phone_number, club_ref, sf_modified_at from "user" where esm_external_id is not null'
            )
        ).all()
    assert len(rows) == first.records_written
    for external_id, email, full_name, phone, club_ref, modified in rows:
        contact = contacts[external_id]
        assert (email, full_name, phone, club_ref) == (
            contact["Email"],
            contact["LastName"],
            contact["Phone"],
            contact["External_Id__c"],
        )
        assert epoch(modified) == modstamp(contact)
    again = run_mapping(db_url, mapping, full_refresh=True)
    assert again.records_read >= first.records_read
    with get_engine(db_url).connect() as conn:
        total, distinct = conn.execute(
            sa.text(
                'select count(*), count(distinct esm_external_id) from "user" where esm_external_id is not null'
            )
        ).one()
    assert total == distinct == again.records_written >= len(rows)


def test_incremental_runs_pick_up_changes_made_during_the_previous_run(db_url: str, fernet_key: str) -> None:
    with SalesforceEmulator(
        clients={SF_CLIENT_ID: SF_CLIENT_SECRET}, contacts=60, max_batch=PAGE, seed=8
    ) as emu:
        refresh = emu.oauth.issue_refresh_token(SF_CLIENT_ID)
        raw = salesforce_mapping(emu.url, {"client_secret": SF_CLIENT_SECRET, "refresh_token": refresh})
        mapping = add_mapping(db_url, raw)
        emu.faults.mutate_next(1, backdate=60)  # between batches 1 and 2 of the first run
        first = run_mapping(db_url, mapping)
        assert first.records_read == 60 and len(emu.mutations) == 1
        changed, created = emu.mutations[0]
        # A window ends at the whole second its run starts: a change made in that very second belongs
        # to the run after. Start the next run in the next second so it must see both changes.
        time.sleep(1.0 - time.time() % 1.0 + 0.01)
        second = run_mapping(db_url, mapping)  # from the first run's high-water mark minus the lookback
        assert second.records_read == 2
        third = run_mapping(db_url, mapping)
        assert third.records_read == 2  # the lookback re-reads the two recent changes; upserts, no copies
        with get_engine(db_url).connect() as conn:
            rows = dict(
                conn.execute(
                    sa.text(
                        'select esm_external_id, phone_number from "user" where esm_external_id is not null'
                    )
                ).all()
            )
        assert rows[changed] == "+14155550000" and created in rows
        assert len(rows) == first.records_written + 1
        assert set(rows) <= {c["Id"] for c in emu.snapshot()}
