"""Registering one mapping in a fresh catalog and reading what the engine loaded (shared by provider tests)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import MappingInput, upsert_mapping
from esm_dagster.catalog.migrate import upgrade
from esm_dagster.security.vault import Vault


def register_mapping(url: str, mapping: dict[str, Any]) -> None:
    """The catalog migrated and `mapping` written through the same path as `esm mapping add`."""
    upgrade(url)
    with session_factory(url).begin() as session:
        upsert_mapping(session, Vault.from_env(), MappingInput.model_validate(mapping))


def table_rows(url: str, table: str, columns: list[str]) -> dict[str, dict[str, Any]]:
    """`esm_external_id` -> {column: value} of a target table."""
    names = ", ".join(f'"{c}"' for c in ["esm_external_id", *columns])
    with get_engine(url).connect() as conn:
        rows = conn.execute(sa.text(f'select {names} from "{table}"')).mappings().all()
    return {str(r["esm_external_id"]): {c: r[c] for c in columns} for r in rows}


def as_utc(value: Any) -> dt.datetime:
    """A timestamp column's value as an aware UTC datetime (SQLite hands back text, naive UTC)."""
    when = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(when, dt.datetime)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
