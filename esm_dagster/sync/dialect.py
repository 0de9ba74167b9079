"""`INSERT ... ON CONFLICT` for whichever engine the catalog is on (PostgreSQL or SQLite)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


def upsert_statement(
    dialect_name: str,
    table: sa.Table,
    conflict_columns: list[str],
    update_columns: list[str],
    update_values: Mapping[str, Any] | None = None,
) -> Any:
    """The upsert; `update_values` are extra `SET` expressions (`seen_count + 1`) on a conflict."""
    if dialect_name == "postgresql":
        stmt: Any = postgresql.insert(table)
    elif dialect_name == "sqlite":
        stmt = sqlite.insert(table)
    else:
        raise NotImplementedError(f"upserts are implemented for PostgreSQL and SQLite, not {dialect_name}")
    set_: dict[str, Any] = {name: stmt.excluded[name] for name in update_columns}
    set_.update(update_values or {})
    if not set_:
        return stmt.on_conflict_do_nothing(index_elements=conflict_columns)
    return stmt.on_conflict_do_update(index_elements=conflict_columns, set_=set_)
