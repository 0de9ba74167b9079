"""The engine end to end: real HTTP to the Stripe emulator, real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import re
from decimal import Decimal

import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import DEFAULT_ERROR_THRESHOLD as ERROR_THRESHOLD
from esm_dagster.catalog.mappings import get_mapping
from esm_dagster.catalog.models import ExternalSystemMapping, QuarantineRecord, SyncRun, SyncStatus
from esm_dagster.demo.run import DEMO_STRIPE_KEY
from esm_dagster.sync.engine import SyncFailed, run_mapping
from esm_dagster_tests.stripe_fixtures import demo_catalog, stripe_emulator

EXPONENT = {"jpy": 0, "usd": 2, "thb": 2, "kwd": 3}


@pytest.fixture
def emulator():
    with stripe_emulator() as emu:
        yield emu


@pytest.fixture
def catalog(db_url: str, fernet_key: str, emulator) -> str:
    demo_catalog(db_url, emulator)
    return db_url


def count(url: str, table: str) -> int:
    with get_engine(url).connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one()


def test_customers_sync_rerun_and_full_refresh_write_no_duplicates(catalog: str, emulator) -> None:
    first = run_mapping(catalog, "stripe/customers")
    assert first.status == "success"
    assert first.records_read == 60
    assert first.records_written + first.records_rejected == first.records_read
    assert first.records_rejected > 0, "the emulator seeds invalid emails/phones: expected rejects"
    users = count(catalog, "user")
    quarantined = count(catalog, "esm_quarantine")
    assert users == first.records_written + 1  # plus the catalog's own demo owner
    assert quarantined == first.records_rejected

    again = run_mapping(catalog, "stripe/customers")
    assert again.records_read == 0  # incremental: nothing new since the high-water mark
    full = run_mapping(catalog, "stripe/customers", full_refresh=True)
    assert full.records_read == 60 and full.records_written == first.records_written
    assert count(catalog, "user") == users
    assert count(catalog, "esm_quarantine") == quarantined
    with session_factory(catalog)() as session:
        seen = session.scalars(sa.select(QuarantineRecord.seen_count)).all()
    assert set(seen) == {2}


def test_loaded_values_are_typed_exactly(catalog: str, emulator) -> None:
    run_mapping(catalog, "stripe/charges")
    source = {c["id"]: c for c in emulator_charges(emulator)}
    with get_engine(catalog).connect() as conn:
        rows = conn.execute(sa.text("select esm_external_id, amount, currency, paid_at from payment")).all()
        phones = conn.execute(sa.text('select phone_number from "user" where phone_number is not null')).all()
    assert len(rows) > 0
    for external_id, amount, _currency, paid_at in rows:
        charge = source[external_id]
        assert isinstance(amount, Decimal) or isinstance(Decimal(str(amount)), Decimal)
        expected = Decimal(charge["amount"]).scaleb(-EXPONENT[charge["currency"]])
        assert Decimal(str(amount)) == expected
        assert paid_at is not None
    assert {r.currency.lower() for r in rows} >= {"jpy", "usd", "thb", "kwd"}
    for (phone,) in phones:
        assert re.fullmatch(r"\+[1-9]\d{7,14}", phone)


def emulator_charges(emulator) -> list[dict]:
    import httpx

    out, after = [], None
    with httpx.Client(base_url=emulator.url, headers={"Authorization": f"Bearer {DEMO_STRIPE_KEY}"}) as http:
        while True:
            params = {"limit": 100, **({"starting_after": after} if after else {})}
            page = http.get("/v1/charges", params=params).json()
            out += page["data"]
            if not page["has_more"]:
                return out
            after = page["data"][-1]["id"]


def test_quarantine_keeps_field_rule_value_and_no_secret(catalog: str) -> None:
    run_mapping(catalog, "stripe/customers")
    with session_factory(catalog)() as session:
        rejected = session.scalars(sa.select(QuarantineRecord)).all()
    assert rejected
    for record in rejected:
        assert record.errors and {"field", "rule", "message"} <= set(record.errors[0])
        assert record.payload.get("id") == record.external_id
    rules = {e["rule"] for r in rejected for e in r.errors}
    assert rules & {"email", "phone_number", "required"}


def test_wrong_key_fails_cleanly_counts_errors_and_never_leaks(
    catalog: str, emulator, fernet_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    from esm_dagster.security.vault import Vault

    wrong_key = "sk_test_wrongwrongwrong1234567890"
    with session_factory(catalog).begin() as session:
        row = get_mapping(session, "stripe/charges")
        row.credentials = Vault.from_env().encrypt({"api_key": wrong_key})
    caplog.set_level(logging.DEBUG)
    for attempt in range(1, ERROR_THRESHOLD + 1):
        with pytest.raises(SyncFailed) as info:
            run_mapping(catalog, "stripe/charges")
        assert info.value.report.error_class == "auth"
        with session_factory(catalog)() as session:
            row = get_mapping(session, "stripe/charges")
            assert row.error_count == attempt
            assert row.sync_status == (SyncStatus.ERROR if attempt == ERROR_THRESHOLD else SyncStatus.ACTIVE)
        for text in (str(info.value), row.last_error_message or "", caplog.text):
            assert wrong_key not in text and "wrongwrong" not in text
    with session_factory(catalog)() as session:
        runs = session.scalars(sa.select(SyncRun).where(SyncRun.status == "failed")).all()
    assert len(runs) == ERROR_THRESHOLD and all(r.error_class == "auth" for r in runs)


def test_success_after_errors_resets_the_row(catalog: str, emulator) -> None:
    with session_factory(catalog).begin() as session:
        row = get_mapping(session, "stripe/customers")
        row.error_count, row.sync_status, row.last_error_message = 3, SyncStatus.ERROR, "boom"
    run_mapping(catalog, "stripe/customers")
    with session_factory(catalog)() as session:
        row = get_mapping(session, "stripe/customers")
        assert (row.error_count, row.sync_status, row.last_error_message) == (0, SyncStatus.ACTIVE, None)
        assert row.last_sync_at is not None


def test_database_never_holds_the_clear_key(catalog: str) -> None:
    run_mapping(catalog, "stripe/customers")
    engine = get_engine(catalog)
    with engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.select(sa.text("*")).select_from(sa.table(table))):
                assert DEMO_STRIPE_KEY not in str(tuple(row)), table


def test_malformed_rules_fail_only_that_mapping(catalog: str) -> None:
    with session_factory(catalog).begin() as session:
        row = get_mapping(session, "stripe/charges")
        row.mapping_rules = {**row.mapping_rules, "transformations": {"timezone": "Mars/Olympus"}}
        broken_id = str(row.id)
    with pytest.raises(SyncFailed, match="Mars/Olympus"):
        run_mapping(catalog, broken_id)
    assert run_mapping(catalog, "stripe/customers").status == "success"
    with session_factory(catalog)() as session:
        statuses = dict(
            session.execute(sa.select(ExternalSystemMapping.id, ExternalSystemMapping.sync_status)).all()
        )
    assert list(statuses.values()).count(SyncStatus.ERROR) == 1


def test_failed_run_resumes_from_its_last_checkpoint_with_nothing_lost_or_doubled(
    catalog: str, emulator
) -> None:
    from esm_dagster.sync.engine import _load_cursor

    with session_factory(catalog).begin() as session:
        row = get_mapping(session, "stripe/charges")
        row.mapping_rules = {
            **row.mapping_rules,
            "sync_config": {**row.mapping_rules["sync_config"], "batch_size": 100},
        }
        mapping_id = row.id
    emulator.faults.limit_rate(0.0001, burst=2)  # two pages, then 429s
    with pytest.raises(SyncFailed) as info:
        run_mapping(catalog, "stripe/charges")
    assert info.value.report.error_class == "rate_limit"
    assert info.value.report.records_read == 200
    partial = count(catalog, "payment")
    assert 0 < partial < 300
    cursor = _load_cursor(catalog, mapping_id, "charges")
    assert cursor["pending"]["after"] and cursor.get("high_water") is None

    emulator.faults.limit_rate(None)
    resumed = run_mapping(catalog, "stripe/charges")
    assert resumed.resumed and resumed.records_read == 100
    accepted = count(catalog, "payment")
    assert accepted + count(catalog, "esm_quarantine") == 300
    with get_engine(catalog).connect() as conn:
        ids = conn.execute(sa.text("select esm_external_id from payment")).scalars().all()
    assert len(ids) == len(set(ids))
    assert set(ids) <= {c["id"] for c in emulator_charges(emulator)}
    assert run_mapping(catalog, "stripe/charges").records_read == 0
    assert run_mapping(catalog, "stripe/charges", full_refresh=True).records_written == accepted
    assert count(catalog, "payment") == accepted


def test_a_batch_of_many_rejects_is_quarantined_once_refreshed_then_resolved(
    db_url: str, fernet_key: str
) -> None:
    """Enough rejects in one batch for the bulk (COPY) path on PostgreSQL: each stored once with its
    redacted payload, a re-read counts a second sighting, and once the rules accept them the same
    rows are resolved (PostgreSQL: one array-bound UPDATE per batch)."""
    from esm_dagster.rules.redaction import redact_record
    from esm_dagster.sync import bulk

    with stripe_emulator(charges=600) as emulator:
        demo_catalog(db_url, emulator)
        first = run_mapping(db_url, "stripe/charges")
        assert first.batches == 1 and first.records_rejected >= bulk.COPY_MIN_ROWS
        source = {c["id"]: c for c in emulator_charges(emulator)}
        with session_factory(db_url)() as session:
            stored = session.scalars(sa.select(QuarantineRecord)).all()
        assert len(stored) == first.records_rejected
        for record in stored:
            assert record.payload == redact_record(source[record.external_id])
            assert record.errors and record.seen_count == 1 and record.resolved_at is None

        again = run_mapping(db_url, "stripe/charges", full_refresh=True)
        assert again.records_rejected == first.records_rejected
        with session_factory(db_url)() as session:
            seen = session.execute(sa.select(QuarantineRecord.seen_count, QuarantineRecord.resolved_at)).all()
        assert len(seen) == first.records_rejected and set(seen) == {(2, None)}

        with session_factory(db_url).begin() as session:
            row = get_mapping(session, "stripe/charges")
            rules = dict(row.mapping_rules)
            fields = dict(rules["field_mappings"])
            fields["billing_details.email"] = "payment.billing_email"  # any text now
            fields["amount"] = {"target": "payment.amount", "type": "decimal"}  # minor units, any currency
            rules["field_mappings"], rules["validation_rules"] = fields, {}
            row.mapping_rules = rules
        fixed = run_mapping(db_url, "stripe/charges", full_refresh=True)
    assert (fixed.records_rejected, fixed.records_written) == (0, len(source))
    with session_factory(db_url)() as session:
        resolved = session.scalars(sa.select(QuarantineRecord.resolved_at)).all()
    assert len(resolved) == first.records_rejected and None not in resolved
    assert count(db_url, "payment") == len(source)


def test_quarantine_payload_document_is_what_json_writes() -> None:
    """orjson's document equals `json`'s (`default=str`) for every kind a record holds, including
    the ones orjson refuses (past 64 bits, non-text keys); NaN becomes null, as jsonb needs."""
    import datetime as dt
    import json
    import uuid

    from esm_dagster.sync.engine import json_document

    record = {
        "at": dt.datetime(2026, 12, 4, 3, 0, tzinfo=dt.UTC), "day": dt.date(2026, 1, 2), "time": dt.time(3, 4),
        "amount": Decimal("1.10"), "uuid": uuid.UUID(int=5), "text": "ไม้แบด\t\\N", "none": None, "flag": True,
        "ratio": 1.5, "nested": [1, (2, {"k": [None]})], "edge": 2**63 - 1, "low": -(2**63),
    }  # fmt: skip
    for value in (record, {**record, "big": 2**70}, {1: "x", None: 2}, []):
        assert json_document(value) == json.loads(json.dumps(value, default=str))
    assert json_document({"nan": float("nan"), "inf": [float("inf")]}) == {"nan": None, "inf": [None]}
