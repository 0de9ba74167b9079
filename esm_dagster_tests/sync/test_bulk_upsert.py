"""The COPY upsert writes exactly what the statement upsert writes, awkward values included."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine
from esm_dagster.catalog.types import ExactDecimal, UTCDateTime
from esm_dagster.sync import bulk
from esm_dagster.sync.bulk import upsert_rows

ROUNDS = 8
AWKWARD = ["tab\there", "new\nline", "back\\slash", "\\N", "", "ไม้แบด 🎾", "cr\rlf", 'a,b;\'"q"']


def _table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("esm_source", sa.Text, nullable=False),
        sa.Column("esm_external_id", sa.Text, nullable=False),
        sa.Column("label", sa.Text),
        sa.Column("amount", ExactDecimal()),
        sa.Column("paid_at", UTCDateTime()),
        sa.Column("day", sa.Date),
        sa.Column("ok", sa.Boolean),
        sa.Column("big", sa.BigInteger),
        sa.UniqueConstraint("esm_source", "esm_external_id"),
    )


def _rows(n: int, version: int) -> list[dict]:
    base = dt.datetime(2026, 12, 4, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=7)))
    return [
        {
            "id": i,
            "esm_source": "s",
            "esm_external_id": f"ext-{i}",
            "label": None if i % 9 == 0 else f"{AWKWARD[i % len(AWKWARD)]} v{version}",
            "amount": None if i % 7 == 0 else Decimal("19.99") * i + Decimal("0.001"),
            "paid_at": None if i % 5 == 0 else base + dt.timedelta(minutes=i),
            "day": dt.date(2026, 1, 1) + dt.timedelta(days=i % 300),
            "ok": None if i % 4 == 0 else bool(i % 2),
            "big": 2**62 + i,
        }
        for i in range(n)
    ]


def _contents(conn: sa.Connection, table: sa.Table) -> list[tuple]:
    return [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.id)).all()]


@pytest.mark.postgres
def test_copy_and_statement_paths_write_the_same_rows(db_url: str) -> None:
    engine = get_engine(db_url)
    if engine.dialect.name != "postgresql":
        pytest.skip("COPY is the PostgreSQL path; SQLite always takes the statement")
    metadata = sa.MetaData()
    via_copy, via_statement = _table(metadata, "bulk_copy"), _table(metadata, "bulk_statement")
    metadata.create_all(engine)
    update = ["label", "amount", "paid_at", "day", "ok", "big"]
    first, second = _rows(300, 1), _rows(300, 2)[100:] + _rows(400, 2)[300:]  # updates and inserts
    with engine.begin() as conn:
        for rows in (first, second):
            upsert_rows(conn, via_copy, rows, ["esm_source", "esm_external_id"], update)
            conn.execute(
                bulk.upsert_statement("postgresql", via_statement, ["esm_source", "esm_external_id"], update),
                rows,
            )
    with engine.connect() as conn:
        copied, stated = _contents(conn, via_copy), _contents(conn, via_statement)
    assert len(copied) == 400 and copied == stated
    labels = {r[3] for r in copied}
    assert "\\N v2" in labels and None in labels and " v2" in labels  # the text "\N" is not NULL


def test_small_batches_and_sqlite_take_the_statement(db_url: str) -> None:
    engine = get_engine(db_url)
    staged: list[str] = []

    def watch(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith("CREATE TEMP TABLE esm_stage_"):
            staged.append(statement)

    metadata = sa.MetaData()
    table = _table(metadata, "bulk_small")
    metadata.create_all(engine)
    sa.event.listen(engine, "before_cursor_execute", watch)
    try:
        with engine.begin() as conn:
            key = ["esm_source", "esm_external_id"]
            upsert_rows(conn, table, _rows(bulk.COPY_MIN_ROWS - 1, 1), key, ["label"])
            assert staged == []
            upsert_rows(conn, table, _rows(bulk.COPY_MIN_ROWS, 2), key, ["label"])
    finally:
        sa.event.remove(engine, "before_cursor_execute", watch)
    assert len(staged) == (1 if engine.dialect.name == "postgresql" else 0)
    with engine.connect() as conn:
        labels = conn.execute(sa.select(table.c.label).order_by(table.c.id)).scalars().all()
    assert len(labels) == bulk.COPY_MIN_ROWS and labels[1] == f"{AWKWARD[1]} v2"


@pytest.mark.postgres
@pytest.mark.parametrize("size", [10, 300])  # the statement path and the COPY path
def test_two_writers_of_the_same_new_rows_both_succeed(db_url: str, size: int) -> None:
    """Two runs of one mapping inserting the same new records at once: one inserts, the other
    updates; neither fails on the primary key. The window is narrow (the second writer must pass
    ON CONFLICT's pre-check before the first one's index entries exist): it was seen once, in the
    concurrent OAuth refresh test on a loaded machine, and these rounds do not always hit it."""
    import threading

    engine = get_engine(db_url)
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers")
    metadata = sa.MetaData()
    table = sa.Table(
        f"bulk_race_{size}",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("esm_source", sa.Text, nullable=False),
        sa.Column("esm_external_id", sa.Text, nullable=False),
        sa.Column("label", sa.Text),
        sa.UniqueConstraint("esm_source", "esm_external_id"),
    )
    metadata.create_all(engine)
    errors: list[BaseException] = []
    for round_ in range(ROUNDS):
        rows = [
            {"id": f"{round_}-{i}", "esm_source": "s", "esm_external_id": f"{round_}-{i}", "label": "x"}
            for i in range(size)
        ]
        barrier = threading.Barrier(2)

        def write(label: str, rows: list[dict] = rows, barrier: threading.Barrier = barrier) -> None:
            try:
                with engine.begin() as conn:
                    barrier.wait()
                    upsert_rows(
                        conn,
                        table,
                        [{**r, "label": label} for r in rows],
                        ["esm_source", "esm_external_id"],
                        ["label"],
                    )
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == ROUNDS * size


def _ledger(metadata: sa.MetaData, name: str) -> sa.Table:
    """The quarantine's shape: a Uuid key, JSON documents and a counter bumped on each conflict."""
    from esm_dagster.catalog.types import JSONType

    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("fingerprint", sa.Text, nullable=False, unique=True),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("seen_count", sa.Integer, nullable=False),
        sa.Column("resolved_at", UTCDateTime()),
    )


def _ledger_rows(n: int, version: int) -> list[dict]:
    import uuid

    return [
        {
            "id": uuid.uuid5(uuid.NAMESPACE_URL, f"r{i}"),
            "fingerprint": f"id:{i}",
            "payload": {
                "v": version,
                "text": AWKWARD[i % len(AWKWARD)],
                "nested": [{"n": i}, None, True, 1.5],
            },
            "seen_count": 1,
            "resolved_at": None,
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("size", [bulk.COPY_MIN_ROWS - 1, 120])  # the statement path and (PG) COPY
def test_update_values_json_and_uuid_text_write_what_the_plain_statement_writes(
    db_url: str, size: int
) -> None:
    """`update_values` (`seen_count + 1`), JSON documents and ids given as text: the bulk upsert of
    either path leaves exactly the rows of SQLAlchemy's own statement with UUID objects."""
    engine = get_engine(db_url)
    metadata = sa.MetaData()
    via_bulk, via_statement = (
        _ledger(metadata, f"ledger_bulk_{size}"),
        _ledger(metadata, f"ledger_stmt_{size}"),
    )
    metadata.create_all(engine)
    bump = {"seen_count": via_bulk.c.seen_count + 1, "resolved_at": None}
    with engine.begin() as conn:
        for version in (1, 2):
            rows = _ledger_rows(size, version)
            as_text = [{**r, "id": str(r["id"])} for r in rows]
            bulk.upsert_rows(conn, via_bulk, as_text, ["fingerprint"], ["payload"], update_values=bump)
            statement = bulk.upsert_statement(
                engine.dialect.name, via_statement, ["fingerprint"], ["payload"],
                {"seen_count": via_statement.c.seen_count + 1, "resolved_at": None},
            )  # fmt: skip
            conn.execute(statement, rows)
    with engine.connect() as conn:
        written = conn.execute(sa.select(via_bulk).order_by(via_bulk.c.fingerprint)).all()
        expected = conn.execute(sa.select(via_statement).order_by(via_statement.c.fingerprint)).all()
    assert len(written) == size and [tuple(r) for r in written] == [tuple(r) for r in expected]
    assert {r.seen_count for r in written} == {2} and {r.payload["v"] for r in written} == {2}


def test_copy_text_escapes_and_types_column_by_column() -> None:
    """The column-wise COPY text: each value as `_text` writes it alone, whatever the column mixes."""
    import uuid

    aware = dt.datetime(2026, 12, 4, 3, 0, tzinfo=dt.UTC)
    columns = {
        "text": [*AWKWARD, None],
        "plain": ["a", None, "b", "c", "d", "e", "f", "g", "h"],
        "number": [1, None, 2**62, -3, 0, 5, 6, 7, 8],
        "flag": [True, False, None, True, True, False, False, True, None],
        "moment": [aware, None, aware.replace(tzinfo=None), aware, aware, aware, aware, aware, aware],
        "same": [aware] * 9,
        "mixed": [
            1,
            True,
            "x",
            Decimal("1.10"),
            1.5,
            uuid.UUID(int=7),
            dt.date(2026, 1, 2),
            {"k": "\t"},
            None,
        ],
        "nothing": [None] * 9,
    }
    lines = bulk.copy_text(columns).split("\n")
    assert lines[-1] == "" and len(lines) == 10
    for n, line in enumerate(lines[:-1]):
        assert line.split("\t") == [bulk._text(values[n]) for values in columns.values()]
