"""One POST to an OAuth2 token endpoint, classified the way the transport policy needs it.

The distinction that matters is `invalid_grant` (and `invalid_client`): the refresh token was
revoked or rotated away, the assertion is signed with the wrong key, the client secret changed.
No retry can fix that, so it is an `auth` error that is not retryable and names the code; the
engine then puts the mapping in error for a person. A 5xx, a 429, a timeout or a dropped
connection at the token endpoint is transient and retryable like any other call.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson

from esm_dagster.providers.auth import BasicAuth
from esm_dagster.providers.base import ProviderError
from esm_dagster.providers.http import retry_after_seconds
from esm_dagster.security.endpoints import EndpointPolicy
from esm_dagster.security.secret import Secret
from esm_dagster.transport.client import GuardedTransport

# RFC 6749 §5.2 codes that mean "these credentials no longer work": re-authorization needed.
REFUSED_GRANT_CODES = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})


class TokenEndpoint:
    """`POST <url>` with a form body; the parsed token answer or a `ProviderError`."""

    def __init__(
        self,
        url: str,
        *,
        provider: str,
        timeout_seconds: float = 30.0,
        basic: tuple[Secret, Secret] | None = None,
        client: httpx.Client | None = None,
        endpoints: EndpointPolicy | None = None,
    ) -> None:
        """`endpoints`: the mapping's endpoint policy (else the installation's): the token
        endpoint is checked, pinned and TLS-verified like every provider request."""
        self.url = url
        self.provider = provider
        self.timeout_seconds = timeout_seconds
        self._basic = BasicAuth(basic[0], basic[1]) if basic else None
        self._basic_secrets: tuple[Secret, ...] = tuple(basic) if basic else ()
        self._owns_client = client is None
        self._client = client or httpx.Client(
            transport=GuardedTransport(
                endpoints or EndpointPolicy.from_env(), provider=provider, secrets=self._basic_secrets
            ),
            timeout=httpx.Timeout(timeout_seconds),
            follow_redirects=False,
            trust_env=False,
        )

    def __repr__(self) -> str:
        return f"TokenEndpoint(url={self.url!r}, credentials=***)"

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def request(self, form: Mapping[str, str | Secret], *, secrets: Sequence[Secret] = ()) -> dict[str, Any]:
        """The token answer (a JSON object with `access_token`); raises a classified `ProviderError`."""
        known = (
            tuple(secrets) + self._basic_secrets + tuple(v for v in form.values() if isinstance(v, Secret))
        )
        body = {k: v.reveal() if isinstance(v, Secret) else v for k, v in form.items()}
        failure: ProviderError | None = None
        try:
            response = self._client.post(
                self.url,
                data=body,
                headers={"Accept": "application/json"},
                auth=self._basic if self._basic is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException as exc:
            failure = self._error(
                f"token endpoint gave no answer within {self.timeout_seconds:g} s ({type(exc).__name__})",
                "timeout",
                True,
                known,
            )
        except httpx.TransportError as exc:
            failure = self._error(
                f"token endpoint unreachable ({type(exc).__name__})", "network", True, known
            )
        if failure is not None:
            raise failure  # outside the except block: no chained httpx error holding the form body
        return self._answer(response, known)

    def _answer(self, response: httpx.Response, known: tuple[Secret, ...]) -> dict[str, Any]:
        try:
            parsed = orjson.loads(response.content) if response.content else None
        except orjson.JSONDecodeError:
            parsed = None
        status = response.status_code
        if status == 200:
            if (
                isinstance(parsed, dict)
                and isinstance(parsed.get("access_token"), str)
                and parsed["access_token"]
            ):
                return parsed
            raise self._error(
                "token endpoint answered 200 without an access_token", "server", True, known, status=status
            )
        code = str(parsed.get("error")) if isinstance(parsed, dict) and parsed.get("error") else None
        description = parsed.get("error_description") if isinstance(parsed, dict) else None
        message = str(description) if description else None
        if status == 429:
            raise self._error(
                "token endpoint rate-limited the request",
                "rate_limit",
                True,
                known,
                status=status,
                code=code,
                provider_message=message,
                retry_after=retry_after_seconds(response.headers.get("retry-after")),
            )
        if status >= 500:
            raise self._error(
                f"token endpoint answered HTTP {status}",
                "server",
                True,
                known,
                status=status,
                code=code,
                provider_message=message,
                retry_after=retry_after_seconds(response.headers.get("retry-after")),
            )
        if code in REFUSED_GRANT_CODES:
            summary = f"token endpoint refused the grant ({code}): the mapping needs re-authorization"
        else:
            summary = f"token endpoint answered HTTP {status}"
        raise self._error(
            summary,
            "auth" if status in (400, 401, 403) else "client",
            False,
            known,
            status=status,
            code=code or "token_request_refused",
            provider_message=message,
        )

    def _error(
        self,
        message: str,
        error_class: Any,
        retryable: bool,
        known: tuple[Secret, ...],
        *,
        status: int | None = None,
        code: str | None = None,
        provider_message: str | None = None,
        retry_after: float | None = None,
    ) -> ProviderError:
        return ProviderError(
            message,
            provider=self.provider,
            error_class=error_class,
            status=status,
            code=code,
            provider_message=provider_message,
            retryable=retryable,
            retry_after=retry_after,
            method="POST",
            url=self.url,
            secrets=known,
        )


def expires_at_of(answer: Mapping[str, Any], now: float | None = None) -> float | None:
    """`expires_in` (seconds) as an absolute unix time; None when the answer has none (Salesforce)."""
    raw = answer.get("expires_in")
    if raw is None or isinstance(raw, bool):
        return None
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        return None
    return (now if now is not None else time.time()) + max(0.0, seconds)
