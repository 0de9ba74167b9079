"""PayPal REST: the `transactions` stream (Transaction Search) and the `orders` write (PROVIDERS.md §9).

Auth is OAuth2 client credentials: `POST /v1/oauth2/token` with the client id and secret as HTTP
Basic gives a bearer token that expires (`expires_in`); `esm_dagster.auth.OAuth2Auth` renews it
before it runs out and keeps it in the mapping's encrypted credentials, so concurrent runs share one.

Transaction Search takes `start_date` / `end_date` (RFC 3339, inclusive, at most 31 days apart):
a window is read as consecutive 31-day chunks, each paged with `page` (1-based) / `page_size` until
`total_pages`. The resume cursor is `<chunk start>:<page>`. The window end is exclusive here and
inclusive at PayPal, so the request ends one second earlier and the records are also checked.
Orders are created with `PayPal-Request-Id` = the idempotency key: PayPal answers a repeat with
the original order, so a retry after a lost answer creates nothing twice.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Self

import httpx

from esm_dagster.auth import ClientCredentialsGrant, OAuth2Auth, TokenEndpoint, store_for
from esm_dagster.providers.base import CursorGuard, Page, ProviderError, StreamSpec, WriteSpec
from esm_dagster.providers.context import ProviderContext
from esm_dagster.providers.http import default_classification, normalise_base_url
from esm_dagster.providers.oauth_http import OAuthHttpProvider
from esm_dagster.security.secret import Secret

MAX_PAGE_SIZE = 500
CHUNK_SECONDS = 31 * 86400
HISTORY_SECONDS = 3 * 365 * 86400  # how far back a read with no window start goes
MAX_REQUEST_ID = 108  # the Orders v2 spec's maxLength of PayPal-Request-Id


class PayPalProvider(OAuthHttpProvider):
    name: ClassVar[str] = "paypal"
    label: ClassVar[str] = "PayPal"
    REQUEST_ID_HEADER: ClassVar[str | None] = "Paypal-Debug-Id"
    STREAMS: ClassVar[tuple[StreamSpec, ...]] = (
        StreamSpec(
            name="transactions",
            default_target="payment",
            supports_created_window=True,
            primary_key="transaction_info.transaction_id",
            cursor_field="transaction_info.transaction_initiation_date",
            max_page_size=MAX_PAGE_SIZE,
            description="GET /v1/reporting/transactions in 31-day chunks, oldest first",
        ),
    )
    WRITES: ClassVar[tuple[WriteSpec, ...]] = (
        WriteSpec(
            name="orders",
            operation="create",
            idempotency="key",
            description="POST /v2/checkout/orders with PayPal-Request-Id",
        ),
    )
    IDENTITY_FIELDS: ClassVar[tuple[str, ...]] = ("client_id",)
    AUTH_TYPES: ClassVar[frozenset[str]] = frozenset({"oauth2", "webhook"})
    CREDENTIAL_SHAPES: ClassVar[Mapping[str, tuple[tuple[str, ...], ...]]] = {
        "oauth2": (("client_id", "client_secret"),),
        "webhook": (("webhook_id", "webhook_cert"),),
    }

    @classmethod
    def from_context(cls, ctx: ProviderContext) -> Self:
        base_url = normalise_base_url(ctx.base_url, label=cls.label)
        client_id = ctx.required_value("client_id")
        secret = ctx.secret("client_secret")
        endpoint = TokenEndpoint(
            base_url + "/v1/oauth2/token",
            provider=cls.name,
            timeout_seconds=ctx.policy.timeout_seconds,
            endpoints=ctx.policy.endpoints,
            basic=(Secret(client_id), secret),
        )
        auth = OAuth2Auth(ClientCredentialsGrant(), endpoint, store_for(ctx))
        return cls(base_url, auth=auth, policy=ctx.policy, secrets=(secret,))

    # ---- errors ---------------------------------------------------------------------------------
    def error_details(self, body: Any) -> tuple[str | None, str | None]:
        """PayPal's `{name, message, details:[{field, issue, description}]}`, or OAuth's `{error}`."""
        if isinstance(body, dict) and body.get("name"):
            message = str(body.get("message") or "")
            details = body.get("details")
            if isinstance(details, list) and details and isinstance(details[0], dict):
                first = details[0]
                issue = " ".join(str(first[k]) for k in ("field", "issue", "description") if first.get(k))
                message = f"{message} ({issue})" if message else issue
            return str(body["name"]), message or None
        return super().error_details(body)

    def http_error(self, response: httpx.Response, method: str, url: str) -> ProviderError:
        error_class, retryable = default_classification(response.status_code)
        code, message = self.error_details(_json(response))
        if code == "RATE_LIMIT_REACHED":  # the name is unconfirmed [U]; the 429 alone already says it
            error_class, retryable = "rate_limit", True
        return self.error_from_response(
            response, method, url, error_class=error_class, retryable=retryable, code=code, message=message
        )

    # ---- reads ----------------------------------------------------------------------------------
    def iter_pages(
        self,
        stream: str,
        *,
        window_start: int | None = None,
        window_end: int | None = None,
        page_size: int = 100,
        cursor: str | None = None,
    ) -> Iterator[Page]:
        spec = self.stream(stream)
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        end = int(window_end if window_end is not None else time.time())
        start = int(window_start if window_start is not None else end - HISTORY_SECONDS)
        return self._pages(spec, start, end, min(page_size, spec.max_page_size), cursor)

    def _pages(self, spec: StreamSpec, start: int, end: int, size: int, cursor: str | None) -> Iterator[Page]:
        guard = CursorGuard(self.name, spec.name)
        # Page numbers never repeat, but a server that ignores `page` sends the same page again:
        # the same first and last transaction twice stops the stream instead of reading it forever.
        seen = CursorGuard(self.name, spec.name)
        chunk, page = start, 1
        if cursor is not None:
            guard.check(cursor)
            chunk, page = _parse_cursor(cursor, self.name)
        path = "/v1/reporting/transactions"
        while chunk < end:
            chunk_end = min(end, chunk + CHUNK_SECONDS)
            params = {
                "start_date": rfc3339(chunk),
                "end_date": rfc3339(chunk_end - 1),
                "fields": "all",
                "page_size": str(size),
                "page": str(page),
            }
            result = self.request("GET", path, params=params)
            body = result.body
            details, total_pages = (body or {}).get("transaction_details"), (body or {}).get("total_pages")
            if not isinstance(details, list) or not isinstance(total_pages, int):
                raise self.protocol_error(
                    "a transaction search answer without transaction_details / total_pages",
                    "unexpected_response",
                    "GET",
                    self.url_for(path),
                )
            if details:
                seen.check(f"{chunk}:{_transaction_id(details[0])}..{_transaction_id(details[-1])}")
            records = [r for r in details if _within(r, chunk, chunk_end)]
            if page < total_pages:
                next_cursor: str | None = f"{chunk}:{page + 1}"
            elif chunk_end < end:
                next_cursor = f"{chunk_end}:1"
            else:
                next_cursor = None
            if next_cursor is not None:
                guard.check(next_cursor)
            yield Page(
                records=records,
                has_more=next_cursor is not None,
                next_cursor=next_cursor,
                request_seconds=result.seconds,
            )
            if next_cursor is None:
                return
            chunk, page = _parse_cursor(next_cursor, self.name)

    def probe(self) -> float:
        now = int(time.time())
        params = {"start_date": rfc3339(now - 86400), "end_date": rfc3339(now), "page_size": "1"}
        return self.request("GET", "/v1/reporting/transactions", params=params).seconds

    def get_order(self, order_id: str) -> dict[str, Any]:
        body = self.request("GET", f"/v2/checkout/orders/{order_id}").body
        if not isinstance(body, dict):
            raise self.protocol_error("an order answer that is not a JSON object", "unexpected_response")
        return body

    # ---- writes ---------------------------------------------------------------------------------
    def write(
        self, name: str, records: Sequence[dict[str, Any]], *, idempotency_keys: Sequence[str]
    ) -> list[dict[str, Any]]:
        self.write_spec(name)
        if len(records) != len(idempotency_keys):
            raise ValueError("one idempotency key per record")
        out = []
        for record, key in zip(records, idempotency_keys, strict=True):
            if not isinstance(key, str) or not 1 <= len(key) <= MAX_REQUEST_ID:
                raise ValueError(f"PayPal-Request-Id must be 1 to {MAX_REQUEST_ID} characters")
            headers = {"PayPal-Request-Id": key, "Prefer": "return=representation"}
            body = self.request(
                "POST", "/v2/checkout/orders", json=order_body(record), headers=headers, ok=(200, 201)
            ).body
            out.append(body)
        return out


def order_body(record: dict[str, Any]) -> dict[str, Any]:
    """An Orders v2 create body: the record itself if it is one, else built from flat fields."""
    if "purchase_units" in record:
        return record
    unit: dict[str, Any] = {
        "amount": {"currency_code": record["currency_code"], "value": str(record["value"])}
    }
    for key in ("reference_id", "custom_id", "invoice_id", "description"):
        if record.get(key):
            unit[key] = str(record[key])
    return {"intent": record.get("intent", "CAPTURE"), "purchase_units": [unit]}


def rfc3339(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    """PayPal's RFC 3339 (`+0000` offsets included); an offset is required."""
    parsed = dt.datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        raise ValueError("a time zone offset is required")
    return parsed.timestamp()


def _transaction_id(record: Any) -> str:
    try:
        return str(record["transaction_info"]["transaction_id"])
    except (KeyError, TypeError):
        return "?"


def _within(record: Any, start: int, end: int) -> bool:
    try:
        when = parse_rfc3339(record["transaction_info"]["transaction_initiation_date"])
    except (KeyError, TypeError, ValueError):
        return True  # let the rules quarantine a record with no readable date rather than drop it
    return start <= when < end


def _parse_cursor(cursor: str, provider: str) -> tuple[int, int]:
    chunk, _, page = cursor.partition(":")
    try:
        return int(chunk), max(1, int(page))
    except ValueError:
        raise ProviderError(
            f"cursor {cursor!r} is not a PayPal transactions cursor (<chunk start>:<page>)",
            provider=provider,
            error_class="client",
            code="bad_cursor",
        ) from None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json() if response.content else None
    except ValueError:
        return None
