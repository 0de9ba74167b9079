"""The HTTP layer every JSON provider shares: one attempt, classified; retries by the policy.

A provider module says only what is particular to its API: paths, paging, how its error body reads
and which signals mean "retry later". This base owns the rest, identically for all of them:

- every call goes through the mapping's `TransportPolicy` (retries, backoff that honours
  `retry_after`, the shared rate-limit bucket, metrics);
- transport failures become `ProviderError`s raised outside the `except` block, so no chained
  httpx exception (whose request carries the credential) travels with them;
- redirects are not followed (a redirect must not carry the credential anywhere), and an absolute
  URL a provider hands back for the next page (Salesforce `nextRecordsUrl`, Twilio
  `next_page_uri`) is only followed on the mapping's own origin;
- error texts name method, path without query and the provider's message, with the credential
  masked.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal
from urllib.parse import urljoin, urlsplit

import httpx
import orjson

from esm_dagster import __version__
from esm_dagster.providers.auth import auth_secrets
from esm_dagster.providers.base import NOT_SENT_CODE, ErrorClass, Provider, ProviderError
from esm_dagster.security import log_filter
from esm_dagster.security.endpoints import is_loopback
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportMetrics, TransportPolicy
from esm_dagster.transport.client import followed_url_problem, provider_client

log_filter.install()

Parse = Literal["json", "jsonl", "text", "none"]
QueryValue = str | int | float | Sequence[str]


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def normalise_base_url(base_url: str, *, label: str, strip_suffix: str = "") -> str:
    """`scheme://host[:port][/prefix]` without a trailing slash or `strip_suffix` (e.g. `/v3`).

    https anywhere; plain http only to loopback (the emulators). No user info, query or fragment:
    credentials belong in the vault, not in `api_endpoint`.
    """
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{label} base_url must be an absolute http(s) URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"{label} base_url must not carry credentials, a query or a fragment")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(f"{label} is only reached over https (plain http is allowed for loopback emulators)")
    path = parts.path.rstrip("/")
    if strip_suffix and path.endswith(strip_suffix):
        path = path[: -len(strip_suffix)]
    return f"{parts.scheme}://{parts.netloc}{path}"


@dataclass(frozen=True, slots=True)
class HttpResult:
    """A successful answer: status, parsed body, headers and how long the attempt took."""

    status: int
    body: Any
    headers: httpx.Headers
    seconds: float


def default_classification(status: int) -> tuple[ErrorClass, bool]:
    """(error class, retryable) of an HTTP error status when the provider says nothing more."""
    if status == 429:
        return "rate_limit", True
    if status in (401, 403):
        return "auth", False
    if status == 408:
        return "timeout", True
    if status >= 500:
        return "server", True
    if status in (400, 422):
        return "validation", False
    return "client", False


class JsonHttpProvider(Provider):
    """A provider reached over HTTP(S) with one `httpx.Auth`; subclasses add streams and writes.

    Subclass hooks:
    - `error_details(body)` -> (code, message) from the provider's error body;
    - `http_error(response, method, url)` for signals beyond status + `Retry-After`;
    - `check_success(result, method, url)` for APIs that answer 200 with an error inside (Slack,
      Telegram): raise the `ProviderError` there.
    """

    label: ClassVar[str] = "provider"  # how messages name the API ("Twilio")
    BASE_SUFFIX: ClassVar[str] = ""  # a version suffix `api_endpoint` may or may not carry
    REQUEST_ID_HEADER: ClassVar[str | None] = None

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None,
        policy: TransportPolicy,
        client: httpx.Client | None = None,
        headers: Mapping[str, str] | None = None,
        secrets: Sequence[Secret] = (),
    ) -> None:
        self.policy = policy
        self.base_url = normalise_base_url(base_url, label=self.label, strip_suffix=self.BASE_SUFFIX)
        self.timeout_seconds = policy.timeout_seconds
        self._auth = auth
        self._secrets: tuple[Secret, ...] = tuple(secrets) + (auth_secrets(auth) if auth else ())
        # httpx and httpcore log URLs and response headers themselves: mask these values there.
        log_filter.register(self._secrets)
        self._masking = True
        self._owns_client = client is None
        self._client = client or provider_client(self.name, policy, secrets=self._secrets)
        self._headers = {"Accept": "application/json", "User-Agent": f"esm-dagster/{__version__}"}
        self._headers.update(headers or {})
        origin = urlsplit(self.base_url)
        self._origin = (origin.scheme, origin.netloc)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, credentials=***)"

    @property
    def metrics(self) -> TransportMetrics:
        return self.policy.metrics

    def close(self) -> None:
        if self._owns_client:
            self._client.close()
        if self._masking:
            self._masking = False
            log_filter.release(self._secrets)

    # ---- calls ----------------------------------------------------------------------------------
    def url_for(self, path: str) -> str:
        """`base_url + path` for a path; an absolute URL only if it is on the mapping's origin."""
        if not urlsplit(path).scheme:  # a path, even one whose query holds a URL
            return self.base_url + path if path.startswith("/") else urljoin(self.base_url + "/", path)
        parts = urlsplit(path)
        if (parts.scheme, parts.netloc) != self._origin:
            raise ProviderError(
                f"{self.label} handed back a URL on another origin; not following it with the credential",
                provider=self.name,
                error_class="server",
                code="foreign_url",
                url=path,
                secrets=self._secrets,
            )
        problem = followed_url_problem(self.policy, path)
        if problem is not None:
            raise ProviderError(
                problem,
                provider=self.name,
                error_class="client",
                code="endpoint_refused",
                url=path,
                secrets=self._secrets,
            )
        return path

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, QueryValue] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        ok: Sequence[int] = (200, 201, 202, 204),
        parse: Parse = "json",
        retry: bool = True,
    ) -> HttpResult:
        """One call through the transport policy; the answer or a classified `ProviderError`.

        `retry=False` for a write the provider cannot deduplicate (`WriteSpec.idempotency="none"`).
        """
        url = self.url_for(path)
        what = f"{method} {urlsplit(url).path}"
        return self.policy.call(
            lambda: self.send_once(
                method,
                url,
                params=params,
                json=json,
                data=data,
                content=content,
                headers=headers,
                ok=ok,
                parse=parse,
            ),
            what=what,
            retry=retry,
        )

    def send_once(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, QueryValue] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        ok: Sequence[int] = (200, 201, 202, 204),
        parse: Parse = "json",
    ) -> HttpResult:
        """One attempt, no retry."""
        failure: ProviderError | None = None
        started = time.perf_counter()
        body_bytes = orjson.dumps(json) if json is not None else content
        send_headers = {**self._headers, **(headers or {})}
        if json is not None:
            send_headers["Content-Type"] = "application/json"
        try:
            response = self._client.request(
                method,
                url,
                params=_flat_params(params),
                data=dict(data) if data is not None else None,
                content=body_bytes,
                headers=send_headers,
                auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # No connection, so no request: the provider cannot have acted on it (see NOT_SENT_CODE).
            failure = self.transport_error(
                f"{type(exc).__name__}: {exc} (not sent)",
                "timeout" if isinstance(exc, httpx.ConnectTimeout) else "network",
                True,
                method,
                url,
                code=NOT_SENT_CODE,
            )
        except httpx.TimeoutException as exc:
            failure = self.transport_error(
                f"no answer within {self.timeout_seconds:g} s ({type(exc).__name__})",
                "timeout",
                True,
                method,
                url,
            )
        except httpx.UnsupportedProtocol as exc:
            failure = self.transport_error(
                f"unsupported URL ({type(exc).__name__})", "client", False, method, url
            )
        except httpx.TransportError as exc:
            failure = self.transport_error(f"{type(exc).__name__}: {exc}", "network", True, method, url)
        if failure is not None:
            raise failure
        seconds = time.perf_counter() - started
        if response.status_code not in ok:
            raise self.http_error(response, method, url)
        result = HttpResult(
            response.status_code, self._parse(response, parse, method, url), response.headers, seconds
        )
        self.check_success(result, method, url)
        return result

    def _parse(self, response: httpx.Response, parse: Parse, method: str, url: str) -> Any:
        if parse == "none" or not response.content:
            return None
        if parse == "text":
            return response.text
        try:
            if parse == "jsonl":
                return [orjson.loads(line) for line in response.content.splitlines() if line.strip()]
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise self.protocol_error(
                f"{self.label} answered HTTP {response.status_code} with a body that is not JSON",
                "invalid_json",
                method,
                url,
                status=response.status_code,
                retryable=True,
            ) from None

    # ---- hooks ----------------------------------------------------------------------------------
    def error_details(self, body: Any) -> tuple[str | None, str | None]:
        """(provider error code, provider message) of an error body; override per provider."""
        if isinstance(body, dict):
            code = body.get("code") or body.get("error")
            message = body.get("message") or body.get("error_description") or body.get("detail")
            return (str(code) if code is not None else None, str(message) if message is not None else None)
        return None, None

    def http_error(self, response: httpx.Response, method: str, url: str) -> ProviderError:
        error_class, retryable = default_classification(response.status_code)
        code, message = self.error_details(_json_or_none(response))
        return self.error_from_response(
            response, method, url, error_class=error_class, retryable=retryable, code=code, message=message
        )

    def check_success(self, result: HttpResult, method: str, url: str) -> None:
        return None

    # ---- building errors ------------------------------------------------------------------------
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
        if retry_after is None:
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
        request_id = response.headers.get(self.REQUEST_ID_HEADER) if self.REQUEST_ID_HEADER else None
        return ProviderError(
            f"{self.label} answered HTTP {response.status_code}",
            provider=self.name,
            error_class=error_class,
            status=response.status_code,
            code=code,
            provider_message=message,
            retryable=retryable,
            retry_after=retry_after,
            request_id=request_id,
            method=method,
            url=url,
            secrets=self._secrets,
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
        return ProviderError(
            message,
            provider=self.name,
            error_class=error_class,
            retryable=retryable,
            method=method,
            url=url,
            code=code,
            secrets=self._secrets,
        )

    def protocol_error(
        self,
        message: str,
        code: str,
        method: str = "GET",
        url: str | None = None,
        *,
        status: int | None = 200,
        retryable: bool = False,
    ) -> ProviderError:
        """The answer does not have the shape the protocol promises."""
        return ProviderError(
            message,
            provider=self.name,
            error_class="server",
            status=status,
            code=code,
            retryable=retryable,
            method=method,
            url=url or self.base_url,
            secrets=self._secrets,
        )


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        return None


def _flat_params(
    params: Mapping[str, QueryValue] | None,
) -> list[tuple[str, str | int | float | bool | None]] | None:
    if params is None:
        return None
    flat: list[tuple[str, str | int | float | bool | None]] = []
    for key, value in params.items():
        if isinstance(value, (list, tuple)):
            flat.extend((key, str(item)) for item in value)
        else:
            flat.append((key, str(value)))
    return flat
