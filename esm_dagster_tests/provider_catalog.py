"""Test helper: write mapping rows (as `esm mapping add` would) into a migrated catalog."""

from __future__ import annotations

import datetime as dt
from typing import Any

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.mappings import MappingInput, upsert_mapping
from esm_dagster.security.vault import Vault


def register(db_url: str, *items: dict[str, Any]) -> None:
    """Each item a `MappingInput` document; credentials are encrypted with the test's Fernet key."""
    vault = Vault.from_env()
    with session_factory(db_url).begin() as session:
        for item in items:
            upsert_mapping(session, vault, MappingInput.model_validate(item))


def as_utc(value: object) -> dt.datetime:
    """A loaded timestamp as an aware UTC datetime (SQLite hands back text, PostgreSQL datetimes)."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime), value
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
