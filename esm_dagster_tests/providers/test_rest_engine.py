"""The `rest` provider through the engine: booking-platform members and bookings synced into SQLite and
PostgreSQL with exact, typed values; re-runs write no duplicates; a bad `x-rest` block is refused
when the mapping is written, naming the field."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.mappings import MappingError, MappingInput, upsert_mapping
from esm_dagster.sandbox.booking import BookingEmulator
from esm_dagster.sandbox.booking.data import parse_iso
from esm_dagster.security.vault import Vault
from esm_dagster.sync.engine import run_mapping
from esm_dagster_tests.providers.booking_helpers import KEY, rest_block
from esm_dagster_tests.providers.engine_helpers import as_utc, register_mapping, table_rows


@pytest.fixture
def emulator() -> Iterator[BookingEmulator]:
    with BookingEmulator(api_keys=[KEY], members=45, bookings=120, seed=9) as em:
        yield em


def mapping(emulator: BookingEmulator, name: str, stream: str, rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "system_name": name,
        "system_type": "booking_platform",
        "provider_name": "rest",
        "api_endpoint": emulator.url,
        "authentication_type": "api_key",
        "credentials": {"api_key": KEY},
        "retry_attempts": 2,
        "mapping_rules": {
            **rules,
            "sync_config": {"stream": stream, "sync_direction": "inbound", "batch_size": 10},
            "x-rest": rest_block(),
        },
    }


MEMBER_RULES: dict[str, Any] = {
    "field_mappings": {
        "email": "user.email",
        "phone": "user.phone_number",
        "first_name": "user.first_name",
        "last_name": "user.last_name",
        "level": {"target": "user.padel_level", "type": "decimal"},
        "marketing_opt_in": {"target": "user.marketing_opt_in", "type": "boolean"},
        "updated_at": {"target": "user.booking_updated_at", "type": "timestamp"},
    },
    "transformations": {"timezone": "Asia/Bangkok"},
    "validation_rules": {
        "required_fields": ["email"],
        "data_types": {"email": "email", "phone": "phone_number"},
        "default_region": "TH",
    },
}
BOOKING_RULES: dict[str, Any] = {
    "field_mappings": {
        "court_id": "booking.court_id",
        "member_id": {"target": "booking.member_id", "type": "integer"},
        "starts_at": {"target": "booking.starts_at", "type": "timestamp"},
        "ends_at": {"target": "booking.ends_at", "type": "timestamp"},
        "price_thb": {"target": "booking.price", "type": "money", "currency": "THB"},
        "status": "booking.status",
        "notes": "booking.notes",
    },
    "validation_rules": {"required_fields": ["court_id", "starts_at", "price_thb"]},
}


def _acceptable(member: dict[str, Any]) -> bool:
    """What the rules must accept, decided with the libraries themselves, not with our rules code."""
    try:
        validate_email(member["email"] or "", check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError:
        return False
    if member["phone"] is None:
        return True
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(member["phone"], "TH"))
    except phonenumbers.NumberParseException:
        return False


def test_members_land_in_user_exactly_and_rejects_are_quarantined(
    db_url: str, fernet_key: str, emulator: BookingEmulator
) -> None:
    register_mapping(db_url, mapping(emulator, "Padel Booking Members", "members", MEMBER_RULES))
    report = run_mapping(db_url, "Padel Booking Members")
    members = {str(m["id"]): m for m in emulator.records("members")}
    accepted = {k: m for k, m in members.items() if _acceptable(m)}
    assert report.status == "success" and report.records_read == len(members) and report.pages >= 5
    assert (
        report.records_written == len(accepted)
        and report.records_rejected == len(members) - len(accepted) > 0
    )
    columns = ["email", "phone_number", "first_name", "last_name", "padel_level", "marketing_opt_in",
               "booking_updated_at"]  # fmt: skip
    rows = table_rows(db_url, "user", columns)
    rows = {k: v for k, v in rows.items() if k in members}  # the catalog's own users have no external id here
    assert set(rows) == set(accepted)
    for member_id, row in rows.items():
        member = accepted[member_id]
        phone = member["phone"] and phonenumbers.format_number(
            phonenumbers.parse(member["phone"], "TH"), phonenumbers.PhoneNumberFormat.E164
        )
        assert row["email"] == validate_email(member["email"], check_deliverability=False).normalized
        assert (row["phone_number"], row["first_name"], row["last_name"]) == (
            phone,
            member["first_name"],
            member["last_name"],
        )
        assert Decimal(str(row["padel_level"])) == Decimal(str(member["level"]))
        assert bool(row["marketing_opt_in"]) is member["marketing_opt_in"]
        assert as_utc(row["booking_updated_at"]).timestamp() == parse_iso(member["updated_at"])

    again = run_mapping(db_url, "Padel Booking Members")  # incremental: the server-side window
    full = run_mapping(db_url, "Padel Booking Members", full_refresh=True)
    assert again.records_read == 0
    assert full.records_read == len(members) and full.records_written == len(accepted)
    assert set(table_rows(db_url, "user", ["email"])) - {"None"} >= set(accepted)
    assert len([k for k in table_rows(db_url, "user", ["email"]) if k in members]) == len(accepted)


def test_bookings_land_with_thb_prices_and_bangkok_times(
    db_url: str, fernet_key: str, emulator: BookingEmulator
) -> None:
    register_mapping(db_url, mapping(emulator, "Padel Booking", "bookings", BOOKING_RULES))
    first = run_mapping(db_url, "Padel Booking")
    bookings = {b["id"]: b for b in emulator.records("bookings")}
    assert first.status == "success" and first.records_written == len(bookings) and first.pages >= 12
    columns = ["court_id", "member_id", "starts_at", "ends_at", "price", "status", "notes"]
    rows = table_rows(db_url, "booking", columns)
    assert set(rows) == set(bookings)
    for booking_id, row in rows.items():
        booking = bookings[booking_id]
        assert (row["court_id"], row["member_id"], row["status"], row["notes"]) == (
            booking["court_id"],
            booking["member_id"],
            booking["status"],
            booking["notes"],
        )
        assert Decimal(str(row["price"])) == Decimal(booking["price_thb"])
        assert as_utc(row["starts_at"]).timestamp() == parse_iso(booking["starts_at"])
        assert as_utc(row["ends_at"]).timestamp() == parse_iso(booking["ends_at"])
    assert run_mapping(db_url, "Padel Booking").records_read == 0
    assert run_mapping(db_url, "Padel Booking", full_refresh=True).records_written == len(bookings)
    assert len(table_rows(db_url, "booking", ["status"])) == len(bookings)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda b: b["streams"]["bookings"]["paginator"].pop("cursor_path"),
            "mapping_rules.x-rest.streams.bookings.paginator.cursor_path: required",
        ),
        (
            lambda b: b["streams"]["members"]["paginator"].update(type="offest"),
            "mapping_rules.x-rest.streams.members.paginator: Input tag 'offest'",
        ),
        (
            lambda b: b["auth"].update(**{"in": "cookie"}),
            "mapping_rules.x-rest.auth.in: Input should be 'header' or 'query' (got 'cookie')",
        ),
        (
            lambda b: b["streams"]["courts"].update(path="courts"),
            "mapping_rules.x-rest.streams.courts.path: 'courts' must be a path starting with '/'",
        ),
        (
            lambda b: b["writes"]["create_member"].pop("find"),
            "mapping_rules.x-rest.writes.create_member: find and marker_field: required when idempotency is 'none'",
        ),
        (
            lambda b: b["writes"]["create_booking"].pop("idempotency_header"),
            "mapping_rules.x-rest.writes.create_booking: idempotency_header: required",
        ),
        (lambda b: b.update(headers={"Authorization": "x"}), "mapping_rules.x-rest.headers: "),
        (
            lambda b: b["streams"]["bookings"].update(primary_key="booking_id"),
            "primary_key 'booking_id' differs",
        ),
        (lambda b: b.update(stream_list=[]), "mapping_rules.x-rest.stream_list: unknown option"),
    ],
)
def test_a_bad_rest_block_is_refused_when_the_mapping_is_written(
    tmp_path: Path, fernet_key: str, emulator: BookingEmulator, change: Any, expected: str
) -> None:
    document = mapping(emulator, "Padel Booking", "bookings", BOOKING_RULES)
    block = copy.deepcopy(document["mapping_rules"]["x-rest"])
    change(block)
    document["mapping_rules"]["x-rest"] = block
    with pytest.raises(MappingError) as caught:
        write_unmigrated(tmp_path, document)
    assert str(caught.value).startswith("mapping 'Padel Booking': ")
    assert expected in str(caught.value)
    assert KEY not in str(caught.value)


def test_a_rest_mapping_without_its_block_or_with_an_unknown_stream_is_refused(
    tmp_path: Path, fernet_key: str, emulator: BookingEmulator
) -> None:
    document = mapping(emulator, "Padel Booking", "bookings", BOOKING_RULES)
    del document["mapping_rules"]["x-rest"]
    with pytest.raises(MappingError, match=r"mapping_rules\.x-rest: required for provider 'rest'"):
        write_unmigrated(tmp_path, document)
    document = mapping(emulator, "Padel Booking", "tournaments", BOOKING_RULES)
    with pytest.raises(MappingError, match="'tournaments' is not a stream of rest"):
        write_unmigrated(tmp_path, document)


def write_unmigrated(tmp_path: Path, document: dict[str, Any]) -> None:
    """`upsert_mapping` on a catalog with no tables: validation must refuse before any query
    (a document that got through would fail on the missing table, not with a MappingError)."""
    with session_factory(f"sqlite:///{tmp_path / 'catalog.db'}")() as session:
        upsert_mapping(session, Vault.from_env(), MappingInput.model_validate(document))


PAYMENT_RULES: dict[str, Any] = {
    "field_mappings": {
        "booking_id": "booking_payment.booking_external_id",
        "amount_satang": {
            "target": "booking_payment.amount",
            "type": "money",
            "currency": "THB",
            "minor_units": True,
        },
        "method": "booking_payment.method",
        "paid_at": {"target": "booking_payment.paid_at", "type": "timestamp", "unit": "s"},
    },
}


def test_payments_without_a_server_window_are_windowed_client_side(
    db_url: str, fernet_key: str, emulator: BookingEmulator
) -> None:
    """Link-header paging, no server-side filter: an incremental run reads the pages again but keeps
    nothing older than its window, so it loads nothing twice."""
    register_mapping(db_url, mapping(emulator, "Padel Payments", "payments", PAYMENT_RULES))
    first = run_mapping(db_url, "Padel Payments")
    payments = {p["id"]: p for p in emulator.records("payments")}
    assert first.records_written == len(payments) and first.pages >= 5
    rows = table_rows(db_url, "booking_payment", ["booking_external_id", "amount", "method", "paid_at"])
    assert set(rows) == set(payments)
    for payment_id, row in rows.items():
        payment = payments[payment_id]
        assert Decimal(str(row["amount"])) == Decimal(payment["amount_satang"]) / 100
        assert (row["booking_external_id"], row["method"]) == (payment["booking_id"], payment["method"])
        assert as_utc(row["paid_at"]).timestamp() == payment["paid_at"]
    emulator.reset_request_log()
    again = run_mapping(db_url, "Padel Payments")
    assert again.records_read == 0 and again.pages == first.pages  # every page read, none kept
    assert len(emulator.requests) == first.pages
    assert len(table_rows(db_url, "booking_payment", ["method"])) == len(payments)
