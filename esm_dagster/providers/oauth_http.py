"""`JsonHttpProvider` for APIs whose bearer token is issued and renewed (`esm_dagster.auth.OAuth2Auth`).

The base class learns the secrets to scrub from error texts once, when the client is built; an
OAuth2 client gets its access token (and maybe a rotated refresh token) later. Errors built here
scrub the tokens held at the moment the error is built, and closing the client closes the token
endpoint's connection pool too. A provider that takes either a static token or a renewed one
(HubSpot: a private-app token or OAuth) passes any `httpx.Auth`; only an `OAuth2Auth` is renewed.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from esm_dagster.auth import OAuth2Auth
from esm_dagster.providers.base import ErrorClass, ProviderError
from esm_dagster.providers.http import JsonHttpProvider
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy


class OAuthHttpProvider(JsonHttpProvider):
    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth,
        policy: TransportPolicy,
        client: httpx.Client | None = None,
        secrets: Sequence[Secret] = (),
    ) -> None:
        super().__init__(base_url, auth=auth, policy=policy, client=client, secrets=secrets)
        self._renewed = auth if isinstance(auth, OAuth2Auth) else None
        self._fixed_secrets = tuple(self._secrets)

    @property
    def oauth(self) -> OAuth2Auth:
        """The renewing auth (a provider built with a static token has none)."""
        if self._renewed is None:
            raise TypeError(f"{type(self).__name__} was built with a static token, not OAuth2")
        return self._renewed

    def close(self) -> None:
        super().close()
        if self._renewed is not None:
            self._renewed.close()

    def _current_secrets(self) -> None:
        renewed = self._renewed.secrets() if self._renewed is not None else ()
        self._secrets = self._fixed_secrets + renewed

    def error_from_response(
        self,
        response: httpx.Response,
        method: str,
        url: str,
        *,
        error_class: ErrorClass,
        retryable: bool,
        code: str | None,
        message: str | None,
        retry_after: float | None = None,
    ) -> ProviderError:
        self._current_secrets()
        return super().error_from_response(
            response,
            method,
            url,
            error_class=error_class,
            retryable=retryable,
            code=code,
            message=message,
            retry_after=retry_after,
        )

    def transport_error(
        self,
        message: str,
        error_class: ErrorClass,
        retryable: bool,
        method: str,
        url: str,
        *,
        code: str | None = None,
    ) -> ProviderError:
        self._current_secrets()
        return super().transport_error(message, error_class, retryable, method, url, code=code)
