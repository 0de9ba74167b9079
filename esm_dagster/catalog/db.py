"""Connecting to the catalog database and bringing its schema to the current migration."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_HOME = ".esm"


def esm_home() -> Path:
    return Path(os.environ.get("ESM_HOME", DEFAULT_HOME)).resolve()


def normalize_url(url: str) -> str:
    """Make `postgresql://` mean psycopg2.

    With SQLAlchemy 2.1 a bare `postgresql://` selects psycopg 3, which we do not install;
    every URL a user copies from a PostgreSQL tutorial would otherwise fail at connect time.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


SUPPORTED_BACKENDS = ("postgresql", "sqlite")
EXAMPLE_URLS = "postgresql://USER@HOST:5432/DB or sqlite:////path/catalog.db"


def unparsed_url_shown(url: str) -> str:
    """Enough of a URL that does not parse to recognise it: what precedes an "@" may be a password."""
    return url.rsplit("@", 1)[-1][:40]


def catalog_url_problem(url: str, variable: str = "ESM_DATABASE_URL") -> str | None:
    """Why `url` cannot hold the catalog, said before a driver import fails on it.

    The catalog's migrations, JSON columns and bulk upserts are written for PostgreSQL and SQLite;
    a MySQL URL otherwise ends in "No module named 'MySQLdb'", which reads like a missing install.
    """
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 (a port that is not a number raises here, not at connect time)
    except (ArgumentError, ValueError):
        return (
            f"{variable} {unparsed_url_shown(url)!r} is not a database URL; the catalog runs on PostgreSQL or "
            f"SQLite (e.g. {EXAMPLE_URLS})"
        )
    if parsed.host and "@" in parsed.host:
        # `user:p@ss@host` parses as password "p" and host "ss@host": masking would show "ss".
        return f"{variable}: a password with a raw '@' must be written %40 (host {parsed.host.rsplit('@', 1)[-1]!r})"
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        driver = make_url(normalize_url(url)).get_driver_name()
        if driver != "psycopg2":
            return (
                f"{variable} asks for the {driver} driver, which is not installed: write "
                "postgresql+psycopg2:// (or postgresql://, which means the same here)"
            )
        return None
    if backend in SUPPORTED_BACKENDS:
        return None
    return (
        f"{variable} names a {backend} database ({redacted_url(url)}); the catalog runs on "
        f"PostgreSQL or SQLite (e.g. {EXAMPLE_URLS})"
    )


def database_url() -> str:
    """The catalog URL: `ESM_DATABASE_URL`, else an embedded SQLite file under `ESM_HOME`."""
    url = os.environ.get("ESM_DATABASE_URL")
    if url:
        if problem := catalog_url_problem(url):
            raise ValueError(problem)
        return normalize_url(url)
    home = esm_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'catalog.db'}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class UnreadableJSON(str):
    """The text of a SQLite JSON column that is not JSON (PostgreSQL's JSONB refuses such text).

    Returned instead of raising so that one row someone corrupted by hand cannot stop a whole
    catalog query: `parse_rules` reads it as text and reports the row's `mapping_rules` as "not
    valid JSON", which marks that mapping in error while the others load.
    """


def _tolerant_json_loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return UnreadableJSON(text)


@cache
def get_engine(url: str) -> Engine:
    """One engine (and pool) per URL and process."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, json_deserializer=_tolerant_json_loads)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


def redacted_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
