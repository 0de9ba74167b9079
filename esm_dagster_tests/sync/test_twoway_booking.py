"""Two-way sync of the booking platform's members (declarative `rest` provider) <-> `member`:
a create whose answer is lost is looked up by its marker, never sent twice; `latest_wins` reads
the platform's own `updated_at`."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine
from esm_dagster.catalog.types import UTCDateTime
from esm_dagster.sandbox.booking import BookingEmulator
from esm_dagster.sync.engine import run_mapping
from esm_dagster_tests.providers.booking_helpers import KEY, rest_block
from esm_dagster_tests.providers.engine_helpers import register_mapping

SOURCE = "club_booking/members"


@pytest.fixture
def emulator() -> Iterator[BookingEmulator]:
    with BookingEmulator(api_keys=[KEY], members=3, bookings=0, seed=6) as em:
        yield em


def _mapping(emulator: BookingEmulator) -> dict[str, Any]:
    return {
        "system_name": "Club Booking",
        "system_type": "booking_platform",
        "provider_name": "rest",
        "api_endpoint": emulator.url,
        "authentication_type": "api_key",
        "credentials": {"api_key": KEY},
        "retry_attempts": 2,
        "mapping_rules": {
            "field_mappings": {
                "first_name": "member.first_name",
                "email": {"target": "member.email", "type": "email"},
                "phone": {"target": "member.phone", "type": "phone_number", "region": "TH"},
            },
            "sync_config": {
                "stream": "members",
                "sync_direction": "bidirectional",
                "conflict_resolution": "latest_wins",
                "external_updated_at": "updated_at",
                "outbound": {
                    "create": "create_member",
                    "update": "update_member",
                    "updated_at_column": "changed_at",
                },
            },
            "x-rest": rest_block(),
        },
    }


def _member_table() -> sa.TableClause:
    return sa.table(
        "member",
        sa.column("id", sa.Uuid()),
        sa.column("first_name", sa.Text()),
        sa.column("email", sa.Text()),
        sa.column("phone", sa.Text()),
        sa.column("changed_at", UTCDateTime()),
        sa.column("esm_source", sa.Text()),
        sa.column("esm_external_id", sa.Text()),
    )


def _rows(url: str) -> dict[str, dict[str, Any]]:
    member = _member_table()
    with get_engine(url).connect() as conn:
        rows = conn.execute(sa.select(member).where(member.c.esm_source == SOURCE)).mappings()
        return {str(r["esm_external_id"]): dict(r) for r in rows}


def _writes(emulator: BookingEmulator) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.requests if r.method in ("POST", "PATCH")]


def test_a_lost_create_is_found_not_resent_and_latest_wins_by_updated_at(
    db_url: str, fernet_key: str, emulator: BookingEmulator
) -> None:
    register_mapping(db_url, _mapping(emulator))
    assert run_mapping(db_url, "Club Booking").local_updates == 3
    member = _member_table()
    with get_engine(db_url).begin() as conn:
        conn.execute(
            sa.insert(member).values(
                id=uuid.uuid4(), first_name="Nok", email="nok@example.com", phone="+66812345678"
            )
        )
    emulator.faults.lose_response_next(1, path="/api/v2/members")
    emulator.reset_request_log()
    created = run_mapping(db_url, "Club Booking")
    assert created.records_pushed == 1 and _writes(emulator) == [("POST", "/api/v2/members")]
    assert emulator.count("members") == 4  # the lost answer was looked up, not resent
    (new,) = [m for m in emulator.records("members") if m["email"] == "nok@example.com"]
    assert _rows(db_url)[str(new["id"])]["first_name"] == "Nok"
    assert run_mapping(db_url, "Club Booking").records_pushed == 0

    # Both sides change the same member's phone; the platform's change is the later one.
    target = str(new["id"])
    with get_engine(db_url).begin() as conn:
        conn.execute(
            sa.update(member)
            .where(member.c.esm_external_id == target)
            .values(phone="+66811111111", changed_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        )
    emulator.reset_request_log()
    with httpx.Client(base_url=emulator.url, headers={"X-Api-Key": KEY}) as client:
        assert client.patch(f"/api/v2/members/{target}", json={"phone": "+66822222222"}).status_code == 200
    report = run_mapping(db_url, "Club Booking")
    assert (report.conflicts_decided, report.records_pushed) == (1, 0)
    assert _rows(db_url)[target]["phone"] == "+66822222222"
    assert _writes(emulator) == [("PATCH", f"/api/v2/members/{target}")]  # only the test's own
