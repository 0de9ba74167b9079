"""The catalog in its own PostgreSQL schema, as production runs it (`?options=-csearch_path%3Desm`).

A new user's `esm db upgrade` failed with "no schema has been selected to create in" until they
created the schema by hand, and a URL without the option was told to run `esm db upgrade` about a
catalog that existed one schema over.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine
from esm_dagster.catalog.migrate import upgrade
from esm_dagster.catalog.schemas import searched_in
from esm_dagster_tests.conftest import PG_URL, REQUIRE_PG, _pg_schema_url


@pytest.fixture
def new_schema() -> Iterator[tuple[str, str]]:
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("ESM_REQUIRE_POSTGRES=1 but ESM_TEST_DATABASE_URL is not set")
        pytest.skip("PostgreSQL leg: set ESM_TEST_DATABASE_URL")
    schema = f"esm_new_{uuid.uuid4().hex[:8]}"
    yield schema, _pg_schema_url(PG_URL, schema)
    engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg2://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def test_upgrade_creates_the_schema_the_search_path_names(new_schema: tuple[str, str]) -> None:
    schema, url = new_schema
    with get_engine(url).connect() as conn:
        assert searched_in(conn).endswith("none of its schemas exists)")
    upgrade(url)
    with get_engine(url).connect() as conn:
        assert conn.exec_driver_sql("SELECT current_schema()").scalar() == schema
        assert sa.inspect(conn).has_table("external_system_mapping", schema=schema)
        assert searched_in(conn) == f" (schema {schema})"
    upgrade(url)  # again: nothing to create, nothing to migrate


def test_searched_in_is_silent_on_sqlite(tmp_path: object) -> None:
    with get_engine(f"sqlite:///{tmp_path}/c.db").connect() as conn:
        assert searched_in(conn) == ""
