"""Shared fixtures: a fresh catalog on SQLite and, when configured, on PostgreSQL.

The PostgreSQL leg runs when `ESM_TEST_DATABASE_URL` is set; with `ESM_REQUIRE_POSTGRES=1`
(as `.ci/run` sets) a missing or unreachable server fails the run instead of skipping. Each test
gets its own PostgreSQL schema, so suites running side by side cannot see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine, normalize_url
from esm_dagster.catalog.migrate import upgrade
from esm_dagster.security.vault import generate_key

PG_URL = os.environ.get("ESM_TEST_DATABASE_URL")
REQUIRE_PG = os.environ.get("ESM_REQUIRE_POSTGRES") == "1"


def _pg_schema_url(base: str, schema: str) -> str:
    url = sa.engine.make_url(normalize_url(base))
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


@pytest.fixture(autouse=True)
def _isolated_from_the_developer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the `.esm/` that `make demo` leaves (its key file, catalog) or a `dagster dev`
    the developer has running: ESM_HOME is the test's own, and the UI URL a closed loopback port;
    and none trusts the developer's endpoint settings (allowlist, CA bundle)."""
    monkeypatch.setenv("ESM_HOME", str(tmp_path / "esm_home"))
    monkeypatch.setenv("ESM_DAGSTER_UI_URL", "http://127.0.0.1:9")
    # The demo catalog's admin: `esm` commands on a catalog with operators must say who runs them.
    monkeypatch.setenv("ESM_USER", "data-team@padel.example")
    monkeypatch.delenv("ESM_ALLOWED_HOSTS", raising=False)
    monkeypatch.delenv("ESM_CA_BUNDLE", raising=False)


@pytest.fixture(scope="session", autouse=True)
def _sandbox_mode() -> Iterator[None]:
    """The emulators are on loopback: sandbox mode for the whole session (module-scoped fixtures
    start emulators too); a test of the refusal itself unsets it with its own monkeypatch."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ESM_ALLOW_LOOPBACK", "1")
        yield


@pytest.fixture(scope="session", autouse=True)
def _postgres_required() -> None:
    if REQUIRE_PG and not PG_URL:
        pytest.fail("ESM_REQUIRE_POSTGRES=1 but ESM_TEST_DATABASE_URL is not set")


def _blank_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.db'}"
        yield url
        get_engine(url).dispose()
        return
    if not PG_URL:
        pytest.skip("PostgreSQL leg: set ESM_TEST_DATABASE_URL (CI sets it and ESM_REQUIRE_POSTGRES=1)")
    admin = sa.create_engine(normalize_url(PG_URL))
    schema = f"esm_t_{uuid.uuid4().hex[:12]}"
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL required but unreachable: {exc.__class__.__name__}")
        pytest.skip("PostgreSQL unreachable")
    url = _pg_schema_url(PG_URL, schema)
    try:
        yield url
    finally:
        get_engine(url).dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def blank_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no tables) on each engine."""
    yield from _blank_database(request, tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty catalog on each engine."""
    for url in _blank_database(request, tmp_path):
        upgrade(url)
        yield url


@pytest.fixture
def fernet_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = generate_key()
    monkeypatch.setenv("ESM_FERNET_KEYS", key)
    monkeypatch.delenv("ESM_FERNET_KEYS_FILE", raising=False)
    return key


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The `slow` suites first: with test files spread over workers (`make test`), the longest
    ones start at once and the short ones fill in around them, instead of one long file starting
    last and running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
