"""Alembic environment: runs on the connection handed over by `esm_dagster.catalog.migrate`."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine

from esm_dagster.catalog.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = create_engine(config.attributes["esm_url"])
    with engine.begin() as conn:
        _run(conn)
