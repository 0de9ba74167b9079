"""Mixpanel through the engine: export -> rules -> SQLite / PostgreSQL, exact values, no duplicates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine
from esm_dagster.sandbox.mixpanel import MixpanelEmulator
from esm_dagster.sync.engine import SyncFailed, run_mapping
from esm_dagster_tests.mixpanel_fixtures import SECRET, mapping, mixpanel_emulator
from esm_dagster_tests.provider_catalog import as_utc, register

RULES = {
    "field_mappings": {
        "event": "product_event.event_name",
        "properties.distinct_id": "product_event.distinct_id",
        "properties.time": {"target": "product_event.occurred_at", "type": "timestamp", "unit": "s"},
        "properties.$email": {"target": "product_event.email", "type": "email"},
        "properties.court": "product_event.court",
        "properties.amount": {"target": "product_event.amount", "type": "integer"},
    },
    "validation_rules": {
        "required_fields": ["event", "properties.time"],
        "data_types": {"properties.$email": "email"},
    },
    "sync_config": {
        "stream": "events",
        "key": "properties.$insert_id",
        "start_date": "2026-01-01",
        "batch_size": 50,
    },
}


@pytest.fixture
def emulator() -> Iterator[MixpanelEmulator]:
    with mixpanel_emulator(events=120, seed=6) as em:
        yield em


@pytest.fixture
def catalog(db_url: str, fernet_key: str, emulator: MixpanelEmulator) -> str:
    register(db_url, mapping(emulator.url, RULES))
    return db_url


def test_events_load_exactly_and_reruns_add_no_duplicates(catalog: str, emulator: MixpanelEmulator) -> None:
    first = run_mapping(catalog, "mixpanel/events")
    source = {e["properties"]["$insert_id"]: e for e in emulator.events}
    assert first.records_read == 120
    assert first.records_rejected > 0  # seeded malformed $email values
    assert first.records_written + first.records_rejected == 120
    with get_engine(catalog).connect() as conn:
        loaded = conn.execute(
            sa.text(
                "select esm_external_id, event_name, distinct_id, occurred_at, email, court, amount from product_event"
            )
        ).all()
    assert len(loaded) == first.records_written
    for insert_id, name, distinct_id, occurred_at, email, court, amount in loaded:
        event = source[insert_id]
        props = event["properties"]
        assert (name, distinct_id, email, court) == (
            event["event"],
            props["distinct_id"],
            props["$email"],
            props["court"],
        )
        assert as_utc(occurred_at) == dt.datetime.fromtimestamp(props["time"], dt.UTC)
        assert amount == props.get("amount") and (amount is None or isinstance(amount, int))
    malformed = {
        i for i, e in source.items() if "@@" in e["properties"]["$email"] or " " in e["properties"]["$email"]
    }
    assert malformed and not malformed & {row[0] for row in loaded}

    again = run_mapping(catalog, "mixpanel/events")
    assert again.records_read == 0  # incremental: today only, nothing new since
    full = run_mapping(catalog, "mixpanel/events", full_refresh=True)
    assert full.records_read == 120 and full.records_written == first.records_written
    with get_engine(catalog).connect() as conn:
        assert (
            conn.execute(sa.text("select count(*) from product_event")).scalar_one() == first.records_written
        )


def test_a_wrong_secret_fails_as_auth_and_never_shows_it(catalog: str, emulator: MixpanelEmulator) -> None:
    other = mapping(emulator.url, RULES, system_name="Mixpanel Old")
    other["credentials"] = {**other["credentials"], "secret": "mpSA-revoked-secret-XXXXXXXX"}
    register(catalog, other)
    with pytest.raises(SyncFailed) as info:
        run_mapping(catalog, "mixpanel old/events")
    assert info.value.report.error_class == "auth"
    assert "revoked-secret" not in str(info.value) and SECRET not in str(info.value)


def test_a_daily_partition_reads_exactly_its_day(catalog: str, emulator: MixpanelEmulator) -> None:
    day = (1767225600 + 5 * 86400, 1767225600 + 6 * 86400)  # 2026-01-06 UTC
    report = run_mapping(catalog, "mixpanel/events", window=day, partition_key="2026-01-06")
    expected = [e for e in emulator.events if day[0] <= e["properties"]["time"] < day[1]]
    assert expected and report.records_read == len(expected)
    assert [r.query.count("from_date=2026-01-06&to_date=2026-01-06") for r in emulator.requests] == [1]
