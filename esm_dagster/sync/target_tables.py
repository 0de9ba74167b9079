"""Target tables (`user`, `payment`, ...) created and evolved from a mapping's `field_mappings`.

Every target row carries its identity at the source (`esm_source`, `esm_external_id`, unique
together) and an `id` derived from it with uuid5, so the same external record always lands on the
same row: a re-run updates, never duplicates. Evolution only adds columns; nothing is dropped or
retyped behind a data engineer's back.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from collections.abc import Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy import Engine

from esm_dagster.catalog.types import ExactDecimal, UTCDateTime

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
IDENTITY_NAMESPACE = uuid.UUID("6c1f0e0a-3b7d-5e55-9a55-65736d646167")
SYSTEM_COLUMNS = ("id", "esm_source", "esm_external_id", "esm_synced_at")
PROTECTED_TABLES = {"external_system_mapping", "alembic_version"}


class TargetTableError(ValueError):
    pass


def column_type(type_name: str) -> sa.types.TypeEngine:
    types: dict[str, sa.types.TypeEngine] = {
        "string": sa.Text(),
        "integer": sa.BigInteger(),
        "decimal": ExactDecimal(),
        "money": ExactDecimal(),
        "timestamp": UTCDateTime(),
        "date": sa.Date(),
        "boolean": sa.Boolean(),
        "email": sa.String(320),
        "phone_number": sa.String(32),
    }
    try:
        return types[type_name]
    except KeyError:
        raise TargetTableError(f"unknown column type {type_name!r}") from None


def row_id(source: str, external_id: str) -> uuid.UUID:
    return uuid.uuid5(IDENTITY_NAMESPACE, f"{source}\x1f{external_id}")


def row_id_texts(source: str, external_ids: Iterable[str]) -> list[str]:
    """`str(row_id(source, e))` for each id, without building a UUID object per record.

    The same RFC 4122 version 5 digest (SHA-1 of namespace and name, version and variant bits
    set) as `uuid.uuid5`, formatted directly: a sync's bulk write needs the text, and the UUID
    objects cost more than the hashing (tests prove both equal).
    """
    namespace = IDENTITY_NAMESPACE.bytes
    prefix = f"{source}\x1f"
    out = []
    for external_id in external_ids:
        digest = bytearray(
            hashlib.sha1(namespace + (prefix + external_id).encode(), usedforsecurity=False).digest()[:16]
        )
        digest[6] = (digest[6] & 0x0F) | 0x50
        digest[8] = (digest[8] & 0x3F) | 0x80
        x = digest.hex()
        out.append(f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}")
    return out


_lock = threading.Lock()


def _check_names(table: str, columns: Mapping[str, str]) -> None:
    if not IDENTIFIER.match(table) or table.startswith("esm_") or table in PROTECTED_TABLES:
        raise TargetTableError(f"target table {table!r} is not allowed (reserved or not an identifier)")
    for column in columns:
        if not IDENTIFIER.match(column) or column in SYSTEM_COLUMNS:
            raise TargetTableError(f"target column {table}.{column} is reserved or not an identifier")


def _add_column_sql(engine: Engine, table: str, column: str, type_: sa.types.TypeEngine) -> str:
    preparer = engine.dialect.identifier_preparer
    compiled = type_.dialect_impl(engine.dialect).compile(dialect=engine.dialect)
    return f"ALTER TABLE {preparer.quote(table)} ADD COLUMN {preparer.quote(column)} {compiled}"


def _family(type_: sa.types.TypeEngine, dialect: sa.engine.Dialect) -> str | None:
    """What kind of value a column holds, engine aside (None: a type we do not judge)."""
    if isinstance(type_, sa.types.TypeDecorator):
        type_ = type_.load_dialect_impl(dialect)
    for cls, family in (
        (sa.Boolean, "boolean"),
        (sa.Integer, "integer"),
        (sa.Numeric, "numeric"),
        (sa.DateTime, "timestamp"),
        (sa.Date, "date"),
        (sa.String, "text"),
    ):
        if isinstance(type_, cls):
            return family
    return None


def _check_type(engine: Engine, table: str, column: str, existing: sa.types.TypeEngine, kind: str) -> None:
    """Refuse, naming the column, to write a type the existing column does not hold.

    Evolution never retypes a column (that could rewrite a data engineer's data), so a rules change
    from `integer` to `string` would otherwise end in the database's own cryptic cast error.
    """
    have, want = _family(existing, engine.dialect), _family(column_type(kind), engine.dialect)
    if have is None or want is None or have == want:
        return
    raise TargetTableError(
        f"target column {table}.{column} is {existing} in the database, but the mapping now writes "
        f"{kind!r} values into it; keep the column's type in the rules, map the field to a new "
        "column, or change the column yourself (ALTER TABLE); esm never retypes a column"
    )


def ensure_table(engine: Engine, table: str, columns: Mapping[str, str]) -> sa.Table:
    """Create or extend `table` so it has every mapped column; return a Table for writing."""
    _check_names(table, columns)
    with _lock, engine.begin() as conn:
        inspector = sa.inspect(conn)
        if not inspector.has_table(table):
            sa.Table(
                table,
                sa.MetaData(),
                sa.Column("id", sa.Uuid(), primary_key=True),
                *(sa.Column(name, column_type(kind)) for name, kind in columns.items()),
                sa.Column("esm_source", sa.String(200)),
                sa.Column("esm_external_id", sa.String(200)),
                sa.Column("esm_synced_at", UTCDateTime()),
            ).create(conn, checkfirst=True)
            existing: set[str] = set()
        else:
            reflected = inspector.get_columns(table)
            existing = {c["name"] for c in reflected}
            unfillable = [
                c["name"]
                for c in reflected
                if not c["nullable"]
                and c.get("default") is None
                and c.get("autoincrement") is not True
                and c["name"] not in columns
                and c["name"] not in SYSTEM_COLUMNS
            ]
            if unfillable:
                raise TargetTableError(
                    f"target table {table!r} has NOT NULL column(s) {', '.join(sorted(unfillable))} without a "
                    "default that the mapping does not fill; map them or give them a server default"
                )
            wanted = {
                **{name: column_type(kind) for name, kind in columns.items()},
                "esm_source": sa.String(200),
                "esm_external_id": sa.String(200),
                "esm_synced_at": UTCDateTime(),
            }
            reflected_types = {c["name"]: c["type"] for c in reflected}
            for name, kind in columns.items():
                if name in existing:
                    _check_type(engine, table, name, reflected_types[name], kind)
            for name, type_ in wanted.items():
                if name not in existing:
                    conn.execute(sa.text(_add_column_sql(engine, table, name, type_)))
        preparer = engine.dialect.identifier_preparer
        conn.execute(
            sa.text(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {preparer.quote(f'uq_{table}_esm_identity')} "
                f"ON {preparer.quote(table)} (esm_source, esm_external_id)"
            )
        )
    return writable_table(table, columns)


def ensure_columns(engine: Engine, table: str, columns: Mapping[str, str]) -> None:
    """Add the engine's own columns a feature needs (`is_deleted`, `deleted_at`) if missing.

    Unlike mapped columns these may be system names; an existing column is left as it is.
    """
    with _lock, engine.begin() as conn:
        existing = {c["name"] for c in sa.inspect(conn).get_columns(table)}
        for name, kind in columns.items():
            if name not in existing:
                conn.execute(sa.text(_add_column_sql(engine, table, name, column_type(kind))))


def writable_table(table: str, columns: Mapping[str, str]) -> sa.Table:
    """A Table holding only the columns we write, typed for correct binding on both engines."""
    return sa.Table(
        table,
        sa.MetaData(),
        sa.Column("id", sa.Uuid(), primary_key=True),
        *(sa.Column(name, column_type(kind)) for name, kind in columns.items()),
        sa.Column("esm_source", sa.String(200)),
        sa.Column("esm_external_id", sa.String(200)),
        sa.Column("esm_synced_at", UTCDateTime()),
    )
