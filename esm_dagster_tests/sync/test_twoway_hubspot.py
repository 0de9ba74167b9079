"""Two-way sync of HubSpot contacts <-> `user`: batch upsert by email (`properties` unwrapped, the
email sent with every write), an archived contact soft-deleted, a fixed point after one round."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from esm_dagster.sandbox.hubspot import HubSpotEmulator
from esm_dagster.sync.engine import run_mapping
from esm_dagster_tests.providers.engine_helpers import register_mapping
from esm_dagster_tests.sync.twoway_helpers import change_user, user_rows

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
SOURCE = "club_crm/contacts"
COLUMNS = ["email", "full_name", "phone_number"]


@pytest.fixture
def emulator() -> Iterator[HubSpotEmulator]:
    with HubSpotEmulator([TOKEN], contacts=0, archived=0, seed=4) as em:
        yield em


def _mapping(emulator: HubSpotEmulator) -> dict[str, Any]:
    return {
        "system_name": "Club CRM",
        "system_type": "crm",
        "provider_name": "hubspot",
        "api_endpoint": emulator.url,
        "authentication_type": "api_key",
        "credentials": {"private_app_token": TOKEN},
        "retry_attempts": 1,
        "mapping_rules": {
            "field_mappings": {
                "properties.email": {"target": "user.email", "type": "email"},
                "properties.firstname": "user.full_name",
                "properties.phone": {"target": "user.phone_number", "type": "phone_number", "region": "TH"},
            },
            "sync_config": {
                "stream": "contacts",
                "sync_direction": "bidirectional",
                "conflict_resolution": "internal_wins",
                "outbound": {
                    "create": "contacts_upsert",
                    "update": "contacts_upsert",
                    "key_field": None,
                    "always": ["properties.email"],
                    "unwrap": "properties",
                },
            },
        },
    }


def _upserts(emulator: HubSpotEmulator) -> int:
    return sum(1 for r in emulator.requests if r.method == "POST" and r.path.endswith("/batch/upsert"))


def test_contacts_round_trip_and_archived_ones_are_soft_deleted(
    db_url: str, fernet_key: str, emulator: HubSpotEmulator
) -> None:
    ann = emulator.add_contact(email="ann@example.com", firstname="Ann", phone="+66812345678")["id"]
    bob = emulator.add_contact(email="bob@example.com", firstname="Bob")["id"]
    register_mapping(db_url, _mapping(emulator))
    first = run_mapping(db_url, "Club CRM")
    assert (first.local_updates, first.records_pushed) == (2, 0)
    change_user(db_url, SOURCE, ann, dt.datetime(2026, 12, 2, tzinfo=dt.UTC), phone_number="+66899999999")
    pushed = run_mapping(db_url, "Club CRM")
    assert (pushed.records_pushed, pushed.local_updates, _upserts(emulator)) == (1, 0, 1)
    contact = emulator.get_contact(ann)
    assert contact is not None and contact["properties"]["phone"] == "+66899999999"
    assert contact["properties"]["email"] == "ann@example.com"
    settled = run_mapping(db_url, "Club CRM")
    assert (settled.records_pushed, settled.local_updates, _upserts(emulator)) == (0, 0, 1)
    emulator.archive_contact(bob)
    deleted = run_mapping(db_url, "Club CRM")
    assert deleted.records_deleted == 1
    rows = user_rows(db_url, SOURCE, COLUMNS)
    assert rows[bob]["is_deleted"] and not rows[ann]["is_deleted"]
