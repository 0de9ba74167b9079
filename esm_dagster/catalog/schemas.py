"""Which PostgreSQL schema the catalog lives in, as the connection's `search_path` decides.

Production puts the catalog in its own schema next to Dagster's storage
(`?options=-csearch_path%3Desm`, deploy/README). A search_path naming a schema that does not exist
yet made `esm db upgrade` fail with "no schema has been selected to create in", and a URL without
the option made every command say "run `esm db upgrade`" about a catalog that existed one schema
over. Both now say which schema they looked in, and `upgrade` creates the first one named.
"""

from __future__ import annotations

import sqlalchemy as sa


def _named_schemas(conn: sa.Connection) -> list[str]:
    path = str(conn.exec_driver_sql("SHOW search_path").scalar() or "")
    names = [part.strip().strip('"') for part in path.split(",")]
    return [name for name in names if name and name != "$user"]


def ensure_search_path_schema(conn: sa.Connection) -> str | None:
    """Create the first schema of the search_path when none of them exists (PostgreSQL); the
    schema created, or None when nothing was needed."""
    if conn.dialect.name != "postgresql" or conn.exec_driver_sql("SELECT current_schema()").scalar():
        return None
    names = _named_schemas(conn)
    if not names:
        return None
    quoted = conn.dialect.identifier_preparer.quote(names[0])
    conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
    return names[0]


def searched_in(conn: sa.Connection) -> str:
    """' (schema esm)' - where an unqualified table name was looked up; '' on SQLite."""
    if conn.dialect.name != "postgresql":
        return ""
    current = conn.exec_driver_sql("SELECT current_schema()").scalar()
    if current:
        return f" (schema {current})"
    return f" (search_path {', '.join(_named_schemas(conn)) or 'empty'}: none of its schemas exists)"


def no_catalog_message(shown_url: str, conn: sa.Connection, upgrade_hint: str) -> str:
    """The one line for a catalog without its tables: where it looked, and what to do."""
    message = (
        f"the catalog {shown_url}{searched_in(conn)} has no external_system_mapping table: {upgrade_hint}"
    )
    if conn.dialect.name == "postgresql":
        message += (
            ", or point the URL's search_path at the schema that holds it (`?options=-csearch_path%3Desm`)"
        )
    return message
