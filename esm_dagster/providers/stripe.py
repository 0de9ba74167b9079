"""Stripe v1: `customers`, `charges`, `events`, `payment_intents` and `refunds` streams, the events
feed, and customer create / update writes (PROVIDERS.md §1).

Auth is `Authorization: Bearer <secret key>`, added per request from a `Secret`; `Stripe-Version` is
sent when the mapping pins one. Lists are newest first; paging is `limit` (at most 100) and
`starting_after=<id of the last record>` while `has_more`; a window is `created[gte]` / `created[lt]`.
Every HTTP call goes through a `TransportPolicy` (retries, backoff honouring `Retry-After`, metrics);
this module only classifies errors as `ProviderError` with the class and `retryable` flag the policy
needs (Stripe's rules: retry on connection errors, on 409, on 5xx, on 429, and whenever
`Stripe-Should-Retry: true`; never when it says `false`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Self

import httpx
import orjson

from esm_dagster import __version__
from esm_dagster.providers.base import (
    CursorGuard,
    ErrorClass,
    Page,
    Provider,
    ProviderError,
    StreamSpec,
    WriteSpec,
)
from esm_dagster.providers.context import ProviderContext
from esm_dagster.providers.http import normalise_base_url, retry_after_seconds
from esm_dagster.security import log_filter
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportMetrics, TransportPolicy
from esm_dagster.transport.client import provider_client

DEFAULT_BASE_URL = "https://api.stripe.com"
MAX_PAGE_SIZE = 100
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_RETRY_ATTEMPTS = 3  # the catalog's default for `retry_attempts`
MAX_EVENT_TYPES = 20  # `types[]` takes at most 20 names
_ID = re.compile(r"cus_[A-Za-z0-9]{1,250}")


class _BearerAuth(httpx.Auth):
    """Adds the key at send time, so it lives in no client default and no repr."""

    def __init__(self, secret: Secret) -> None:
        self._secret = secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._secret.reveal()}"
        yield request

    def __repr__(self) -> str:
        return "_BearerAuth(***)"


class StripeProvider(Provider):
    name: ClassVar[str] = "stripe"
    STREAMS: ClassVar[tuple[StreamSpec, ...]] = (
        StreamSpec(
            name="customers",
            default_target="customer",
            supports_created_window=True,
            max_page_size=MAX_PAGE_SIZE,
            description="GET /v1/customers, newest first",
        ),
        StreamSpec(
            name="charges",
            default_target="payment",
            supports_created_window=True,
            max_page_size=MAX_PAGE_SIZE,
            description="GET /v1/charges, newest first",
        ),
        StreamSpec(
            name="events",
            default_target=None,
            supports_created_window=True,
            max_page_size=MAX_PAGE_SIZE,
            description="GET /v1/events, newest first (Stripe keeps about 30 days)",
        ),
        StreamSpec(
            name="payment_intents",
            default_target="payment",
            supports_created_window=True,
            max_page_size=MAX_PAGE_SIZE,
            description="GET /v1/payment_intents, newest first; latest_charge and customer link them",
        ),
        StreamSpec(
            name="refunds",
            default_target="refund",
            supports_created_window=True,
            max_page_size=MAX_PAGE_SIZE,
            description="GET /v1/refunds, newest first; each names its charge and payment intent",
        ),
    )
    # Stripe replays the first answer to a POST repeated with the same Idempotency-Key (24 h), so a
    # retry after a lost answer is safe for both.
    WRITES: ClassVar[tuple[WriteSpec, ...]] = (
        WriteSpec(
            name="create_customer",
            operation="create",
            idempotency="key",
            description="POST /v1/customers with Idempotency-Key",
        ),
        WriteSpec(
            name="update_customer",
            operation="update",
            idempotency="key",
            description="POST /v1/customers/{id} with Idempotency-Key; the record carries `id`",
        ),
    )
    supports_events: ClassVar[bool] = True
    IDENTITY_FIELDS: ClassVar[tuple[str, ...]] = ("api_key", "secret_key")
    AUTH_TYPES: ClassVar[frozenset[str]] = frozenset({"api_key", "webhook"})
    CREDENTIAL_SHAPES: ClassVar[Mapping[str, tuple[tuple[str, ...], ...]]] = {
        "api_key": (("api_key|secret_key",),),
        "webhook": (("webhook_secret",),),
    }

    @classmethod
    def from_context(cls, ctx: ProviderContext) -> Self:
        return cls(
            base_url=ctx.base_url,
            api_key=ctx.secret("api_key", "secret_key"),
            api_version=ctx.api_version,
            policy=ctx.policy,
        )

    def __init__(
        self,
        base_url: str,
        api_key: Secret,
        api_version: str | None = None,
        timeout_seconds: float | None = None,
        client: httpx.Client | None = None,
        *,
        retry_attempts: int | None = None,
        policy: TransportPolicy | None = None,
    ) -> None:
        """`policy` or (`timeout_seconds`, `retry_attempts`), not both: one source for those numbers.

        Without a policy, one is built from `timeout_seconds` (default 30) and `retry_attempts`
        (default 3, the catalog's default).
        """
        if not isinstance(api_key, Secret) or not api_key:
            raise TypeError("api_key must be a non-empty esm_dagster.security.secret.Secret")
        if policy is not None and (timeout_seconds is not None or retry_attempts is not None):
            raise ValueError("give either policy or timeout_seconds / retry_attempts, not both")
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be > 0")
        self.policy = policy or TransportPolicy(
            retry_attempts=DEFAULT_RETRY_ATTEMPTS if retry_attempts is None else retry_attempts,
            timeout_seconds=DEFAULT_TIMEOUT_SECONDS if timeout_seconds is None else timeout_seconds,
        )
        self.base_url = normalise_base_url(base_url, label="Stripe", strip_suffix="/v1")
        self.api_version = api_version or None
        self.timeout_seconds = self.policy.timeout_seconds
        self._secret = api_key
        self._auth = _BearerAuth(api_key)
        # httpx and httpcore log URLs and response headers themselves: mask the key there.
        log_filter.register([api_key])
        self._masking = True
        self._owns_client = client is None
        self._client = client or provider_client(self.name, self.policy, secrets=(api_key,))
        self._headers = {"Accept": "application/json", "User-Agent": f"esm-dagster/{__version__}"}
        if self.api_version:
            self._headers["Stripe-Version"] = self.api_version

    def __repr__(self) -> str:
        return f"StripeProvider(base_url={self.base_url!r}, api_version={self.api_version!r}, api_key=***)"

    @property
    def metrics(self) -> TransportMetrics:
        """Calls, retries, rate-limit waits and latencies of this client's policy."""
        return self.policy.metrics

    # ---- Provider -------------------------------------------------------------------------------
    def iter_pages(
        self,
        stream: str,
        *,
        window_start: int | None = None,
        window_end: int | None = None,
        page_size: int = MAX_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Iterator[Page]:
        """Pages newest first; `cursor` resumes after that record (an earlier `Page.next_cursor`).

        `page_size` above Stripe's maximum of 100 is lowered to 100.
        """
        spec = self.stream(stream)
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        params: dict[str, str] = {"limit": str(min(page_size, spec.max_page_size))}
        if window_start is not None:
            params["created[gte]"] = str(int(window_start))
        if window_end is not None:
            params["created[lt]"] = str(int(window_end))
        return self._pages(spec, params, cursor)

    def _pages(self, spec: StreamSpec, params: dict[str, str], cursor: str | None) -> Iterator[Page]:
        path = f"/v1/{spec.name}"
        guard = CursorGuard(self.name, spec.name)
        if cursor is not None:
            guard.check(cursor)
        while True:
            query = dict(params)
            if cursor is not None:
                query["starting_after"] = cursor
            body, seconds = self._get(path, query)
            records, has_more = self._list_body(body, path)
            next_cursor: str | None = None
            if has_more:
                if not records:
                    raise self._protocol_error(
                        "has_more is true on an empty page", "empty_page_with_has_more", path
                    )
                last_id = records[-1].get("id")
                if not isinstance(last_id, str) or not last_id:
                    raise self._protocol_error("the last record of a page has no id", "missing_id", path)
                guard.check(last_id)
                next_cursor = last_id
            yield Page(records=records, has_more=has_more, next_cursor=next_cursor, request_seconds=seconds)
            if next_cursor is None:
                return
            cursor = next_cursor

    def probe(self) -> float:
        _, seconds = self._get("/v1/customers", {"limit": "1"})
        return seconds

    def close(self) -> None:
        if self._owns_client:
            self._client.close()
        if self._masking:
            self._masking = False
            log_filter.release([self._secret])

    # ---- events ---------------------------------------------------------------------------------
    def latest_event(self, types: Sequence[str] | None = None) -> tuple[str, int] | None:
        """`(id, created)` of the newest event (of `types`, if given), or None; one `limit=1` call.

        `types` are Stripe event types; a single one may end in `*` (`customer.*`), which Stripe only
        accepts in its `type` parameter.
        """
        path = "/v1/events"
        body, _ = self._get(path, {"limit": "1", **_type_params(types)})
        records, _ = self._list_body(body, path)
        if not records:
            return None
        created = records[0].get("created")
        if not isinstance(created, int) or isinstance(created, bool):
            raise self._protocol_error("an event has no integer created", "unexpected_response", path)
        return self._record_id(records[0], path), created

    def events_after(self, event_id: str, types: Sequence[str] | None = None) -> list[str]:
        """Ids of the events newer than `event_id` (of `types`, if given), newest first.

        Pages towards the present with `ending_before=<newest id so far>`, 100 at a time. An
        `event_id` Stripe no longer knows (events are kept about 30 days) is a `ProviderError`
        (client, 404, `resource_missing`): the caller then reconciles with a full sync.
        """
        if not isinstance(event_id, str) or not event_id:
            raise ValueError("event_id must be a non-empty string")
        path = "/v1/events"
        params = {"limit": str(MAX_PAGE_SIZE), **_type_params(types)}
        guard = CursorGuard(self.name, "events")
        pages: list[list[str]] = []
        cursor = event_id
        while True:
            guard.check(cursor)
            body, _ = self._get(path, {**params, "ending_before": cursor})
            records, has_more = self._list_body(body, path)
            ids = [self._record_id(record, path) for record in records]
            pages.append(ids)  # each page is newest first; later pages are newer
            if not has_more:
                return [event for page in reversed(pages) for event in page]
            if not ids:
                raise self._protocol_error(
                    "has_more is true on an empty page", "empty_page_with_has_more", path
                )
            cursor = ids[0]

    def _record_id(self, record: dict[str, Any], path: str) -> str:
        record_id = record.get("id")
        if not isinstance(record_id, str) or not record_id:
            raise self._protocol_error("a record has no id", "missing_id", path)
        return record_id

    # ---- writes ---------------------------------------------------------------------------------
    def create_customer(self, fields: Mapping[str, str], *, idempotency_key: str) -> dict[str, Any]:
        """`POST /v1/customers` with form `fields` (`email`, `metadata[k]`, ...); the new customer.

        The key is required and must be deterministic for the record being written (the same record,
        the same key): a POST whose answer was lost (timeout, dropped connection) is then retried
        with it, and Stripe replays the first answer instead of creating a second customer. Without
        a key such a retry would be a blind resend, so there is no way to call this without one.
        """
        _check_key(idempotency_key)
        path = "/v1/customers"
        headers = {"Idempotency-Key": idempotency_key}
        body, _ = self.policy.call(
            lambda: self._send("POST", path, data=dict(fields), headers=headers), what=f"POST {path}"
        )
        return body

    def update_customer(
        self, customer_id: str, fields: Mapping[str, str], *, idempotency_key: str
    ) -> dict[str, Any]:
        """`POST /v1/customers/{id}` with form `fields`; the customer as it now is.

        An empty value unsets a field (Stripe's convention); `metadata[k]` merges per key. The key
        makes a retry after a lost answer a replay, as for `create_customer`.
        """
        if not isinstance(customer_id, str) or not _ID.fullmatch(customer_id):
            raise ValueError("customer_id must be a Stripe customer id (cus_...)")
        _check_key(idempotency_key)
        path = f"/v1/customers/{customer_id}"
        headers = {"Idempotency-Key": idempotency_key}
        body, _ = self.policy.call(
            lambda: self._send("POST", path, data=dict(fields), headers=headers),
            what="POST /v1/customers/{id}",
        )
        return body

    def write(
        self, name: str, records: Sequence[dict[str, Any]], *, idempotency_keys: Sequence[str]
    ) -> list[dict[str, Any]]:
        """`create_customer` / `update_customer` for each record (Stripe takes one object a call).

        Records are Stripe's parameters as Python values (`metadata` and `address` as dicts, lists
        for `preferred_locales`, None to unset); `update_customer` records carry the customer `id`.
        """
        spec = self.write_spec(name)
        if len(records) != len(idempotency_keys):
            raise ValueError("one idempotency key per record")
        if len(records) > spec.max_batch:
            raise ValueError(f"{name} takes at most {spec.max_batch} record per call")
        out: list[dict[str, Any]] = []
        for record, key in zip(records, idempotency_keys, strict=True):
            if name == "create_customer":
                if "id" in record:
                    raise ValueError("create_customer: Stripe assigns the id; the record must not carry one")
                out.append(self.create_customer(form_fields(record), idempotency_key=key))
            else:
                fields = dict(record)
                customer_id = fields.pop("id", None)
                if not isinstance(customer_id, str):
                    raise ValueError("update_customer: the record needs the customer's id")
                out.append(self.update_customer(customer_id, form_fields(fields), idempotency_key=key))
        return out

    # ---- HTTP -----------------------------------------------------------------------------------
    def _get(self, path: str, params: Mapping[str, str | list[str]]) -> tuple[dict[str, Any], float]:
        """One GET through the transport policy: retried as the policy decides, measured in `metrics`."""
        return self.policy.call(lambda: self._send("GET", path, params=params), what=f"GET {path}")

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | list[str]] | None = None,
        data: dict[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[dict[str, Any], float]:
        """One attempt: the JSON object Stripe answered with and the seconds it took, or ProviderError."""
        url = self.base_url + path
        failure: ProviderError | None = None
        started = time.perf_counter()
        try:
            response = self._client.request(
                method,
                url,
                params=params,
                data=data,
                headers={**self._headers, **(headers or {})},
                auth=self._auth,
            )
        except httpx.TimeoutException as exc:
            failure = self._transport_error(
                f"no answer within {self.timeout_seconds:g} s ({type(exc).__name__})",
                "timeout",
                True,
                path,
                method,
            )
        except httpx.UnsupportedProtocol as exc:
            failure = self._transport_error(
                f"unsupported URL ({type(exc).__name__})", "client", False, path, method
            )
        except httpx.TransportError as exc:
            failure = self._transport_error(f"{type(exc).__name__}: {exc}", "network", True, path, method)
        if failure is not None:
            # Raised outside the except block: no chained httpx exception, whose request carries
            # the Authorization header, travels with it.
            raise failure
        seconds = time.perf_counter() - started
        if response.status_code != 200:
            raise self._http_error(response, path, method)
        try:
            body = orjson.loads(response.content)  # 2-3x faster than json on 340 kB pages
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            raise ProviderError(
                "Stripe answered 200 with a body that is not a JSON object",
                provider=self.name,
                error_class="server",
                status=200,
                code="invalid_json",
                retryable=True,
                request_id=response.headers.get("request-id"),
                method=method,
                url=self.base_url + path,
                secrets=(self._secret,),
            )
        return body, seconds

    def _list_body(self, body: dict[str, Any], path: str) -> tuple[list[dict[str, Any]], bool]:
        data, has_more = body.get("data"), body.get("has_more")
        if body.get("object") != "list" or not isinstance(data, list) or not isinstance(has_more, bool):
            raise self._protocol_error("the answer is not a Stripe list object", "unexpected_response", path)
        if not all(isinstance(record, dict) for record in data):
            raise self._protocol_error("a list item is not an object", "unexpected_response", path)
        return data, has_more

    def _protocol_error(self, message: str, code: str, path: str) -> ProviderError:
        return ProviderError(
            message,
            provider=self.name,
            error_class="server",
            status=200,
            code=code,
            retryable=False,
            method="GET",
            url=self.base_url + path,
            secrets=(self._secret,),
        )

    def _transport_error(
        self, message: str, error_class: ErrorClass, retryable: bool, path: str, method: str = "GET"
    ) -> ProviderError:
        return ProviderError(
            message,
            provider=self.name,
            error_class=error_class,
            retryable=retryable,
            method=method,
            url=self.base_url + path,
            secrets=(self._secret,),
        )

    def _http_error(self, response: httpx.Response, path: str, method: str = "GET") -> ProviderError:
        status = response.status_code
        error: dict[str, Any] = {}
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            error = body["error"]
        code = error.get("code") if isinstance(error.get("code"), str) else None
        error_type = error.get("type") if isinstance(error.get("type"), str) else None
        message = error.get("message") if isinstance(error.get("message"), str) else None
        should_retry = (response.headers.get("stripe-should-retry") or "").strip().lower()

        error_class: ErrorClass
        if status == 429 or code == "rate_limit":  # a 400 with code rate_limit is the legacy form
            error_class, retryable = "rate_limit", True
        elif status in (401, 403):
            error_class, retryable = "auth", False
        elif status >= 500:
            error_class, retryable = "server", True
        elif status == 409:  # lock_timeout and friends; Stripe's SDK retries these
            error_class, retryable = "client", True
        elif status in (400, 402, 422) or error_type == "idempotency_error":
            error_class, retryable = "validation", False
        else:
            error_class, retryable = "client", False
        if should_retry == "true":
            retryable = True
        elif should_retry == "false":
            retryable = False

        summary = f"Stripe answered HTTP {status}" + (f" ({error_type})" if error_type else "")
        return ProviderError(
            summary,
            provider=self.name,
            error_class=error_class,
            status=status,
            code=code,
            provider_message=message,
            retryable=retryable,
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
            request_id=response.headers.get("request-id"),
            method=method,
            url=self.base_url + path,
            secrets=(self._secret,),
        )


def _check_key(idempotency_key: object) -> None:
    if not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 255:
        raise ValueError("idempotency_key must be a string of 1 to 255 characters")


def form_fields(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Python values as Stripe's form fields: `metadata[k]`, `preferred_locales[0]`, "" to unset."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(form_fields(value, name))
        elif isinstance(value, list | tuple):
            if not value:
                out[name] = ""  # an empty array clears the list
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    out.update(form_fields(item, f"{name}[{index}]"))
                else:
                    out[f"{name}[{index}]"] = _form_scalar(item)
        else:
            out[name] = _form_scalar(value)
    return out


def _form_scalar(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _type_params(types: Sequence[str] | None) -> dict[str, str | list[str]]:
    """Stripe's event filter: `type` for one name (wildcards allowed), `types[]` for several."""
    if types is None:
        return {}
    if isinstance(types, str):
        types = [types]
    names = list(types)
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ValueError("types must be a non-empty sequence of event type names")
    if len(names) == 1:
        return {"type": names[0]}
    if len(names) > MAX_EVENT_TYPES:
        raise ValueError(f"Stripe accepts at most {MAX_EVENT_TYPES} event types at once")
    if any("*" in name for name in names):
        raise ValueError("a wildcard event type (customer.*) can only be given alone")
    return {"types[]": names}
