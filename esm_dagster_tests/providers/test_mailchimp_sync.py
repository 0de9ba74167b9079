"""Mailchimp members through the engine: emulator over loopback -> rules -> `user` table (SQLite and
PostgreSQL), exact typed values, no duplicates on re-runs, an upserted member read back."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import MappingInput, upsert_mapping
from esm_dagster.catalog.models import ExternalSystemMapping
from esm_dagster.catalog.types import UTCDateTime
from esm_dagster.providers.context import ProviderConfigError
from esm_dagster.providers.factory import build_provider
from esm_dagster.providers.mailchimp import MailchimpProvider
from esm_dagster.sandbox.mailchimp import MailchimpEmulator
from esm_dagster.security.secret import Secret
from esm_dagster.security.vault import Vault
from esm_dagster.sync.engine import run_mapping
from esm_dagster.transport import TransportPolicy

KEY = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d-us6"
RULES: dict[str, Any] = {
    "field_mappings": {
        "email_address": {"target": "user.email", "type": "email"},
        "full_name": "user.full_name",
        "status": "user.mailchimp_status",
        "vip": {"target": "user.mailchimp_vip", "type": "boolean"},
        "merge_fields.BIRTHDAY": "user.birthday_mm_dd",
        "last_changed": {"target": "user.mailchimp_changed_at", "type": "timestamp"},
        "timestamp_signup": {"target": "user.mailchimp_signup_at", "type": "timestamp"},
    },
    "validation_rules": {"required_fields": ["email_address"]},
    "sync_config": {"stream": "members", "batch_size": 30},
}
COLUMNS = {
    "email": sa.Text(),
    "full_name": sa.Text(),
    "mailchimp_status": sa.Text(),
    "mailchimp_vip": sa.Boolean(),
    "birthday_mm_dd": sa.Text(),
    "mailchimp_changed_at": UTCDateTime(),
    "mailchimp_signup_at": UTCDateTime(),
}


@pytest.fixture
def emulator() -> Iterator[MailchimpEmulator]:
    # The emulator's clock runs 1.5 s behind: a member written just now is before the next run's
    # window end (whole seconds, exclusive) instead of waiting for the run after it.
    with MailchimpEmulator([KEY], members=70, archived=3, seed=21, clock=lambda: time.time() - 1.5) as em:
        yield em


def mapping(url: str, emulator: MailchimpEmulator, **changes: Any) -> MappingInput:
    fields: dict[str, Any] = {
        "system_name": "Club Mailchimp",
        "system_type": "email_service",
        "provider_name": "mailchimp",
        "api_endpoint": f"{emulator.url}/3.0",
        "authentication_type": "basic_auth",
        "credentials": {"api_key": KEY, "list_id": emulator.list_id},
        "mapping_rules": RULES,
        "sync_frequency": "daily",
        "retry_attempts": 2,
    }
    fields.update(changes)
    return MappingInput.model_validate(fields)


@pytest.fixture
def catalog(db_url: str, fernet_key: str, emulator: MailchimpEmulator) -> str:
    with session_factory(db_url).begin() as session:
        upsert_mapping(session, Vault.from_env(), mapping(db_url, emulator))
    return db_url


def expected_row(member: dict[str, Any]) -> dict[str, Any] | None:
    try:
        email = validate_email(
            member["email_address"], check_deliverability=False, allow_smtputf8=True
        ).normalized
    except EmailNotValidError:
        return None

    def moment(text: str) -> dt.datetime:
        return dt.datetime.fromisoformat(text)

    return {
        "email": email,
        "full_name": member["full_name"],
        "mailchimp_status": member["status"],
        "mailchimp_vip": member["vip"],
        "birthday_mm_dd": member["merge_fields"]["BIRTHDAY"] or None,  # the rules load "" as NULL
        "mailchimp_changed_at": moment(member["last_changed"]),
        "mailchimp_signup_at": moment(member["timestamp_signup"]),
    }


def loaded(url: str) -> dict[str, dict[str, Any]]:
    user = sa.table(
        "user",
        sa.column("esm_external_id"),
        sa.column("esm_source"),
        *(sa.column(c, t) for c, t in COLUMNS.items()),
    )
    query = sa.select(user.c.esm_external_id, *(user.c[c] for c in COLUMNS)).where(
        user.c.esm_source == "club_mailchimp/members"
    )
    with get_engine(url).connect() as conn:
        return {row[0]: dict(zip(COLUMNS, row[1:], strict=True)) for row in conn.execute(query)}


def test_members_sync_exactly_and_reruns_write_no_duplicates(
    catalog: str, emulator: MailchimpEmulator
) -> None:
    first = run_mapping(catalog, "Club Mailchimp/members")
    members = emulator.members()
    expected = {m["id"]: row for m in members if (row := expected_row(m)) is not None}
    assert first.status == "success" and first.records_read == len(members) == 67
    assert first.records_rejected == len(members) - len(expected) > 0  # the seed's invalid addresses
    assert loaded(catalog) == expected

    again = run_mapping(catalog, "Club Mailchimp/members")
    assert again.records_read == 0
    full = run_mapping(catalog, "Club Mailchimp/members", full_refresh=True)
    assert full.records_written == first.records_written and loaded(catalog) == expected


def test_an_upserted_member_comes_back_through_the_engine(catalog: str, emulator: MailchimpEmulator) -> None:
    run_mapping(catalog, "Club Mailchimp/members")
    policy = TransportPolicy(2, 5, base_delay=0.01)
    with MailchimpProvider(
        emulator.url, api_key=Secret(KEY), list_id=emulator.list_id, policy=policy
    ) as provider:
        record = {
            "email_address": "pushed@example.com",
            "status_if_new": "subscribed",
            "merge_fields": {"FNAME": "Pushed", "LNAME": "Member", "BIRTHDAY": "02/29"},
        }
        [member] = provider.write("members_upsert", [record], idempotency_keys=["esm:user:pushed:v1"])
        provider.write("members_upsert", [record], idempotency_keys=["esm:user:pushed:v1"])
    report = run_mapping(catalog, "Club Mailchimp/members")
    assert report.records_read == 1
    row = loaded(catalog)[member["id"]]
    assert (row["email"], row["full_name"], row["birthday_mm_dd"]) == (
        "pushed@example.com",
        "Pushed Member",
        "02/29",
    )


def test_an_endpoint_of_another_data_centre_is_a_config_error(emulator: MailchimpEmulator) -> None:
    item = mapping("", emulator, api_endpoint="https://us9.api.mailchimp.com/3.0")
    row = ExternalSystemMapping(
        system_name=item.system_name,
        provider_name=item.provider_name,
        api_endpoint=item.api_endpoint,
        retry_attempts=0,
        timeout_seconds=5,
        mapping_rules=item.mapping_rules,
    )
    with pytest.raises(ProviderConfigError, match=r"us9\.api\.mailchimp\.com") as caught:
        build_provider(row, {"api_key": Secret(KEY), "list_id": emulator.list_id})
    assert (
        "'us6'" in str(caught.value)
        and "Club Mailchimp" in str(caught.value)
        and KEY not in str(caught.value)
    )
