"""How a credential turns into an access token: client credentials, a refresh token, a JWT assertion.

A grant reads the long-lived fields it needs from the credential as stored *now* (read under the
row lock, so a refresh token another process just rotated is the one used), asks the token
endpoint once and returns the new `TokenState`.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping
from typing import Any

import jwt

from esm_dagster.auth.endpoint import TokenEndpoint, expires_at_of
from esm_dagster.auth.tokens import TokenState
from esm_dagster.providers.base import ProviderError
from esm_dagster.security.secret import Secret

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME_SECONDS = 180  # Salesforce accepts assertions whose exp is at most 3 minutes ahead


def _secret(credentials: Mapping[str, Any], name: str) -> Secret | None:
    value = credentials.get(name)
    if not value:
        return None
    return value if isinstance(value, Secret) else Secret(str(value))


def state_from_answer(answer: Mapping[str, Any], previous_refresh: Secret | None = None) -> TokenState:
    """The token answer as state; a refresh token the answer leaves out is kept (no rotation)."""
    refresh = answer.get("refresh_token")
    instance = answer.get("instance_url")
    return TokenState(
        access_token=Secret(str(answer["access_token"])),
        expires_at=expires_at_of(answer),
        refresh_token=Secret(str(refresh)) if refresh else previous_refresh,
        instance_url=str(instance) if instance else None,
    )


class Grant(abc.ABC):
    name: str = "grant"

    @abc.abstractmethod
    def fetch(self, endpoint: TokenEndpoint, credentials: Mapping[str, Any]) -> TokenState:
        """A new token for the credential as stored now."""

    def secrets(self) -> tuple[Secret, ...]:
        return ()


class ClientCredentialsGrant(Grant):
    """`grant_type=client_credentials`; the client id and secret travel as HTTP Basic (PayPal).

    No refresh token: a new token is simply requested before the old one expires.
    """

    name = "client_credentials"

    def __init__(self, scope: str | None = None) -> None:
        self.scope = scope

    def fetch(self, endpoint: TokenEndpoint, credentials: Mapping[str, Any]) -> TokenState:
        form: dict[str, str | Secret] = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        return state_from_answer(endpoint.request(form))


class RefreshTokenGrant(Grant):
    """`grant_type=refresh_token` with `client_id` (and `client_secret`) in the form (Salesforce, HubSpot).

    The refresh token is read from the stored credential on every refresh: providers that rotate
    it (the answer carries a new one) invalidate the old one, which is then written back.
    """

    name = "refresh_token"

    def __init__(self, client_id: str, client_secret: Secret | None = None) -> None:
        self.client_id = client_id
        self.client_secret = client_secret

    def fetch(self, endpoint: TokenEndpoint, credentials: Mapping[str, Any]) -> TokenState:
        refresh = _secret(credentials, "refresh_token")
        if refresh is None:
            raise ProviderError(
                "the credential has no refresh_token to renew its access token with",
                provider=endpoint.provider,
                error_class="auth",
                code="missing_refresh_token",
                retryable=False,
            )
        form: dict[str, str | Secret] = {
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "client_id": self.client_id,
        }
        if self.client_secret is not None:
            form["client_secret"] = self.client_secret
        return state_from_answer(endpoint.request(form), previous_refresh=refresh)

    def secrets(self) -> tuple[Secret, ...]:
        return (self.client_secret,) if self.client_secret is not None else ()


class JwtBearerGrant(Grant):
    """`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` with an RS256-signed assertion.

    Salesforce's server-to-server flow: `iss` is the connected app's consumer key, `sub` the user
    name, `aud` the login host; no refresh token, a new assertion each time.
    """

    name = "jwt_bearer"

    def __init__(
        self,
        *,
        issuer: str,
        subject: str,
        audience: str,
        private_key: Secret,
        lifetime_seconds: int = ASSERTION_LIFETIME_SECONDS,
    ) -> None:
        self.issuer = issuer
        self.subject = subject
        self.audience = audience
        self._private_key = private_key
        self.lifetime_seconds = lifetime_seconds

    def assertion(self, now: float | None = None) -> Secret:
        issued = int(now if now is not None else time.time())
        claims = {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": self.audience,
            "exp": issued + self.lifetime_seconds,
        }
        try:
            token = jwt.encode(claims, self._private_key.reveal(), algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            # Not the exception text: the key parser may quote the key.
            raise ProviderError(
                f"credentials.private_key is not a usable RSA private key ({type(exc).__name__})",
                provider="jwt",
                error_class="auth",
                code="invalid_private_key",
                retryable=False,
            ) from None
        return Secret(token)

    def fetch(self, endpoint: TokenEndpoint, credentials: Mapping[str, Any]) -> TokenState:
        assertion = self.assertion()
        return state_from_answer(
            endpoint.request({"grant_type": JWT_BEARER, "assertion": assertion}, secrets=(self._private_key,))
        )

    def secrets(self) -> tuple[Secret, ...]:
        return (self._private_key,)

    def __repr__(self) -> str:
        return f"JwtBearerGrant(issuer={self.issuer!r}, subject={self.subject!r}, private_key=***)"
