"""Shared by the Twilio, Telegram and Slack tests: a fast transport policy and catalog mappings."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import MappingInput, upsert_mapping
from esm_dagster.catalog.models import User, UserRole
from esm_dagster.security.vault import Vault
from esm_dagster.transport import TransportPolicy

OWNER = "messaging-tests@padel.example"


class Sleeps(list[float]):
    """The waits a policy asked for, recorded instead of slept (the retry tests stay fast)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def fast_policy(
    retry_attempts: int = 3, timeout_seconds: float = 5.0, sleep: Sleeps | None = None
) -> TransportPolicy:
    return TransportPolicy(
        retry_attempts=retry_attempts,
        timeout_seconds=timeout_seconds,
        base_delay=0.01,
        max_delay=5.0,
        sleep=sleep if sleep is not None else (lambda _s: None),
    )


def register_mapping(url: str, mapping: dict[str, Any]) -> None:
    """One mapping row (credentials encrypted with the test's Fernet key) and its owner."""
    vault = Vault.from_env()
    with session_factory(url).begin() as session:
        if session.scalar(sa.select(User).where(User.email == OWNER)) is None:
            session.add(User(email=OWNER, full_name="Messaging tests", role=UserRole.ADMIN))
            session.flush()
        upsert_mapping(session, vault, MappingInput.model_validate({**mapping, "created_by": OWNER}))


def rows(url: str, table: str, *columns: str) -> list[sa.Row[Any]]:
    """`columns` of every row of `table`, typed by the reflected column types (SQLite too)."""
    engine = get_engine(url)
    reflected = sa.Table(table, sa.MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        return list(conn.execute(sa.select(*(reflected.c[c] for c in columns))).all())


def unix(value: dt.datetime) -> int:
    """Unix seconds of a loaded timestamp (SQLite hands back naive UTC)."""
    return int((value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp())
