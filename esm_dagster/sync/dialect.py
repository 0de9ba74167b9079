"""`INSERT ... ON CONFLICT` for whichever engine the catalog is on (PostgreSQL or SQLite)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


def upsert_statement(
    dialect_name: str, table: sa.Table, conflict_columns: list[str], update_columns: list[str]
) -> Any:
    if dialect_name == "postgresql":
        stmt: Any = postgresql.insert(table)
    elif dialect_name == "sqlite":
        stmt = sqlite.insert(table)
    else:
        raise NotImplementedError(f"upserts are implemented for PostgreSQL and SQLite, not {dialect_name}")
    if not update_columns:
        return stmt.on_conflict_do_nothing(index_elements=conflict_columns)
    return stmt.on_conflict_do_update(
        index_elements=conflict_columns,
        set_={name: stmt.excluded[name] for name in update_columns},
    )
