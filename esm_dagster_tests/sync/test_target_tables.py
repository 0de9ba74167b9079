import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from esm_dagster.catalog.db import get_engine
from esm_dagster.sync.dialect import upsert_statement
from esm_dagster.sync.target_tables import TargetTableError, ensure_table, row_id, row_id_texts


def columns_of(url: str, table: str) -> set[str]:
    with get_engine(url).connect() as conn:
        return {c["name"] for c in sa.inspect(conn).get_columns(table)}


def test_created_from_mappings_then_only_gains_columns(db_url: str) -> None:
    engine = get_engine(db_url)
    ensure_table(engine, "payment", {"amount": "money", "paid_at": "timestamp"})
    assert columns_of(db_url, "payment") == {
        "id",
        "amount",
        "paid_at",
        "esm_source",
        "esm_external_id",
        "esm_synced_at",
    }
    table = ensure_table(engine, "payment", {"amount": "money", "status": "string", "paid": "boolean"})
    assert {"status", "paid", "paid_at"} <= columns_of(db_url, "payment")  # paid_at kept
    row = {
        "id": row_id("stripe/charges", "ch_1"),
        "amount": Decimal("19.99"),
        "status": "succeeded",
        "paid": True,
        "esm_source": "stripe/charges",
        "esm_external_id": "ch_1",
        "esm_synced_at": dt.datetime.now(dt.UTC),
    }
    stmt = upsert_statement(
        engine.dialect.name, table, ["esm_source", "esm_external_id"], ["amount", "status"]
    )
    with engine.begin() as conn:
        conn.execute(stmt, [row])
        conn.execute(stmt, [{**row, "amount": Decimal("20.01")}])
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.amount, table.c.status)).all()
    assert rows == [(Decimal("20.01"), "succeeded")]


def test_existing_catalog_user_table_is_extended_not_replaced(db_url: str) -> None:
    ensure_table(get_engine(db_url), "user", {"email": "email", "city": "string"})
    assert {"role", "is_active", "city", "esm_external_id"} <= columns_of(db_url, "user")


@pytest.mark.parametrize("table", ["external_system_mapping", "esm_quarantine", "Payment", "pay-ment"])
def test_reserved_or_odd_tables_are_refused(db_url: str, table: str) -> None:
    with pytest.raises(TargetTableError, match="not allowed"):
        ensure_table(get_engine(db_url), table, {"x": "string"})


def test_unfillable_not_null_column_is_named(db_url: str) -> None:
    engine = get_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table booking (id varchar(36) primary key, court integer not null)"))
    with pytest.raises(TargetTableError, match="court"):
        ensure_table(engine, "booking", {"note": "string"})


def test_row_ids_are_stable_per_source() -> None:
    assert row_id("stripe/charges", "ch_1") == row_id("stripe/charges", "ch_1")
    assert row_id("stripe/charges", "ch_1") != row_id("stripe_eu/charges", "ch_1")


@given(source=st.text(max_size=40), external_ids=st.lists(st.text(max_size=60), max_size=20))
def test_row_id_texts_are_the_uuid5_row_ids(source: str, external_ids: list[str]) -> None:
    """The bulk path's hashed ids are the very ids `row_id` gives (rows written either way meet)."""
    assert row_id_texts(source, external_ids) == [str(row_id(source, e)) for e in external_ids]


def test_a_column_of_another_type_is_named_not_a_database_cast_error(db_url: str) -> None:
    engine = get_engine(db_url)
    ensure_table(engine, "booking", {"court": "integer", "starts_at": "timestamp", "note": "string"})
    # Same kinds again (and text-like types into a text column) are fine.
    ensure_table(engine, "booking", {"court": "integer", "note": "email"})
    with pytest.raises(TargetTableError) as info:
        ensure_table(engine, "booking", {"court": "string", "starts_at": "timestamp"})
    message = str(info.value)
    assert "booking.court" in message and "'string'" in message and "never retypes" in message
    with pytest.raises(TargetTableError, match=r"booking\.starts_at"):
        ensure_table(engine, "booking", {"starts_at": "date"})
