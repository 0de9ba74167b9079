"""Static credentials on the wire: bearer tokens, key headers, key query parameters, HTTP Basic.

Each is an `httpx.Auth` that adds the credential at send time from a `Secret`, so the clear text
lives in no client default, no request built ahead of time and no repr. OAuth2 and JWT flows,
which fetch and refresh tokens, live in `esm_dagster.auth`; they are `httpx.Auth` objects too,
so a provider takes either kind the same way.
"""

from __future__ import annotations

import base64
from collections.abc import Generator

import httpx

from esm_dagster.security.secret import Secret


class _SecretAuth(httpx.Auth):
    def secrets(self) -> tuple[Secret, ...]:
        """The secrets this auth puts on the wire, for the providers' error scrubbing."""
        return ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(***)"


class BearerAuth(_SecretAuth):
    """`Authorization: Bearer <token>` (Stripe, SendGrid, Slack, HubSpot private apps)."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        yield request

    def secrets(self) -> tuple[Secret, ...]:
        return (self._token,)


class HeaderKeyAuth(_SecretAuth):
    """A key in a header of the provider's choosing (`X-Api-Key: <key>`), optionally prefixed."""

    def __init__(self, header: str, key: Secret, prefix: str = "") -> None:
        self._header = header
        self._key = key
        self._prefix = prefix

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self._header] = f"{self._prefix}{self._key.reveal()}"
        yield request

    def secrets(self) -> tuple[Secret, ...]:
        return (self._key,)


class QueryKeyAuth(_SecretAuth):
    """A key in the query string (`?api_key=<key>`): the URL then holds it, so errors drop queries."""

    def __init__(self, param: str, key: Secret) -> None:
        self._param = param
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.url = request.url.copy_merge_params({self._param: self._key.reveal()})
        yield request

    def secrets(self) -> tuple[Secret, ...]:
        return (self._key,)


class BasicAuth(_SecretAuth):
    """HTTP Basic (Twilio `AccountSid:AuthToken`, Mailchimp `anystring:<key>`, Mixpanel).

    The user name is usually an account id, not a secret, but is held as one anyway: some
    providers (Stripe) take the key itself as the user name.
    """

    def __init__(self, username: Secret | str, password: Secret) -> None:
        self._username = username if isinstance(username, Secret) else Secret(username)
        self._password = password

    def _encoded(self) -> str:
        pair = f"{self._username.reveal()}:{self._password.reveal()}".encode()
        return base64.b64encode(pair).decode("ascii")

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = "Basic " + self._encoded()
        yield request

    def secrets(self) -> tuple[Secret, ...]:
        # The header's base64 too: a server that echoes the header back quotes it in that form.
        encoded = self._encoded()
        return (self._username, self._password, Secret(encoded), Secret(encoded.rstrip("=")))


def auth_secrets(auth: httpx.Auth) -> tuple[Secret, ...]:
    """The secrets an auth object sends (empty for auths that do not say)."""
    secrets = getattr(auth, "secrets", None)
    return tuple(secrets()) if callable(secrets) else ()
