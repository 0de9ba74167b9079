"""`JsonHttpProvider` for APIs whose bearer token is issued and renewed (`esm_dagster.auth.OAuth2Auth`).

The base class learns the secrets to scrub from error texts once, when the client is built; an
OAuth2 client gets its access token (and maybe a rotated refresh token) later. Errors built here
scrub the tokens held at the moment the error is built, and closing the client closes the token
endpoint's connection pool too.
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
        auth: OAuth2Auth,
        policy: TransportPolicy,
        client: httpx.Client | None = None,
        secrets: Sequence[Secret] = (),
    ) -> None:
        super().__init__(base_url, auth=auth, policy=policy, client=client, secrets=secrets)
        self.oauth = auth
        self._fixed_secrets = tuple(secrets)

    def close(self) -> None:
        super().close()
        self.oauth.close()

    def _current_secrets(self) -> None:
        self._secrets = self._fixed_secrets + self.oauth.secrets()

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
        self, message: str, error_class: ErrorClass, retryable: bool, method: str, url: str
    ) -> ProviderError:
        self._current_secrets()
        return super().transport_error(message, error_class, retryable, method, url)
