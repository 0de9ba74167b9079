"""The token bucket of one credential, persisted in the catalog's `esm_rate_limit` table.

Every process that calls a provider with a credential (the step processes of a Dagster backfill,
`esm sync` runs side by side, sensors) reads and writes the same row, so the mapping's
`rate_limiting` budget holds for all of them together, not for each one. A token is taken in one
short transaction that holds the row's write lock while it reads, decides and writes:

- PostgreSQL: `SELECT ... FOR UPDATE` on the row;
- SQLite: the transaction's first statement is a write (the insert of a missing row), which takes
  the database's write lock at once, as `BEGIN IMMEDIATE` would; other writers wait for it
  (`busy_timeout`), so no two read the same token count.

The caller sleeps outside the transaction when no token is due (see `TransportPolicy`).
Clock: unix seconds of the host (`time.time`); hosts sharing a catalog are assumed NTP-synced, and a
clock behind the stored one refills nothing rather than going negative.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import cast

import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine
from esm_dagster.catalog.models import RateLimitBucket
from esm_dagster.catalog.types import utcnow
from esm_dagster.security.secret import Secret
from esm_dagster.sync.dialect import upsert_statement
from esm_dagster.transport.bucket import BucketLimits, BucketState, full, take

_DIGEST_CHARS = 32  # 128 bits: no collision between credentials, and nothing to reverse


def credential_bucket_key(provider_name: str, api_endpoint: str, credential: Secret) -> str:
    """`stripe:<32 hex>`: names the credential's bucket without holding or revealing the credential.

    The endpoint is part of it: the same test key against the emulator and against another base
    URL are different accounts' budgets.
    """
    if not isinstance(credential, Secret) or not credential:
        raise TypeError("credential must be a non-empty Secret")
    material = f"{provider_name}\n{api_endpoint.rstrip('/')}\n{credential.reveal()}".encode()
    return f"{provider_name}:{hashlib.sha256(material).hexdigest()[:_DIGEST_CHARS]}"


class SharedTokenBucket:
    """`SharedTokenBucket(url, key, limits).try_acquire()`: 0.0 when a token was taken, else the wait."""

    def __init__(
        self,
        database_url: str,
        bucket_key: str,
        limits: BucketLimits,
        *,
        provider_name: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database_url = database_url
        self.bucket_key = bucket_key
        self.limits = limits
        self.provider_name = provider_name or bucket_key.partition(":")[0]
        self._clock = clock

    def __repr__(self) -> str:
        return (
            f"SharedTokenBucket({self.bucket_key!r}, capacity={self.limits.capacity:g}, "
            f"per_second={self.limits.per_second:g})"
        )

    def try_acquire(self) -> float:
        """Take a token if one is due; otherwise the seconds until one is. One short transaction."""
        engine = get_engine(self.database_url)
        table = cast(sa.Table, RateLimitBucket.__table__)
        where = table.c.bucket_key == self.bucket_key
        with engine.begin() as conn:
            # First statement a write: on SQLite this takes the write lock before anything is read.
            conn.execute(
                upsert_statement(engine.dialect.name, table, ["bucket_key"], []),
                [self._row(full(self.limits, self._clock()))],
            )
            stored = conn.execute(
                sa.select(table.c.tokens, table.c.refilled_at).where(where).with_for_update()
            ).one()
            # Read the clock with the lock held: a reading taken before waiting for the lock would
            # be older than the state the previous holder wrote.
            state, wait = take(BucketState(stored.tokens, stored.refilled_at), self.limits, self._clock())
            values = self._row(state)
            del values["bucket_key"]
            conn.execute(sa.update(table).where(where).values(**values))
        return wait

    def state(self) -> BucketState | None:
        """The stored state (for tests and operators), or None before the first request."""
        table = cast(sa.Table, RateLimitBucket.__table__)
        with get_engine(self.database_url).connect() as conn:
            row = conn.execute(
                sa.select(table.c.tokens, table.c.refilled_at).where(table.c.bucket_key == self.bucket_key)
            ).first()
        return None if row is None else BucketState(row.tokens, row.refilled_at)

    def _row(self, state: BucketState) -> dict[str, object]:
        return {
            "bucket_key": self.bucket_key,
            "provider_name": self.provider_name,
            "tokens": state.tokens,
            "refilled_at": state.refilled_at,
            "capacity": self.limits.capacity,
            "per_second": self.limits.per_second,
            "updated_at": utcnow(),
        }
