"""`httpx.Auth` for OAuth2 bearer tokens that expire: fetch, renew before expiry, renew once on 401.

The access token is held as a `Secret` and put on the request at send time. Renewal goes through
the `TokenStore`, which serialises it per credential (row lock) and persists the result, so this
class only decides *when*: no token yet, less than a minute left, or a 401 to the token just sent.
A second 401 after a fresh token is the provider's answer and goes back to the provider module.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Mapping
from typing import Any

import httpx

from esm_dagster.auth.endpoint import TokenEndpoint
from esm_dagster.auth.grants import Grant
from esm_dagster.auth.store import TokenStore, needs_renewal
from esm_dagster.auth.tokens import TokenState
from esm_dagster.security.secret import Secret


class OAuth2Auth(httpx.Auth):
    def __init__(self, grant: Grant, endpoint: TokenEndpoint, store: TokenStore) -> None:
        self.grant = grant
        self.endpoint = endpoint
        self.store = store
        self._state = store.load()
        self._lock = threading.Lock()
        self.renewals = 0  # tokens this client obtained or adopted after the first

    def __repr__(self) -> str:
        return f"OAuth2Auth(grant={self.grant.name}, credentials=***)"

    def secrets(self) -> tuple[Secret, ...]:
        """Secrets this auth sends or holds, for error scrubbing."""
        held: list[Secret] = list(self.grant.secrets())
        state = self._state
        if state is not None:
            held.append(state.access_token)
            if state.refresh_token is not None:
                held.append(state.refresh_token)
        return tuple(held)

    def token(self) -> TokenState:
        """A usable token: the held one, or one renewed through the store."""
        with self._lock:
            if needs_renewal(self._state, None):
                self._state = self._renew(None)
            assert self._state is not None
            return self._state

    def refused(self, token: Secret) -> TokenState:
        """The provider answered 401 to `token`: renew it, unless another request already did."""
        with self._lock:
            if self._state is None or self._state.access_token == token:
                self._state = self._renew(token)
            return self._state

    def _renew(self, stale: Secret | None) -> TokenState:
        state = self.store.renew(self._fetch, stale=stale)
        self.renewals += 1
        return state

    def _fetch(self, credentials: Mapping[str, Any]) -> TokenState:
        return self.grant.fetch(self.endpoint, credentials)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        state = self.token()
        request.headers["Authorization"] = f"Bearer {state.access_token.reveal()}"
        response = yield request
        if response.status_code != 401:
            return
        fresh = self.refused(state.access_token)
        request.headers["Authorization"] = f"Bearer {fresh.access_token.reveal()}"
        yield request

    def close(self) -> None:
        self.endpoint.close()
