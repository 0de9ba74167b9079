"""Where token state lives between requests and between runs, and the lock around renewing it.

`CatalogTokenStore` keeps it in the mapping row's encrypted `credentials`. Renewing takes a lock on
that row first (`SELECT ... FOR UPDATE` on PostgreSQL; on SQLite a no-op UPDATE, which makes the
transaction the one writer), then re-reads the stored token: whoever waited behind a refresh finds
the fresh token and uses it instead of refreshing again. So however many runs, threads or
processes see the same expired token, the token endpoint gets one refresh, and a rotated refresh
token is written back (encrypted) in the same transaction, before anything else can use the old one.

`MemoryTokenStore` is the same contract within one process, for a client built without a catalog.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import sqlalchemy as sa

from esm_dagster.auth.tokens import TokenState
from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.models import ExternalSystemMapping
from esm_dagster.providers.base import ProviderError
from esm_dagster.security.secret import Secret
from esm_dagster.security.vault import Vault

Fetch = Callable[[Mapping[str, Any]], TokenState]


def needs_renewal(state: TokenState | None, stale: Secret | None) -> bool:
    """Whether `state` must be replaced: none yet, expiring, or the very token the provider refused."""
    if state is None or not state.usable():
        return True
    return stale is not None and state.access_token == stale


class TokenStore(Protocol):
    def load(self) -> TokenState | None:
        """The state known when the client was built (no I/O)."""

    def renew(self, fetch: Fetch, *, stale: Secret | None) -> TokenState:
        """Under the credential's lock: the stored state if still good, else `fetch`'s, written back."""


class MemoryTokenStore:
    def __init__(self, credentials: Mapping[str, Any]) -> None:
        self._credentials = dict(credentials)
        self._lock = threading.Lock()
        self.refreshes = 0

    def load(self) -> TokenState | None:
        return TokenState.from_credentials(self._credentials)

    def renew(self, fetch: Fetch, *, stale: Secret | None) -> TokenState:
        with self._lock:
            state = TokenState.from_credentials(self._credentials)
            if state is not None and not needs_renewal(state, stale):
                return state
            new = fetch(dict(self._credentials))
            self._credentials.update(new.fields())
            self.refreshes += 1
            return new

    def __repr__(self) -> str:
        return "MemoryTokenStore(***)"


class CatalogTokenStore:
    def __init__(
        self,
        catalog_url: str,
        mapping_id: uuid.UUID | str,
        *,
        initial: Mapping[str, Any] | None = None,
        vault: Vault | None = None,
        mapping: str = "?",
    ) -> None:
        self.catalog_url = catalog_url
        self.mapping_id = uuid.UUID(str(mapping_id))
        self.mapping = mapping
        self._initial = dict(initial or {})
        self._vault = vault
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"CatalogTokenStore(mapping={self.mapping!r}, credentials=***)"

    def load(self) -> TokenState | None:
        return TokenState.from_credentials(self._initial)

    def renew(self, fetch: Fetch, *, stale: Secret | None) -> TokenState:
        vault = self._vault or Vault.from_env()
        with session_factory(self.catalog_url).begin() as session:
            row = self._locked_row(session)
            credentials: dict[str, Any] = dict(vault.decrypt(row.credentials, mapping=repr(row.system_name)))
            state = TokenState.from_credentials(credentials)
            if state is not None and not needs_renewal(state, stale):
                return state  # another run refreshed while this one waited for the lock
            new = fetch(credentials)
            credentials.update(new.fields())
            row.credentials = vault.encrypt(credentials)
            self.refreshes += 1
        return new

    def _locked_row(self, session: Any) -> ExternalSystemMapping:
        table = ExternalSystemMapping
        if session.get_bind().dialect.name == "sqlite":
            # SQLite has no row locks; the first write makes this transaction the only writer until
            # it ends, and any other renewal waits here (busy_timeout) before reading the token.
            session.execute(
                sa.update(table).where(table.id == self.mapping_id).values(credentials=table.credentials)
            )
        row = session.get(table, self.mapping_id, with_for_update=True, populate_existing=True)
        if row is None:
            raise ProviderError(
                f"mapping {self.mapping} was deleted while its token was being renewed",
                provider="oauth2",
                error_class="client",
                code="mapping_deleted",
                retryable=False,
            )
        return row


def store_for(ctx: Any) -> TokenStore:
    """The mapping's row when the catalog is known (runs, probes), else memory (a bare client)."""
    if ctx.catalog_url is not None and getattr(ctx.row, "id", None) is not None:
        return CatalogTokenStore(
            ctx.catalog_url, ctx.row.id, initial=ctx.credentials, mapping=repr(ctx.mapping)
        )
    return MemoryTokenStore(ctx.credentials)
