"""Credentials that are fetched and renewed, not stored once: OAuth2 grants and JWT assertions.

`OAuth2Auth` is an `httpx.Auth` like the static ones in `providers.auth`, so a provider takes either
kind the same way. It keeps the access token in memory as a `Secret`, renews it a little before it
expires (and once after a 401), and writes the new token state back into the mapping's encrypted
`credentials` under a row lock, so that concurrent runs and processes refresh once between them
and a rotated refresh token survives to the next run.
"""

from esm_dagster.auth.endpoint import TokenEndpoint
from esm_dagster.auth.grants import ClientCredentialsGrant, Grant, JwtBearerGrant, RefreshTokenGrant
from esm_dagster.auth.oauth2 import OAuth2Auth
from esm_dagster.auth.store import CatalogTokenStore, MemoryTokenStore, TokenStore, store_for
from esm_dagster.auth.tokens import TokenState

__all__ = [
    "CatalogTokenStore",
    "ClientCredentialsGrant",
    "Grant",
    "JwtBearerGrant",
    "MemoryTokenStore",
    "OAuth2Auth",
    "RefreshTokenGrant",
    "TokenEndpoint",
    "TokenState",
    "TokenStore",
    "store_for",
]
