"""SendGrid through the engine: emulator -> provider -> rules -> SQLite / PostgreSQL, and no duplicates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine
from esm_dagster.sandbox.sendgrid import SendGridEmulator
from esm_dagster.sync.engine import SyncFailed, run_mapping
from esm_dagster_tests.provider_catalog import as_utc, register
from esm_dagster_tests.sendgrid_fixtures import KEY, mapping, sendgrid_emulator

BOUNCE_RULES = {
    "field_mappings": {
        "email": {"target": "email_suppression.email", "type": "email"},
        "created": {"target": "email_suppression.suppressed_at", "type": "timestamp", "unit": "s"},
        "reason": "email_suppression.reason",
        "status": "email_suppression.smtp_status",
    },
    "validation_rules": {"required_fields": ["email"], "data_types": {"email": "email"}},
    "sync_config": {"key": "email", "batch_size": 10},
}
CONTACT_RULES = {
    "field_mappings": {
        "email": {"target": "user.email", "type": "email"},
        "first_name": "user.first_name",
        "last_name": "user.last_name",
        "phone_number": {"target": "user.phone_number", "type": "phone_number"},
        "custom_fields.member_level": "user.member_level",
        "updated_at": {"target": "user.sendgrid_updated_at", "type": "timestamp"},
    },
    "validation_rules": {"required_fields": ["email"], "data_types": {"phone_number": "phone_number"}},
    "sync_config": {"key": "id"},
}


@pytest.fixture
def emulator() -> Iterator[SendGridEmulator]:
    with sendgrid_emulator(contacts=30, suppressions=40, seed=12) as em:
        yield em


@pytest.fixture
def catalog(db_url: str, fernet_key: str, emulator: SendGridEmulator) -> str:
    register(
        db_url,
        mapping(emulator.url, "bounces", BOUNCE_RULES),
        mapping(emulator.url, "contacts", CONTACT_RULES),
    )
    return db_url


def rows(url: str, sql: str) -> list[sa.Row]:
    with get_engine(url).connect() as conn:
        return list(conn.execute(sa.text(sql)).all())


def test_bounces_load_exactly_and_a_second_run_adds_nothing(catalog: str, emulator: SendGridEmulator) -> None:
    first = run_mapping(catalog, "sendgrid/bounces")
    source = {b["email"]: b for b in emulator.suppressions["bounces"]}
    assert first.records_read == 40 and first.pages >= 1
    assert first.records_written + first.records_rejected == 40
    loaded = rows(
        catalog, "select esm_external_id, email, suppressed_at, reason, smtp_status from email_suppression"
    )
    assert len(loaded) == first.records_written
    for external_id, email, suppressed_at, reason, status in loaded:
        bounce = source[external_id]
        assert email == bounce["email"]
        assert as_utc(suppressed_at) == dt.datetime.fromtimestamp(bounce["created"], dt.UTC)
        assert (reason, status) == (bounce["reason"], bounce["status"])
    malformed = {e for e in source if "@@" in e or "@" not in e}
    assert malformed and not malformed & {r[0] for r in loaded}
    quarantined = {r[0] for r in rows(catalog, "select external_id from esm_quarantine")}
    assert malformed <= quarantined and len(quarantined) == first.records_rejected

    again = run_mapping(catalog, "sendgrid/bounces")
    full = run_mapping(catalog, "sendgrid/bounces", full_refresh=True)
    assert again.records_written <= first.records_written and full.records_read == 40
    assert len(rows(catalog, "select esm_external_id from email_suppression")) == first.records_written


def test_contacts_load_into_user_typed_and_without_duplicates(
    catalog: str, emulator: SendGridEmulator
) -> None:
    first = run_mapping(catalog, "sendgrid/contacts")
    assert first.records_read == 30 and first.records_rejected > 0  # seeded hand-typed phone numbers
    loaded = rows(
        catalog,
        "select esm_external_id, email, first_name, last_name, phone_number, member_level, sendgrid_updated_at "
        'from "user" where esm_external_id is not null',
    )
    by_id = {c["id"]: c for c in emulator.contacts.values()}
    assert len(loaded) == first.records_written
    for external_id, email, first_name, last_name, phone, level, updated in loaded:
        contact = by_id[external_id]
        assert (email, first_name, last_name) == (
            contact["email"],
            contact["first_name"],
            contact["last_name"],
        )
        assert phone == contact["phone_number"] and phone.startswith("+66")
        assert level == contact["custom_fields"]["member_level"]
        assert as_utc(updated) == dt.datetime.fromisoformat(contact["updated_at"].replace("Z", "+00:00"))
    bad_phones = {c["id"] for c in emulator.contacts.values() if not c["phone_number"].startswith("+66")}
    assert bad_phones and not bad_phones & {r[0] for r in loaded}

    full = run_mapping(catalog, "sendgrid/contacts", full_refresh=True)
    assert full.records_read == 30
    assert (
        len(rows(catalog, 'select id from "user" where esm_external_id is not null')) == first.records_written
    )


def test_a_wrong_key_fails_the_sync_as_auth_and_never_shows_the_key(
    catalog: str, emulator: SendGridEmulator, fernet_key: str
) -> None:
    other = mapping(
        emulator.url, "blocks", {**BOUNCE_RULES, "field_mappings": {"email": "email_block.email"}}
    )
    other["system_name"] = "SendGrid Old"
    other["credentials"] = {"api_key": "SG.revoked.key-that-is-wrong-123456"}
    register(catalog, other)
    with pytest.raises(SyncFailed) as info:
        run_mapping(catalog, "sendgrid old/blocks")
    assert info.value.report.error_class == "auth"
    assert "key-that-is-wrong" not in str(info.value) and KEY not in str(info.value)
