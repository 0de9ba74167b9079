"""Alembic, driven from Python: `esm db upgrade` and the tests call the same function."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from esm_dagster.catalog.db import get_engine, normalize_url
from esm_dagster.catalog.schemas import ensure_search_path_schema

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["esm_url"] = normalize_url(url)
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    cfg = alembic_config(url)
    with get_engine(url).begin() as connection:
        ensure_search_path_schema(connection)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def downgrade(url: str, revision: str) -> None:
    cfg = alembic_config(url)
    with get_engine(url).begin() as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with get_engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
