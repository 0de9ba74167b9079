"""A stateful PayPal REST emulator on loopback: OAuth2 client credentials, Orders v2, Transaction Search.

What it implements (PROVIDERS.md §9; shapes checked against PayPal's published OpenAPI specs by
`esm_dagster_tests/sandbox/test_paypal_contract.py`):

- `POST /v1/oauth2/token` (`grant_type=client_credentials`, client id and secret as HTTP Basic):
  bearer tokens that expire after `token_lifetime` seconds (the embedded `OAuthTokenServer`;
  `emulator.oauth.revoke(token)` revokes one). A wrong client is 401 `invalid_client`.
- `POST /v2/checkout/orders` with `PayPal-Request-Id`: a repeat of the id answers the original
  order in its latest state (200, as the spec says) instead of creating another; `Prefer: return=representation` gives
  the whole order, the default (`return=minimal`) only `id`, `status`, `links`.
  `GET /v2/checkout/orders/{id}`; `POST /v2/checkout/orders/{id}/capture` once the payer approved
  (`approve(id)` plays the payer), which adds the capture to the transaction search.
- `GET /v1/reporting/transactions`: `start_date` / `end_date` (RFC 3339, both inclusive, at most 31
  days apart), `page` (1-based), `page_size` (1..500), `fields`; oldest first.
- Errors in PayPal's shape `{name,message,debug_id,details:[{field,value,location,issue,description}],
  links}`; an unknown or expired bearer token is 401 `AUTHENTICATION_FAILURE`.
- `faults`: 5xx `INTERNAL_SERVER_ERROR`, 429 `RATE_LIMIT_REACHED` (the name is unconfirmed [U];
  the status is documented) with `Retry-After`, delays, disconnects, lost answers, tokens that
  expire after N requests, transactions that appear late (`mutate_next(backdate=)`), and pages shifted back by `duplicate_next(items=)` (offset paging when
  records arrive between two pages).

- Webhooks (`send_webhooks(url, webhook_id)`): each completed capture posts its
  `PAYMENT.CAPTURE.COMPLETED` event, RSA-signed, from a background thread, retried on a non-2xx
  (`esm_dagster.sandbox.paypal.webhooks`); `webhook_cert` is the PEM the mapping pins.

Not implemented: PATCH of orders, authorizations, refunds, other webhook events.
"""

from __future__ import annotations

import copy
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

import orjson
from cryptography.hazmat.primitives.asymmetric import rsa

from esm_dagster.sandbox._http import Fault, Request, Response
from esm_dagster.sandbox.oauth import IssuedToken, OAuthTokenServer
from esm_dagster.sandbox.paypal.data import (
    DEFAULT_END,
    DEFAULT_START,
    ZERO_DECIMAL,
    parse_rfc3339,
    rfc3339,
    seed_transactions,
    transaction,
)
from esm_dagster.sandbox.paypal.webhooks import PAYPAL_RETRY, PayPalWebhookConfig, capture_completed
from esm_dagster.sandbox.webhook_sender import PushingEmulator, RetryPolicy, WebhookSender
from esm_dagster.sandbox.webhook_signers import paypal_signing_identity

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100
MAX_WINDOW_SECONDS = 31 * 86400
_ORDER_PATH = re.compile(r"^/v2/checkout/orders/([A-Z0-9]{17})(/capture)?$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_VALUE = re.compile(r"^((-?[0-9]+)|(-?([0-9]+)?[.][0-9]+))$")  # the spec's pattern for amount.value
_ID_ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXY"


class PayPalError(Exception):
    def __init__(
        self, status: int, name: str, message: str, details: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.name, self.message, self.details = status, name, message, details or []


def _invalid(
    field: str, value: Any, issue: str, description: str, *, status: int = 400, location: str = "body"
) -> PayPalError:
    name = "INVALID_REQUEST" if status == 400 else "UNPROCESSABLE_ENTITY"
    message = (
        "Request is not well-formed, syntactically incorrect, or violates schema."
        if status == 400
        else "The requested action could not be performed, semantically incorrect, or failed business validation."
    )
    detail = {
        "field": field,
        "value": str(value)[:100],
        "location": location,
        "issue": issue,
        "description": description,
    }
    return PayPalError(status, name, message, [detail])


class PayPalEmulator(PushingEmulator):
    def __init__(
        self,
        *,
        clients: dict[str, str],
        transactions: int = 120,
        seed: int = 11,
        start: int = DEFAULT_START,
        end: int = DEFAULT_END,
        token_lifetime: float = 32400.0,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.clock = clock
        self.oauth = OAuthTokenServer(
            clients=clients,
            access_lifetime=token_lifetime,
            token_prefix="A21AA",  # noqa: S106 - PayPal tokens start like this; the rest is random
            answer=self._token_extra,
            clock=clock,
        )
        self._lock = threading.Lock()
        self.transactions: list[dict[str, Any]] = seed_transactions(transactions, seed, start, end)
        self.orders: dict[str, dict[str, Any]] = {}
        self._request_ids: dict[str, str] = {}  # PayPal-Request-Id -> order id
        self.late: list[str] = []  # ids of transactions the mutate fault added
        self._hooks: PayPalWebhookConfig | None = None
        self.webhook_cert: str | None = None  # PEM of the signing certificate, once webhooks are on

    # ---- webhooks -------------------------------------------------------------------------------
    def send_webhooks(
        self,
        url: str,
        webhook_id: str,
        *,
        signing_identity: tuple[rsa.RSAPrivateKey, str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> WebhookSender:
        """The webhook `webhook_id` listens at `url` (loopback); its events are signed with
        `signing_identity` (key, certificate PEM), made here unless given."""
        key, cert = signing_identity or paypal_signing_identity()
        with self._lock:
            self._hooks = PayPalWebhookConfig(url, webhook_id, key)
            self.webhook_cert = cert
            return self._open_sender(url, retry or PAYPAL_RETRY)

    def _token_extra(self, issued: IssuedToken) -> dict[str, Any]:
        return {
            "scope": "https://uri.paypal.com/services/reporting/search/read",
            "app_id": "APP-80W284485P519543T",
            "nonce": secrets.token_hex(8),
        }

    # ---- Python API -----------------------------------------------------------------------------
    def approve(self, order_id: str) -> None:
        """The payer approves the order (what the approve link would do in a browser)."""
        with self._lock:
            self.orders[order_id]["status"] = "APPROVED"

    # ---- HTTP -----------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        if path == "/v1/oauth2/token":
            return self.oauth.handle_token(request)
        header = request.header("authorization") or ""
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        if self.oauth.authenticate(token) is None or (token and self.faults.credential_expired(token)):
            return self._error(
                PayPalError(
                    401,
                    "AUTHENTICATION_FAILURE",
                    "Authentication failed due to missing authorization header, or invalid authentication credentials.",
                )
            )
        try:
            if path == "/v1/reporting/transactions" and request.method == "GET":
                return self._json(200, self._search(request.query))
            if path == "/v2/checkout/orders" and request.method == "POST":
                return self._create_order(request)
            match = _ORDER_PATH.match(path)
            if match and match.group(2) and request.method == "POST":
                return self._json(201, self._capture(match.group(1)))
            if match and not match.group(2) and request.method == "GET":
                with self._lock:
                    order = self.orders.get(match.group(1))
                    if order is not None:
                        return self._json(200, self._full(order))
                raise self._not_found(match.group(1))
            raise PayPalError(404, "RESOURCE_NOT_FOUND", "The specified resource does not exist.")
        except PayPalError as error:
            return self._error(error)

    def render_fault(self, request: Request, fault: Fault) -> Response:
        if fault.kind == "rate_limit":
            headers = []
            if fault.retry_after is not None:
                headers.append(("Retry-After", str(max(0, math.ceil(fault.retry_after)))))
            return self._error(
                PayPalError(429, "RATE_LIMIT_REACHED", "Too many requests. Blocked due to rate limiting."),
                headers,
            )
        if fault.status == 503:
            return self._error(PayPalError(503, "SERVICE_UNAVAILABLE", "Service Unavailable."))
        if fault.status >= 500:
            return self._error(
                PayPalError(fault.status, "INTERNAL_SERVER_ERROR", "An internal server error has occurred.")
            )
        return self._error(
            PayPalError(fault.status, "INVALID_REQUEST", f"Injected client error {fault.status}.")
        )

    def internal_error(self, request: Request) -> Response:
        return self._error(
            PayPalError(500, "INTERNAL_SERVER_ERROR", "An internal server error has occurred.")
        )

    # ---- transaction search ---------------------------------------------------------------------
    def _search(self, query: str) -> dict[str, Any]:
        params = dict(parse_qsl(query, keep_blank_values=True))
        bounds = []
        for name in ("start_date", "end_date"):
            raw = params.get(name)
            if not raw:
                raise _invalid(
                    name, "", "MISSING_REQUIRED_PARAMETER", f"{name} is required", location="query"
                )
            try:
                bounds.append(parse_rfc3339(raw))
            except ValueError:
                raise _invalid(
                    name,
                    raw,
                    "INVALID_PARAMETER_SYNTAX",
                    f"{name} must be RFC 3339 with an offset",
                    location="query",
                ) from None
        start, end = bounds
        if end < start:
            raise _invalid(
                "end_date",
                params["end_date"],
                "INVALID_PARAMETER_VALUE",
                "end_date is before start_date",
                location="query",
            )
        if end - start > MAX_WINDOW_SECONDS:
            raise _invalid(
                "end_date",
                params["end_date"],
                "INVALID_PARAMETER_VALUE",
                "Date range is greater than 31 days",
                location="query",
            )
        page = self._int(params, "page", 1, 1, 10**6)
        page_size = self._int(params, "page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        offset = (page - 1) * page_size
        if page > 1:
            shifted = self.faults.take_handler_fault("duplicate", "/v1/reporting/transactions")
            if shifted is not None:  # records added meanwhile shift the page back, as offset paging does
                offset = max(0, offset - shifted.items)
        if page > 1:
            late = self.faults.take_handler_fault("mutate", "/v1/reporting/transactions")
            if late is not None:
                self.add_late_transaction(late.seconds)
        with self._lock:
            matching = sorted(
                (
                    t
                    for t in self.transactions
                    if start <= parse_rfc3339(t["transaction_info"]["transaction_initiation_date"]) <= end
                ),
                key=lambda t: (
                    t["transaction_info"]["transaction_initiation_date"],
                    t["transaction_info"]["transaction_id"],
                ),
            )
            chosen = copy.deepcopy(matching[offset : offset + page_size])
        total = len(matching)
        total_pages = max(1, math.ceil(total / page_size)) if total else 0
        base = f"{self.url}/v1/reporting/transactions?start_date={params['start_date']}&end_date={params['end_date']}&page_size={page_size}"
        links = [{"href": f"{base}&page={page}", "rel": "self", "method": "GET"}]
        if page < total_pages:
            links.append({"href": f"{base}&page={page + 1}", "rel": "next", "method": "GET"})
        if total_pages:
            links.append({"href": f"{base}&page={total_pages}", "rel": "last", "method": "GET"})
        return {
            "transaction_details": chosen,
            "account_number": "ESMTESTACCOUNT1",
            "start_date": rfc3339(start),
            "end_date": rfc3339(end),
            "last_refreshed_datetime": rfc3339(self.clock()),
            "page": page,
            "total_items": total,
            "total_pages": total_pages,
            "links": links,
        }

    def add_late_transaction(self, backdate: float) -> str:
        """A transaction that shows up `backdate` seconds after it was initiated (PayPal lists them
        up to about three hours late): a later search over its time must find it."""
        now = self.clock()
        with self._lock:
            count = len(self.transactions)
            payer = {"account_id": "ESMLATEPAYER1", "email_address": f"late{count}@example.com"}
            record = transaction(
                f"LATE{count:013d}", now - backdate, {"currency_code": "USD", "value": "5.00"}, payer
            )
            self.transactions.append(record)
            self.late.append(record["transaction_info"]["transaction_id"])
            return str(record["transaction_info"]["transaction_id"])

    @staticmethod
    def _int(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
        raw = params.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise _invalid(
                name, raw, "INVALID_PARAMETER_SYNTAX", f"{name} must be an integer", location="query"
            ) from None
        if not low <= value <= high:
            raise _invalid(
                name,
                raw,
                "INVALID_PARAMETER_VALUE",
                f"{name} must be between {low} and {high}",
                location="query",
            )
        return value

    # ---- orders ---------------------------------------------------------------------------------
    def _create_order(self, request: Request) -> Response:
        request_id = request.header("paypal-request-id")
        representation = "return=representation" in (request.header("prefer") or "")
        with self._lock:
            if request_id and request_id in self._request_ids:
                order = self.orders[self._request_ids[request_id]]  # the spec: 200 to an idempotent repeat
                return self._json(200, self._full(order) if representation else self._minimal(order))
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            raise PayPalError(
                400,
                "INVALID_REQUEST",
                "Request is not well-formed, syntactically incorrect, or violates schema.",
                [
                    {
                        "field": "/",
                        "location": "body",
                        "issue": "MALFORMED_REQUEST_JSON",
                        "description": "The request JSON is not well formed.",
                    }
                ],
            ) from None
        units = self._validate_order(body)
        now = rfc3339(self.clock())
        with self._lock:
            if request_id and request_id in self._request_ids:  # a concurrent twin won the race
                order = self.orders[self._request_ids[request_id]]
            else:
                order_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(17))
                order = {
                    "id": order_id,
                    "intent": body["intent"],
                    "status": "CREATED",
                    "purchase_units": units,
                    "create_time": now,
                    "update_time": now,
                }
                self.orders[order_id] = order
                if request_id:
                    self._request_ids[request_id] = order_id
            return self._json(201, self._full(order) if representation else self._minimal(order))

    def _validate_order(self, body: Any) -> list[dict[str, Any]]:
        if not isinstance(body, dict):
            raise _invalid("/", body, "INVALID_PARAMETER_SYNTAX", "the body must be a JSON object")
        if body.get("intent") not in ("CAPTURE", "AUTHORIZE"):
            raise _invalid(
                "/intent",
                body.get("intent"),
                "INVALID_PARAMETER_VALUE",
                "intent must be CAPTURE or AUTHORIZE",
            )
        units = body.get("purchase_units")
        if not isinstance(units, list) or not 1 <= len(units) <= 10:
            raise _invalid(
                "/purchase_units", units, "INVALID_ARRAY_LENGTH", "purchase_units takes 1 to 10 items"
            )
        out = []
        for i, unit in enumerate(units):
            amount = unit.get("amount") if isinstance(unit, dict) else None
            where = f"/purchase_units/@reference_id=='{(unit or {}).get('reference_id', 'default')}'/amount"
            if not isinstance(amount, dict):
                raise _invalid(where, None, "MISSING_REQUIRED_PARAMETER", "amount is required")
            currency, value = amount.get("currency_code"), amount.get("value")
            if not isinstance(currency, str) or not _CURRENCY.match(currency):
                raise _invalid(
                    f"{where}/currency_code",
                    currency,
                    "INVALID_PARAMETER_VALUE",
                    "currency_code must be ISO 4217",
                )
            if not isinstance(value, str) or not _VALUE.match(value):
                raise _invalid(
                    f"{where}/value", value, "INVALID_PARAMETER_SYNTAX", "value must be a decimal string"
                )
            try:
                exponent = -Decimal(value).as_tuple().exponent  # type: ignore[operator]
            except InvalidOperation:
                raise _invalid(
                    f"{where}/value", value, "INVALID_PARAMETER_SYNTAX", "value must be a decimal string"
                ) from None
            if exponent > (0 if currency in ZERO_DECIMAL else 2):
                raise _invalid(
                    f"{where}/value",
                    value,
                    "DECIMAL_PRECISION",
                    "If the currency supports decimals, only two decimal place precision is supported.",
                    status=422,
                )
            if Decimal(value) <= 0:
                raise _invalid(
                    f"{where}/value",
                    value,
                    "CANNOT_BE_ZERO_OR_NEGATIVE",
                    "Must be greater than zero.",
                    status=422,
                )
            kept = {
                k: unit[k] for k in ("reference_id", "custom_id", "invoice_id", "description") if k in unit
            }
            kept.setdefault("reference_id", "default" if i == 0 else str(i))
            kept["amount"] = {"currency_code": currency, "value": value}
            out.append(kept)
        return out

    def _capture(self, order_id: str) -> dict[str, Any]:
        with self._lock:
            order = self.orders.get(order_id)
            if order is None:
                raise self._not_found(order_id)
            if order["status"] == "COMPLETED":
                raise _invalid(
                    "",
                    order_id,
                    "ORDER_ALREADY_CAPTURED",
                    "Order already captured.",
                    status=422,
                    location="path",
                )
            if order["status"] != "APPROVED":
                raise _invalid(
                    "",
                    order_id,
                    "ORDER_NOT_APPROVED",
                    "Payer has not yet approved the Order for payment.",
                    status=422,
                    location="path",
                )
            now = self.clock()
            for unit in order["purchase_units"]:
                capture_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(17))
                unit["payments"] = {
                    "captures": [
                        {
                            "id": capture_id,
                            "status": "COMPLETED",
                            "amount": unit["amount"],
                            "create_time": rfc3339(now),
                        }
                    ]
                }
                extra = {k: unit[k] for k in ("custom_id", "invoice_id") if k in unit}
                payer = {"account_id": "ESMTESTPAYER1", "email_address": "buyer@example.com"}
                self.transactions.append(transaction(capture_id, now, dict(unit["amount"]), payer, **extra))
                if self._hooks is not None and self.webhooks is not None:
                    capture = unit["payments"]["captures"][0]
                    self._push(
                        *capture_completed(order_id, copy.deepcopy(capture), unit, now), self._hooks.sign
                    )
            order["status"] = "COMPLETED"
            order["update_time"] = rfc3339(now)
            return self._full(order)

    def _not_found(self, order_id: str) -> PayPalError:
        return PayPalError(
            404,
            "RESOURCE_NOT_FOUND",
            "The specified resource does not exist.",
            [
                {
                    "field": "order_id",
                    "value": order_id,
                    "location": "path",
                    "issue": "INVALID_RESOURCE_ID",
                    "description": "Specified resource ID does not exist. Please check the resource ID and try again.",
                }
            ],
        )

    def _links(self, order: dict[str, Any]) -> list[dict[str, str]]:
        href = f"{self.url}/v2/checkout/orders/{order['id']}"
        links = [{"href": href, "rel": "self", "method": "GET"}]
        if order["status"] in ("CREATED", "APPROVED"):
            links.append(
                {"href": f"{self.url}/checkoutnow?token={order['id']}", "rel": "approve", "method": "GET"}
            )
            links.append({"href": f"{href}/capture", "rel": "capture", "method": "POST"})
        return links

    def _full(self, order: dict[str, Any]) -> dict[str, Any]:
        return {**copy.deepcopy(order), "links": self._links(order)}

    def _minimal(self, order: dict[str, Any]) -> dict[str, Any]:
        return {"id": order["id"], "status": order["status"], "links": self._links(order)}

    # ---- answers --------------------------------------------------------------------------------
    @staticmethod
    def _debug_id() -> str:
        return secrets.token_hex(7)

    def _json(self, status: int, body: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
        return Response(status, orjson.dumps(body), [("Paypal-Debug-Id", self._debug_id()), *headers])

    def _error(self, error: PayPalError, headers: Iterable[tuple[str, str]] = ()) -> Response:
        debug_id = self._debug_id()
        body: dict[str, Any] = {"name": error.name, "message": error.message, "debug_id": debug_id}
        if error.details:
            body["details"] = error.details
        body["links"] = [
            {
                "href": f"https://developer.paypal.com/docs/api/overview/#error-{error.name.lower()}",
                "rel": "information_link",
                "method": "GET",
            }
        ]
        return Response(error.status, orjson.dumps(body), [("Paypal-Debug-Id", debug_id), *headers])
