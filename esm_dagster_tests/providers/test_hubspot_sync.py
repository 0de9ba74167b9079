"""HubSpot contacts through the engine: emulator over loopback -> rules -> `user` table (SQLite and
PostgreSQL), exact typed values, no duplicates on re-runs, a pushed contact read back."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import phonenumbers
import pytest
import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import MappingInput, get_mapping, upsert_mapping
from esm_dagster.catalog.types import UTCDateTime
from esm_dagster.providers.hubspot import HubSpotProvider
from esm_dagster.sandbox.hubspot import HubSpotEmulator
from esm_dagster.security.secret import Secret
from esm_dagster.security.vault import Vault
from esm_dagster.sync.engine import SyncFailed, run_mapping
from esm_dagster.transport import TransportPolicy

TOKEN = "pat-na1-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
RULES: dict[str, Any] = {
    "field_mappings": {
        "properties.email": {"target": "user.email", "type": "email"},
        "properties.firstname": "user.first_name",
        "properties.lastname": "user.last_name",
        "properties.phone": {"target": "user.phone_number", "type": "phone_number"},
        "properties.lifecyclestage": "user.lifecycle_stage",
        "properties.lastmodifieddate": {"target": "user.hubspot_modified_at", "type": "timestamp"},
        "createdAt": {"target": "user.hubspot_created_at", "type": "timestamp"},
    },
    "validation_rules": {"required_fields": ["properties.email"]},
    "sync_config": {"stream": "contacts", "batch_size": 40},
}


@pytest.fixture
def emulator() -> Iterator[HubSpotEmulator]:
    # The emulator's clock runs 1.5 s behind: a contact written just now is then before the window
    # end of the next run (whole seconds, exclusive) instead of waiting for the run after it.
    with HubSpotEmulator([TOKEN], contacts=90, archived=4, seed=5, clock=lambda: time.time() - 1.5) as em:
        yield em


@pytest.fixture
def catalog(db_url: str, fernet_key: str, emulator: HubSpotEmulator) -> str:
    item = MappingInput(
        system_name="Club HubSpot",
        system_type="crm",
        provider_name="hubspot",
        api_endpoint=emulator.url,
        authentication_type="api_key",
        credentials={"private_app_token": TOKEN},
        mapping_rules=RULES,
        sync_frequency="hourly",
        retry_attempts=2,
    )
    with session_factory(db_url).begin() as session:
        upsert_mapping(session, Vault.from_env(), item)
    return db_url


def expected_row(contact: dict[str, Any]) -> dict[str, Any] | None:
    """What the rules must make of a contact (None: rejected), computed with the libraries directly."""
    props = contact["properties"]
    try:
        email = validate_email(
            props["email"] or "", check_deliverability=False, allow_smtputf8=True
        ).normalized
    except EmailNotValidError:
        return None
    phone = props.get("phone")
    if phone is not None:
        number = phonenumbers.parse(phone, "TH")
        if not phonenumbers.is_valid_number(number):
            return None
        phone = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

    def moment(text: str) -> dt.datetime:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))

    return {
        "email": email,
        "first_name": props["firstname"],
        "last_name": props["lastname"],
        "phone_number": phone,
        "lifecycle_stage": props["lifecyclestage"],
        "hubspot_modified_at": moment(props["lastmodifieddate"]),
        "hubspot_created_at": moment(contact["createdAt"]),
    }


TIMESTAMPS = ("hubspot_modified_at", "hubspot_created_at")
COLUMNS = ("email", "first_name", "last_name", "phone_number", "lifecycle_stage", *TIMESTAMPS)


def loaded(url: str) -> dict[str, dict[str, Any]]:
    """The synced rows of `user` by HubSpot id, timestamps read as the loader typed them."""
    user = sa.table(
        "user",
        sa.column("esm_external_id"),
        sa.column("esm_source"),
        *(sa.column(c, UTCDateTime() if c in TIMESTAMPS else sa.Text()) for c in COLUMNS),
    )
    query = sa.select(user.c.esm_external_id, *(user.c[c] for c in COLUMNS)).where(
        user.c.esm_source == "club_hubspot/contacts"
    )
    with get_engine(url).connect() as conn:
        rows = conn.execute(query).all()
    return {row[0]: dict(zip(COLUMNS, row[1:], strict=True)) for row in rows}


def test_contacts_sync_exactly_and_reruns_write_no_duplicates(
    catalog: str, emulator: HubSpotEmulator
) -> None:
    first = run_mapping(catalog, "Club HubSpot/contacts")
    contacts = emulator.contacts()
    expected = {c["id"]: row for c in contacts if (row := expected_row(c)) is not None}
    assert first.status == "success" and first.records_read == len(contacts) == 86
    assert first.records_rejected == len(contacts) - len(expected) > 0  # the seed's bad emails/phones
    assert loaded(catalog) == expected

    again = run_mapping(catalog, "Club HubSpot/contacts")
    assert again.records_read == 0 and again.window_start is not None  # the search found nothing new
    full = run_mapping(catalog, "Club HubSpot/contacts", full_refresh=True)
    assert full.records_written == first.records_written
    assert loaded(catalog) == expected


def test_a_pushed_contact_comes_back_and_a_wrong_token_fails_as_auth(
    catalog: str, emulator: HubSpotEmulator
) -> None:
    run_mapping(catalog, "Club HubSpot/contacts")
    target = emulator.contacts()[0]
    policy = TransportPolicy(2, 5, base_delay=0.01)
    with HubSpotProvider(emulator.url, token=Secret(TOKEN), policy=policy) as provider:
        provider.write(
            "contacts_upsert",
            [
                {
                    "email": "pushed.member@example.com",
                    "firstname": "Pushed",
                    "lastname": "Member",
                    "phone": "081 234 5678",
                },
                {"email": target["properties"]["email"], "lifecyclestage": "evangelist"},
            ],
            idempotency_keys=["esm:user:pushed:v1", "esm:user:target:v1"],
        )
    report = run_mapping(catalog, "Club HubSpot/contacts")
    assert report.records_read == 2 and report.window_start is not None
    rows = loaded(catalog)
    pushed = emulator.find_by_email("pushed.member@example.com")
    assert pushed is not None
    assert rows[pushed["id"]]["phone_number"] == "+66812345678"
    assert rows[pushed["id"]]["first_name"] == "Pushed"
    assert rows[target["id"]]["lifecycle_stage"] == "evangelist"
    assert len(rows) == len({c["id"] for c in emulator.contacts() if expected_row(c) is not None})

    wrong = "pat-na1-00000000-0000-0000-0000-000000000bad"
    with session_factory(catalog).begin() as session:
        row = get_mapping(session, "Club HubSpot/contacts")
        row.credentials = Vault.from_env().encrypt({"private_app_token": wrong})
    with pytest.raises(SyncFailed) as caught:
        run_mapping(catalog, "Club HubSpot/contacts")
    assert caught.value.report.error_class == "auth"
    assert wrong not in str(caught.value) and wrong not in (caught.value.report.error or "")


def test_a_search_run_that_fails_mid_window_resumes_from_its_cursor(
    catalog: str, emulator: HubSpotEmulator
) -> None:
    """The second search page fails for good: the first batch is committed with the search cursor;
    the next run resumes there and the table ends up exactly right, nothing read twice past it."""
    with session_factory(catalog).begin() as session:
        get_mapping(session, "Club HubSpot/contacts").retry_attempts = 0
    emulator.faults.fail_next(1, status=500, path="/crm/v3/objects/contacts/search", after=1)
    since = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)  # a window start: the search path, not the list
    with pytest.raises(SyncFailed) as caught:
        run_mapping(catalog, "Club HubSpot/contacts", since=since)
    failed = caught.value.report
    assert failed.error_class == "server" and failed.batches == 1 and failed.records_read == 40
    searches_before = sum(r.path.endswith("/search") for r in emulator.requests)

    resumed = run_mapping(catalog, "Club HubSpot/contacts")
    contacts = emulator.contacts()
    assert resumed.resumed and resumed.window_start == int(since.timestamp())
    # it went on from the cursor: at most the boundary contact of each page read again
    assert (
        len(contacts) - failed.records_read
        <= resumed.records_read
        <= len(contacts) - failed.records_read + resumed.pages
    )
    assert sum(r.path.endswith("/search") for r in emulator.requests) - searches_before == resumed.pages
    expected = {c["id"]: row for c in contacts if (row := expected_row(c)) is not None}
    assert loaded(catalog) == expected
