"""A stateful, protocol-faithful Stripe v1 emulator on loopback.

What it implements, as Stripe does (PROVIDERS.md §1; shapes checked against Stripe's OpenAPI spec by
`esm_dagster_tests/sandbox/test_stripe_contract.py`):

- `GET /v1/customers`, `/v1/charges`, `/v1/events`, `/v1/payment_intents`, `/v1/refunds` (lists),
  `GET /v1/customers/search`, `GET /v1/<resource>/{id}` for each, `POST /v1/customers` (create),
  `POST /v1/customers/{id}` (update), `DELETE /v1/customers/{id}`.
- Auth by `Authorization: Bearer <key>` or Basic with the key as user; a bad key is answered 401 with
  the key masked as Stripe masks it (prefix, stars, last four), never echoed.
- Lists newest first (created desc, then id desc: a total, stable order), `limit` 1..100 (default
  10), `starting_after` / `ending_before`, `created` as an integer or `created[gt|gte|lt|lte]`,
  `has_more`, `url`; unknown parameters and malformed values are 400s that name the `param`.
- Form bodies with bracket nesting; `Idempotency-Key` on POST replays the first response (status and
  body) and answers a reuse with other parameters with 400 `idempotency_error`.
- `Stripe-Version` echoed (the spec's version when none is sent), `Request-Id: req_...` on every
  answer; writes append `customer.created` / `customer.updated` / `customer.deleted` events.
- A Python API for tests and the demo, `add_customer` / `update_customer` / `delete_customer` /
  `add_charge`, going through the same validation and appending the same events as the HTTP API
  (`charge.succeeded` / `charge.failed` / `charge.pending` for charges), so the events feed a
  real-time sensor polls moves exactly as it would on Stripe.
- `faults` (see `esm_dagster.sandbox._http.FaultSwitch`): 5xx with Stripe's `api_error` body,
  429 with Stripe's rate-limit body, `Stripe-Should-Retry` and `Retry-After`, delays, disconnects,
  responses lost after a write committed, pages that repeat the previous page's last objects,
  objects changed and created between two pages (`mutations` lists what changed), and keys that
  expire after N requests (401 `api_key_expired`, Stripe's body).

- Webhooks (`send_webhooks(url, secret)`): every new event is POSTed, as the events feed has it,
  to a loopback endpoint with `Stripe-Signature: t=,v1=` under the endpoint's `whsec_` secret,
  from a background thread, retried on a non-2xx (`esm_dagster.sandbox.webhook_sender`).

Not implemented: other resources, `expand` (accepted and ignored), Connect headers, refund
objects for `refund_charge` (the charge and its `charge.refunded` event only), search's full query
language (`field:'value'` clauses joined by AND only).
"""

from __future__ import annotations

import base64
import binascii
import copy
import hmac
import math
import random
import re
import secrets
import threading
import time
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import unquote

from esm_dagster.sandbox._http import Fault, Request, Response
from esm_dagster.sandbox.jsonshape import RawJSON, encode
from esm_dagster.sandbox.stripe import data as stripe_data
from esm_dagster.sandbox.stripe.data import (
    DEFAULT_API_VERSION,
    DEFAULT_END,
    DEFAULT_START,
    EventRow,
)
from esm_dagster.sandbox.stripe.forms import FormError, decode
from esm_dagster.sandbox.webhook_sender import PushingEmulator, RetryPolicy, WebhookSender
from esm_dagster.sandbox.webhook_signers import stripe_signature_header
from esm_dagster.security.redact import redact_text
from esm_dagster.security.secret import Secret

MAX_LIMIT = 100
# Stripe retries for days; the emulator keeps the shape (a few tries, backing off) in seconds.
STRIPE_RETRY = RetryPolicy(attempts=3, first_wait=0.5, max_wait=5.0)
DEFAULT_LIMIT = 10
_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z_]+)?$")
_KEY_PREFIX_RE = re.compile(r"^((?:sk|rk|pk)_(?:test|live)_)")
_SEARCH_CLAUSE_RE = re.compile(r"""^(email|name|phone|metadata\['([^']+)'\]):'((?:[^'\\]|\\.)*)'$""")
_RANGE_OPS = ("gt", "gte", "lt", "lte")
_SORTED_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # in code point order
_UNRECOGNIZED = (
    "Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
    "or we can help at https://support.stripe.com/."
)
_NO_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization header, "
    "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
    "https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/."
)
_RATE_LIMITED = (
    "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests."
)


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


LIST_PARAMETERS: dict[str, frozenset[str]] = {  # the query parameters the spec declares per list operation
    "customers": _names("created email ending_before expand limit starting_after test_clock"),
    "charges": _names(
        "created customer ending_before expand limit payment_intent starting_after transfer_group"
    ),
    "events": _names("created delivery_success ending_before expand limit starting_after type types"),
    "payment_intents": _names("created customer ending_before expand limit starting_after"),
    "refunds": _names("charge created ending_before expand limit payment_intent starting_after"),
}
_OBJECT_NAMES = {
    "customers": "customer",
    "charges": "charge",
    "events": "event",
    "payment_intents": "payment_intent",
    "refunds": "refund",
}
CUSTOMER_PARAMETERS = _names(
    "address balance description email expand invoice_prefix metadata name phone preferred_locales "
    "shipping tax_exempt"
)
_ADDRESS_FIELDS = ("city", "country", "line1", "line2", "postal_code", "state")


def _form_value(value: Any) -> Any:
    """A Python value as the form decoder would hand it over: strings, hashes, arrays; None -> ""."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _form_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_form_value(v) for v in value]
    return value


def mask_key(key: str) -> str:
    """The key as Stripe shows it in errors: known prefix, stars, last four characters."""
    match = _KEY_PREFIX_RE.match(key)
    prefix = match.group(1) if match else ""
    rest = key[len(prefix) :]
    if len(rest) <= 8:  # too short to show any of it safely
        return prefix + "*" * len(rest)
    return prefix + "*" * (len(rest) - 4) + rest[-4:]


class StripeError(Exception):
    """An error answer: raised inside handlers, rendered as Stripe's `{"error": {...}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        request_log: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = list(headers)
        self.request_log = request_log  # whether the body links a dashboard log (not for dead keys)


def _missing(kind: str, object_id: str, param: str) -> StripeError:
    return StripeError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


class Mutation(NamedTuple):
    """What one `mutate` fault did between two pages of `resource`."""

    resource: str
    changed: str  # id of the already-served object that changed (the page's cursor)
    inserted: str  # id of the object created before the cursor


class _StoredRow(NamedTuple):
    """A row for an object created through the API: the object itself lives in `overrides`."""

    created: int
    id: str


class _Collection:
    """One resource's records, oldest first by (created, id), with the state changes of the API."""

    def __init__(
        self,
        name: str,
        rows: list[Any],
        build: Callable[[Any], dict[str, Any]],
        render: Callable[[Any], RawJSON],
    ) -> None:
        self.name = name
        self.url = f"/v1/{name}"
        self.rows = rows
        self.by_id: dict[str, Any] = {row.id: row for row in rows}
        self.build = build
        self.render = render
        self.overrides: dict[str, dict[str, Any]] = {}  # current state of created or updated objects
        self.deleted: dict[str, int] = {}  # id -> created, so a deleted id still works as a cursor

    def materialize(self, row: Any) -> dict[str, Any]:
        override = self.overrides.get(row.id)
        return override if override is not None else self.build(row)

    def text(self, row: Any) -> str:
        """The object's JSON text (the fast path of list pages)."""
        override = self.overrides.get(row.id)
        return encode(override) if override is not None else self.render(row)

    def value(self, row: Any, attribute: str) -> Any:
        override = self.overrides.get(row.id)
        if override is not None:
            return override.get(attribute)
        return getattr(row, attribute, None)

    def cursor_key(self, object_id: str) -> tuple[int, str] | None:
        row = self.by_id.get(object_id)
        if row is not None:
            return (row.created, row.id)
        created = self.deleted.get(object_id)
        return None if created is None else (created, object_id)

    def insert(self, row: Any) -> None:
        insort(self.rows, row)
        self.by_id[row.id] = row

    def remove(self, object_id: str) -> None:
        row = self.by_id.pop(object_id)
        index = bisect_left(self.rows, (row.created, row.id))
        assert self.rows[index].id == object_id
        del self.rows[index]
        self.deleted[object_id] = row.created
        self.overrides.pop(object_id, None)

    def page(
        self,
        *,
        gte: int | None,
        lt: int | None,
        after: tuple[int, str] | None,
        before: tuple[int, str] | None,
        limit: int,
        predicate: Callable[[Any], bool] | None,
        repeat: int = 0,
    ) -> tuple[list[Any], bool]:
        """Up to `limit` rows newest first, and whether more match beyond them.

        `repeat` (a `duplicate` fault) starts a page after `after` that many rows early: it begins
        with the cursor row and the rows just newer, the end of the page before.
        """
        rows = self.rows
        lo = 0 if gte is None else bisect_left(rows, (gte, ""))
        hi = len(rows) if lt is None else bisect_left(rows, (lt, ""))
        out: list[Any] = []
        if before is None:
            if after is not None:
                position = bisect_left(rows, after)
                if repeat and position < len(rows) and rows[position].id == after[1]:
                    position += repeat  # the cursor row itself, then repeat - 1 newer ones
                hi = min(hi, position)
            if predicate is None:
                start = max(lo, hi - limit)
                out = rows[start:hi]
                out.reverse()
                return out, start > lo
            i = hi - 1
            while i >= lo and len(out) < limit:
                if predicate(rows[i]):
                    out.append(rows[i])
                i -= 1
            return out, any(predicate(rows[j]) for j in range(i, lo - 1, -1))
        # rows are longer tuples than the (created, id) probe, so a row sorts after a probe with its
        # own key: bisect_left finds the cursor row itself (or where it would be, once deleted)
        position = bisect_left(rows, before)
        if position < len(rows) and rows[position].id == before[1]:
            position += 1
        lo = max(lo, position)
        if predicate is None:
            stop = min(hi, lo + limit)
            out = rows[lo:stop]
            out.reverse()
            return out, stop < hi
        i = lo
        while i < hi and len(out) < limit:
            if predicate(rows[i]):
                out.append(rows[i])
            i += 1
        more = any(predicate(rows[j]) for j in range(i, hi))
        out.reverse()
        return out, more


@dataclass(slots=True)
class _Context:
    request_id: str
    api_version: str
    api_key: str = ""
    idempotency_key: str | None = None
    extra_headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class _StoredResponse:
    method: str
    path: str
    params: dict[str, Any]
    status: int
    body: RawJSON
    request_id: str


class StripeEmulator(PushingEmulator):
    """`StripeEmulator(api_keys=["sk_test_..."], customers=200, charges=1000, seed=7)`, then `.start()`.

    `start`/`end` bound the seeded `created` values (unix seconds, default 2026-09-01..2026-12-01 UTC);
    `clock` gives `created` of objects made through the API (default: the wall clock).
    """

    def __init__(
        self,
        api_keys: Iterable[str | Secret],
        *,
        customers: int = 200,
        charges: int = 1000,
        seed: int = 7,
        start: int = DEFAULT_START,
        end: int = DEFAULT_END,
        api_version: str = DEFAULT_API_VERSION,
        clock: Callable[[], float] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        keys = [k.reveal() if isinstance(k, Secret) else str(k) for k in api_keys]
        if not keys or not all(keys):
            raise ValueError("the emulator needs at least one non-empty API key")
        self._keys = tuple(keys)
        self.api_version = api_version
        self.seed = seed
        self._clock = clock or time.time
        dataset = stripe_data.generate(customers=customers, charges=charges, seed=seed, start=start, end=end)
        self._lock = threading.RLock()
        self.customers = _Collection(
            "customers", dataset.customers, stripe_data.customer_object, stripe_data.customer_json
        )
        self.charges = _Collection(
            "charges", dataset.charges, stripe_data.charge_object, stripe_data.charge_json
        )
        self.events = _Collection("events", dataset.events, self._build_event, self._render_event)
        self.payment_intents = _Collection(
            "payment_intents",
            dataset.payment_intents,
            stripe_data.payment_intent_object,
            stripe_data.payment_intent_json,
        )
        self.refunds = _Collection(
            "refunds", dataset.refunds, stripe_data.refund_object, stripe_data.refund_json
        )
        self._collections = {
            c.name: c for c in (self.customers, self.charges, self.events, self.payment_intents, self.refunds)
        }
        self._new_ids = random.Random(f"stripe-emulator:{seed}:new-objects")
        self._sequence = 0
        self._idempotency: dict[tuple[str, str], _StoredResponse] = {}
        self.mutations: list[Mutation] = []  # what the `mutate` faults changed, in order
        self._webhook_secret: Secret | None = None

    # ---- builders -----------------------------------------------------------------------------
    def _build_event(self, row: EventRow) -> dict[str, Any]:
        return stripe_data.event_object(row, self.api_version)

    def _render_event(self, row: EventRow) -> RawJSON:
        return stripe_data.event_json(row, self.api_version)

    # ---- introspection for tests and the demo ---------------------------------------------------
    def object_ids(self, resource: str) -> list[str]:
        """Ids of the current objects of a resource (`customers`, `refunds`, ...), newest first."""
        with self._lock:
            return [row.id for row in reversed(self._collections[resource].rows)]

    def get_object(self, resource: str, object_id: str) -> dict[str, Any] | None:
        with self._lock:
            collection = self._collections[resource]
            row = collection.by_id.get(object_id)
            return None if row is None else copy.deepcopy(collection.materialize(row))

    def count(self, resource: str) -> int:
        with self._lock:
            return len(self._collections[resource].rows)

    # ---- Python API: state changes without HTTP, with the events Stripe would write -------------
    def add_customer(self, *, created: int | None = None, **fields: Any) -> dict[str, Any]:
        """A new customer, as `POST /v1/customers` would make it, plus its `customer.created` event.

        `fields` are the POST parameters as Python values (`email="a@b.c"`, `metadata={"k": "v"}`,
        `address={"city": "Phuket"}`; None unsets); `created` defaults to the emulator's clock.
        """
        with self._lock:
            _, obj = self._python_write(None, fields, created)
        return obj

    def update_customer(self, customer_id: str, **fields: Any) -> dict[str, Any]:
        """`POST /v1/customers/{id}` from Python; a real change appends `customer.updated`."""
        with self._lock:
            if customer_id not in self.customers.by_id:
                raise KeyError(f"no customer {customer_id!r}")
            _, obj = self._python_write(customer_id, fields, None)
        return obj

    def delete_customer(self, customer_id: str) -> None:
        """`DELETE /v1/customers/{id}` from Python; appends `customer.deleted`."""
        with self._lock:
            if customer_id not in self.customers.by_id:
                raise KeyError(f"no customer {customer_id!r}")
            self._delete_customer(customer_id, self._python_context())

    def add_charge(
        self,
        *,
        amount: int,
        currency: str = "thb",
        customer: str | None = None,
        status: str = "succeeded",
        description: str | None = None,
        metadata: dict[str, str] | None = None,
        created: int | None = None,
    ) -> dict[str, Any]:
        """A new card charge in Stripe's shape, its PaymentIntent, and its `charge.<status>` event.

        `amount` is in the currency's minor unit (satang, cents; yen have none), as Stripe takes it.
        Billing details are copied from `customer` when one is given.
        """
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
            raise ValueError("amount must be a positive integer in the currency's minor unit")
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise ValueError("currency must be a lowercase ISO 4217 code")
        if status not in ("succeeded", "failed", "pending"):
            raise ValueError("status must be succeeded, failed or pending")
        with self._lock:
            email = name = phone = None
            if customer is not None:
                row = self.customers.by_id.get(customer)
                if row is None:
                    raise KeyError(f"no customer {customer!r}")
                owner = self.customers.materialize(row)
                email, name, phone = owner.get("email"), owner.get("name"), owner.get("phone")
            when = int(self._clock()) if created is None else int(created)
            charge_id = self._new_id("ch_", 24)
            order_no = len(self.charges.rows) + len(self.charges.deleted) + 1
            template = stripe_data.ChargeRow(
                when, charge_id, customer, currency, amount, status, email, name, phone, 0, 0, 0, order_no
            )
            obj = stripe_data.charge_object(template)
            obj["billing_details"]["address"] = dict.fromkeys(_ADDRESS_FIELDS)
            obj["description"] = description
            obj["metadata"] = dict(metadata or {})
            self.charges.overrides[charge_id] = obj
            self.charges.insert(_StoredRow(when, charge_id))
            intent = stripe_data.PaymentIntentRow(when, template.payment_intent, template)
            self.payment_intents.overrides[intent.id] = stripe_data.payment_intent_object(intent)
            self.payment_intents.overrides[intent.id]["metadata"] = dict(metadata or {})
            self.payment_intents.insert(_StoredRow(when, intent.id))
            self._event(f"charge.{status}", obj, None, self._python_context(), when)
            return copy.deepcopy(obj)

    def refund_charge(self, charge_id: str) -> dict[str, Any]:
        """Refund a succeeded charge in full: the charge as it now is, and its `charge.refunded`."""
        with self._lock:
            row = self.charges.by_id.get(charge_id)
            if row is None:
                raise KeyError(f"no charge {charge_id!r}")
            current = self.charges.materialize(row)
            if current.get("status") != "succeeded" or current.get("refunded"):
                raise ValueError(f"charge {charge_id!r} is not a succeeded, unrefunded charge")
            obj = copy.deepcopy(current)
            obj.update(amount_refunded=obj["amount"], refunded=True)
            previous = {k: current.get(k) for k in ("amount_refunded", "refunded")}
            self.charges.overrides[charge_id] = obj
            self._event("charge.refunded", obj, previous, self._python_context(), int(self._clock()))
            return copy.deepcopy(obj)

    # ---- webhooks -------------------------------------------------------------------------------
    def send_webhooks(
        self, url: str, secret: str | Secret, *, retry: RetryPolicy | None = None
    ) -> WebhookSender:
        """POST every event created from now on to `url` (loopback), signed with the endpoint's
        `whsec_` secret. Stripe retries an endpoint that does not answer 2xx with exponential
        backoff for up to three days in live mode, and a few times over hours in test mode (Stripe's
        webhook docs; not in PROVIDERS.md): the emulator makes `retry.attempts` tries, seconds apart."""
        self._webhook_secret = secret if isinstance(secret, Secret) else Secret(secret)
        return self._open_sender(url, retry or STRIPE_RETRY)

    def _sign_webhook(self, body: bytes, attempt: int) -> dict[str, str]:
        assert self._webhook_secret is not None
        return {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Stripe-Signature": stripe_signature_header(body, self._webhook_secret, int(time.time())),
        }

    def _python_context(self) -> _Context:
        return _Context(request_id=self._request_id(), api_version=self.api_version)

    def _python_write(
        self, customer_id: str | None, fields: dict[str, Any], created: int | None
    ) -> tuple[int, dict[str, Any]]:
        params = {name: _form_value(value) for name, value in fields.items()}
        try:
            status, obj = self._write_customer(customer_id, params, self._python_context(), created=created)
        except StripeError as error:
            raise ValueError(error.message) from None
        return status, copy.deepcopy(obj)

    # ---- LoopbackEmulator hooks -----------------------------------------------------------------
    def redact_query(self, query: str) -> str:
        return redact_text(query, self._keys)

    def handle(self, request: Request) -> Response:
        ctx = _Context(request_id=self._request_id(), api_version=self.api_version)
        try:
            ctx.api_key = self._authenticate(request)
            version = request.header("stripe-version")
            if version is not None:
                if not _VERSION_RE.match(version):
                    raise StripeError(400, f"Invalid Stripe API version: {version}", param="Stripe-Version")
                ctx.api_version = version
            status, payload = self._route(request, ctx)
            return self._json(ctx, status, payload)
        except StripeError as error:
            return self._error(ctx, error)

    def render_fault(self, request: Request, fault: Fault) -> Response:
        ctx = _Context(request_id=self._request_id(), api_version=self._version_of(request))
        if fault.kind == "rate_limit":
            headers = [("Stripe-Should-Retry", "true")]
            if fault.retry_after is not None:
                headers.append(("Retry-After", str(max(0, math.ceil(fault.retry_after)))))
            error = StripeError(429, _RATE_LIMITED, code="rate_limit", headers=headers)
            return self._error(ctx, error)
        status = fault.status
        should_retry = fault.should_retry
        if should_retry is None:
            should_retry = status >= 500 or status == 409
        headers = [("Stripe-Should-Retry", "true" if should_retry else "false")]
        if status >= 500:
            error = StripeError(
                status,
                "An unknown error occurred. Please try again later or contact support.",
                type="api_error",
                headers=headers,
            )
        elif status == 409:
            error = StripeError(
                409,
                "This object cannot be accessed right now because another API request or Stripe process "
                "is currently accessing it.",
                code="lock_timeout",
                headers=headers,
            )
        else:
            error = StripeError(status, f"Injected client error {status}.", headers=headers)
        return self._error(ctx, error)

    def internal_error(self, request: Request) -> Response:
        ctx = _Context(request_id=self._request_id(), api_version=self._version_of(request))
        return self._error(ctx, StripeError(500, "An unknown error occurred.", type="api_error"))

    # ---- plumbing -------------------------------------------------------------------------------
    @staticmethod
    def _request_id() -> str:
        return "req_" + "".join(secrets.choice(stripe_data.ALNUM) for _ in range(14))

    def _version_of(self, request: Request) -> str:
        version = request.header("stripe-version")
        return version if version and _VERSION_RE.match(version) else self.api_version

    def _headers(self, ctx: _Context) -> list[tuple[str, str]]:
        headers = [("Request-Id", ctx.request_id), ("Stripe-Version", ctx.api_version)]
        if ctx.idempotency_key is not None:
            headers.append(("Idempotency-Key", ctx.idempotency_key))
        return headers + ctx.extra_headers

    def _json(self, ctx: _Context, status: int, payload: Any) -> Response:
        body = encode(payload).encode("utf-8")
        return Response(status, body, self._headers(ctx))

    def _error_body(self, ctx: _Context, error: StripeError) -> dict[str, Any]:
        detail: dict[str, Any] = {}
        if error.code is not None:
            detail["code"] = error.code
            detail["doc_url"] = "https://stripe.com/docs/error-codes/" + error.code.replace("_", "-")
        detail["message"] = error.message
        if error.param is not None:
            detail["param"] = error.param
        if error.request_log:
            detail["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{ctx.request_id}"
        detail["type"] = error.type
        return {"error": detail}

    def _error(self, ctx: _Context, error: StripeError) -> Response:
        response = self._json(ctx, error.status, self._error_body(ctx, error))
        response.headers.extend(error.headers)
        return response

    def _authenticate(self, request: Request) -> str:
        header = (request.header("authorization") or "").strip()
        if not header:
            raise StripeError(401, _NO_KEY, headers=[("WWW-Authenticate", 'Basic realm="Stripe"')])
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        key: str | None = None
        if scheme.lower() == "bearer":
            key = credential
        elif scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credential, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = None
            if decoded is not None:
                key = decoded.partition(":")[0]  # the key is the user; Stripe ignores the password
        if not key:
            raise StripeError(
                401,
                "Invalid API Key provided: the Authorization header is malformed",
                headers=[("WWW-Authenticate", 'Basic realm="Stripe"')],
            )
        encoded = key.encode("utf-8")
        matched = False
        for accepted in self._keys:  # compare against every key: no early exit
            matched |= hmac.compare_digest(encoded, accepted.encode("utf-8"))
        if not matched:
            raise StripeError(
                401,
                f"Invalid API Key provided: {mask_key(key)}",
                headers=[("WWW-Authenticate", 'Basic realm="Stripe"')],
            )
        if self.faults.credential_expired(key):  # the body Stripe sends for a rolled or expired key
            raise StripeError(
                401,
                f"Expired API Key provided: {mask_key(key)}",
                code="api_key_expired",
                headers=[("WWW-Authenticate", 'Basic realm="Stripe"')],
                request_log=False,
            )
        return key

    def _route(self, request: Request, ctx: _Context) -> tuple[int, Any]:
        method = request.method
        parts = request.path.split("/")
        if len(parts) < 3 or parts[0] != "" or parts[1] != "v1":
            raise StripeError(404, _UNRECOGNIZED.format(method=method, path=request.path))
        resource = parts[2]
        rest = [unquote(p) for p in parts[3:]]
        if resource in self._collections and (rest == [] or (len(rest) == 1 and rest[0])):
            if method == "GET":
                if not rest:
                    return 200, self._list(resource, request.query)
                if resource == "customers" and rest[0] == "search":
                    return 200, self._search(request.query)
                return 200, self._retrieve(resource, rest[0], request.query)
            if resource == "customers" and method == "POST":
                return self._idempotent(request, ctx, rest[0] if rest else None)
            if resource == "customers" and method == "DELETE" and rest:
                with self._lock:
                    return 200, self._delete_customer(rest[0], ctx)
        raise StripeError(404, _UNRECOGNIZED.format(method=method, path=request.path))

    # ---- reads ----------------------------------------------------------------------------------
    @staticmethod
    def _parse(text: str) -> dict[str, Any]:
        try:
            return decode(text)
        except FormError as error:
            raise StripeError(400, str(error), param=error.param) from None

    @staticmethod
    def _integer(value: Any, param: str) -> int:
        if isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value.strip()):
            return int(value)
        raise StripeError(400, f"Invalid integer: {value}", param=param)

    @staticmethod
    def _string(value: Any, param: str) -> str:
        if not isinstance(value, str):
            raise StripeError(400, f"Invalid string: {value!r}", param=param)
        return value

    def _created_bounds(self, created: Any) -> tuple[int | None, int | None]:
        """`created` -> [gte, lt) bounds."""
        if isinstance(created, str):
            exact = self._integer(created, "created")
            return exact, exact + 1
        if not isinstance(created, dict):
            raise StripeError(400, "Invalid created: must be an integer or a hash", param="created")
        gte: int | None = None
        lt: int | None = None
        for op, raw in created.items():
            if op not in _RANGE_OPS:
                raise StripeError(400, f"Received unknown parameter: created[{op}]", param=f"created[{op}]")
            value = self._integer(raw, f"created[{op}]")
            if op in ("gt", "gte"):
                low = value + 1 if op == "gt" else value
                gte = low if gte is None else max(gte, low)
            else:
                high = value + 1 if op == "lte" else value
                lt = high if lt is None else min(lt, high)
        return gte, lt

    def _list(self, resource: str, query: str) -> RawJSON:
        params = self._parse(query)
        allowed = LIST_PARAMETERS[resource]
        for name in params:
            if name not in allowed:
                raise StripeError(400, f"Received unknown parameter: {name}", param=name)
        limit = DEFAULT_LIMIT
        if "limit" in params:
            limit = self._integer(params["limit"], "limit")
            if not 1 <= limit <= MAX_LIMIT:
                raise StripeError(400, f"Invalid limit: must be between 1 and {MAX_LIMIT}", param="limit")
        gte, lt = self._created_bounds(params["created"]) if "created" in params else (None, None)
        if "starting_after" in params and "ending_before" in params:
            raise StripeError(
                400,
                "You may only specify one of these parameters: ending_before, starting_after.",
                param="ending_before",
            )
        predicate = self._predicate(resource, params)
        collection = self._collections[resource]
        with self._lock:
            after = before = None
            repeat = 0
            for name in ("starting_after", "ending_before"):
                if name in params:
                    cursor = self._string(params[name], name)
                    key = collection.cursor_key(cursor)
                    if key is None:
                        raise _missing(_OBJECT_NAMES[resource], cursor, name)
                    if name == "starting_after":
                        after = key
                        repeat = self._page_faults(resource, cursor)
                    else:
                        before = key
            rows, has_more = collection.page(
                gte=gte, lt=lt, after=after, before=before, limit=limit, predicate=predicate, repeat=repeat
            )
            texts = [collection.text(row) for row in rows]
        return RawJSON(  # == json.dumps({"object": "list", "data": [...], "has_more": ..., "url": ...})
            '{"object": "list", "data": ['
            + ", ".join(texts)
            + f'], "has_more": {"true" if has_more else "false"}, "url": {encode(collection.url)}}}'
        )

    def _page_faults(self, resource: str, cursor: str) -> int:
        """Apply the faults about a page that continues after `cursor`; how many objects to repeat."""
        path = f"/v1/{resource}"
        mutate = self.faults.take_handler_fault("mutate", path)
        if mutate is not None and resource in ("customers", "charges"):
            self._mutate_between_pages(resource, cursor, mutate.seconds)
        duplicate = self.faults.take_handler_fault("duplicate", path)
        return 0 if duplicate is None else duplicate.items

    def _mutate_between_pages(self, resource: str, cursor: str, backdate: float) -> None:
        """The served object `cursor` changes (with its event), and a new object appears before it."""
        ctx = self._python_context()
        created = int(self._clock() - backdate)
        if resource == "customers":
            if cursor in self.customers.by_id:
                self._write_customer(cursor, {"metadata": {"esm_fault": "mutated between pages"}}, ctx)
            _, made = self._write_customer(
                None, {"email": "late.arrival@example.com", "name": "Late Arrival"}, ctx, created=created
            )
        else:
            row = self.charges.by_id.get(cursor)
            if row is not None:
                current = self.charges.materialize(row)
                obj = copy.deepcopy(current)
                obj["amount_refunded"] = max(1, int(obj["amount"]) // 2)
                obj["metadata"] = {**(obj.get("metadata") or {}), "esm_fault": "mutated between pages"}
                previous = {k: current.get(k) for k in ("amount_refunded", "metadata")}
                self.charges.overrides[cursor] = obj
                self._event("charge.refunded", obj, previous, ctx, int(self._clock()))
            made = self.add_charge(amount=4200, currency="thb", description="late arrival", created=created)
        self.mutations.append(Mutation(resource, cursor, made["id"]))

    def _predicate(self, resource: str, params: dict[str, Any]) -> Callable[[Any], bool] | None:
        checks: list[tuple[str, str]] = []
        for name in ("email", "customer", "charge", "payment_intent", "transfer_group", "test_clock"):
            if name in params:
                checks.append((name, self._string(params[name], name)))
        types: list[str] = []
        if "type" in params:
            types.append(self._string(params["type"], "type"))
        if "types" in params:
            if not isinstance(params["types"], list) or "type" in params:
                raise StripeError(
                    400, "Invalid types: must be an array, and not given with type", param="types"
                )
            types.extend(self._string(t, "types") for t in params["types"])
        if not checks and not types:
            return None
        collection = self._collections[resource]
        exact = {t for t in types if not t.endswith("*")}
        prefixes = tuple(t[:-1] for t in types if t.endswith("*"))

        def predicate(row: Any) -> bool:
            for attribute, expected in checks:
                if collection.value(row, attribute) != expected:
                    return False
            if types:
                return row.type in exact or (bool(prefixes) and row.type.startswith(prefixes))
            return True

        return predicate

    def _retrieve(self, resource: str, object_id: str, query: str) -> dict[str, Any]:
        params = self._parse(query)
        for name in params:
            if name != "expand":
                raise StripeError(400, f"Received unknown parameter: {name}", param=name)
        collection = self._collections[resource]
        with self._lock:
            row = collection.by_id.get(object_id)
            if row is not None:
                return collection.materialize(row)
            if object_id in collection.deleted:  # Stripe keeps answering for deleted customers
                return {"deleted": True, "id": object_id, "object": _OBJECT_NAMES[resource]}
        raise _missing(_OBJECT_NAMES[resource], object_id, "id")

    def _search(self, query: str) -> dict[str, Any]:
        params = self._parse(query)
        for name in params:
            if name not in ("expand", "limit", "page", "query"):
                raise StripeError(400, f"Received unknown parameter: {name}", param=name)
        text = self._string(params.get("query", ""), "query").strip()
        if not text:
            raise StripeError(400, "Missing required param: query.", param="query")
        clauses: list[tuple[str, str]] = []
        for clause in re.split(r"\s+AND\s+", text):
            match = _SEARCH_CLAUSE_RE.match(clause.strip())
            if match is None:
                raise StripeError(400, f"Invalid search query: {clause.strip()}", param="query")
            field_name = f"metadata.{match.group(2)}" if match.group(2) else match.group(1)
            clauses.append((field_name, re.sub(r"\\(.)", r"\1", match.group(3))))
        limit = self._integer(params.get("limit", str(DEFAULT_LIMIT)), "limit")
        if not 1 <= limit <= MAX_LIMIT:
            raise StripeError(400, f"Invalid limit: must be between 1 and {MAX_LIMIT}", param="limit")
        offset = 0
        if "page" in params:
            try:
                offset = int(base64.urlsafe_b64decode(self._string(params["page"], "page")).decode())
            except (ValueError, binascii.Error):
                raise StripeError(400, "Invalid page: must be a page token", param="page") from None
        with self._lock:
            matches = []
            for row in reversed(self.customers.rows):
                obj = self.customers.materialize(row)
                ok = True
                for field_name, expected in clauses:
                    if field_name.startswith("metadata."):
                        actual = (obj.get("metadata") or {}).get(field_name[9:])
                    else:
                        actual = obj.get(field_name)
                    if actual != expected:
                        ok = False
                        break
                if ok:
                    matches.append(obj)
        data = matches[offset : offset + limit]
        has_more = offset + limit < len(matches)
        next_page = base64.urlsafe_b64encode(str(offset + limit).encode()).decode() if has_more else None
        return {
            "object": "search_result",
            "data": data,
            "has_more": has_more,
            "next_page": next_page,
            "url": "/v1/customers/search",
        }

    # ---- writes ---------------------------------------------------------------------------------
    def _idempotent(self, request: Request, ctx: _Context, object_id: str | None) -> tuple[int, Any]:
        content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        if content_type == "application/json":
            raise StripeError(
                400,
                "Invalid request: v1 API requests must be application/x-www-form-urlencoded.",
            )
        params = self._parse(request.body.decode("utf-8", errors="replace"))
        key = request.header("idempotency-key")
        if key is None:
            with self._lock:
                return self._write_customer(object_id, params, ctx)
        if len(key) > 255:
            raise StripeError(
                400, "Idempotency keys can be at most 255 characters long.", param="Idempotency-Key"
            )
        ctx.idempotency_key = key
        with self._lock:
            stored = self._idempotency.get((ctx.api_key, key))
            if stored is not None:
                if (stored.method, stored.path, stored.params) != (request.method, request.path, params):
                    raise StripeError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters they were "
                        f"first used with. Try using a key other than '{key}' if you meant to execute a "
                        "different request.",
                        type="idempotency_error",
                    )
                ctx.extra_headers += [
                    ("Idempotent-Replayed", "true"),
                    ("Original-Request", stored.request_id),
                ]
                return stored.status, stored.body
            try:
                status, payload = self._write_customer(object_id, params, ctx)
            except StripeError as error:
                if error.status >= 500:  # execution had begun: Stripe stores and replays it
                    payload, status = self._error_body(ctx, error), error.status
                else:  # validation errors are not stored
                    raise
            body = RawJSON(encode(payload))  # replays send these exact bytes
            self._idempotency[(ctx.api_key, key)] = _StoredResponse(
                request.method, request.path, params, status, body, ctx.request_id
            )
            return status, body

    def _write_customer(
        self, object_id: str | None, params: dict[str, Any], ctx: _Context, *, created: int | None = None
    ) -> tuple[int, Any]:
        fields = self._customer_fields(params)
        now = int(self._clock())
        if object_id is None:
            now = now if created is None else int(created)
            new_id = self._new_id("cus_", 14)
            obj = copy.deepcopy(stripe_data.fixture_resources()["customer"])
            obj.update(
                address=None,
                balance=0,
                created=now,
                currency=None,
                default_source=None,
                delinquent=False,
                description=None,
                discount=None,
                email=None,
                id=new_id,
                invoice_prefix="".join(self._new_ids.choices(stripe_data.UPPER_ALNUM, k=8)),
                livemode=False,
                metadata={},
                name=None,
                next_invoice_sequence=1,
                phone=None,
                preferred_locales=[],
                shipping=None,
                tax_exempt="none",
                test_clock=None,
            )
            self._apply(obj, fields)
            self.customers.overrides[new_id] = obj
            self.customers.insert(_StoredRow(now, new_id))
            self._event("customer.created", obj, None, ctx, now)
            return 200, obj
        row = self.customers.by_id.get(object_id)
        if row is None:
            raise _missing("customer", object_id, "id")
        current = self.customers.materialize(row)
        obj = copy.deepcopy(current)  # copy on write: events keep their snapshots
        self._apply(obj, fields)
        previous = {k: current.get(k) for k in obj if obj.get(k) != current.get(k)}
        self.customers.overrides[object_id] = obj
        if previous:
            self._event("customer.updated", obj, previous, ctx, now)
        return 200, obj

    def _new_id(self, prefix: str, length: int) -> str:
        """Like Stripe's, new ids start with a sequence: same-second ties sort in creation order."""
        self._sequence += 1
        number, sequence = self._sequence, ""
        for _ in range(8):
            number, digit = divmod(number, 62)
            sequence = _SORTED_ALNUM[digit] + sequence
        return stripe_data.random_id(self._new_ids, prefix + sequence, length - 8)

    def _delete_customer(self, object_id: str, ctx: _Context) -> dict[str, Any]:
        row = self.customers.by_id.get(object_id)
        if row is None:
            raise _missing("customer", object_id, "id")
        snapshot = self.customers.materialize(row)
        self.customers.remove(object_id)
        self._event("customer.deleted", snapshot, None, ctx, int(self._clock()))
        return {"deleted": True, "id": object_id, "object": "customer"}

    def _event(
        self,
        event_type: str,
        obj: dict[str, Any],
        previous: dict[str, Any] | None,
        ctx: _Context,
        created: int,
    ) -> None:
        event_id = self._new_id("evt_", 24)
        row = EventRow(
            created, event_id, event_type, "snapshot", obj, previous, ctx.request_id, ctx.idempotency_key
        )
        self.events.insert(row)
        if self.webhooks is not None:  # queued only: the request that made the event never waits
            body = stripe_data.event_json(row, self.api_version).encode("utf-8")
            self._push(event_id, body, self._sign_webhook)

    def _customer_fields(self, params: dict[str, Any]) -> dict[str, Any]:
        """Validated changes; `None` unsets (Stripe's empty string), metadata merges per key."""
        out: dict[str, Any] = {}
        for name, value in params.items():
            if name not in CUSTOMER_PARAMETERS:
                raise StripeError(400, f"Received unknown parameter: {name}", param=name)
            if name == "expand":
                continue
            if name in ("email", "name", "phone", "description"):
                text = self._string(value, name)
                limit = {"email": 512, "name": 256, "phone": 20, "description": 350}[name]
                if len(text) > limit:
                    raise StripeError(400, f"Invalid {name}: must be at most {limit} characters", param=name)
                out[name] = text or None
            elif name == "balance":
                out[name] = self._integer(value, name)
            elif name == "invoice_prefix":
                text = self._string(value, name)
                if not re.fullmatch(r"[A-Z0-9]{3,12}", text):
                    raise StripeError(
                        400, "Invalid invoice_prefix: must be 3-12 uppercase letters or numbers", param=name
                    )
                out[name] = text
            elif name == "tax_exempt":
                text = self._string(value, name)
                if text not in ("none", "exempt", "reverse"):
                    raise StripeError(
                        400, "Invalid tax_exempt: must be one of none, exempt, or reverse", param=name
                    )
                out[name] = text
            elif name == "preferred_locales":
                if value == "":
                    out[name] = []
                elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                    out[name] = list(value)
                else:
                    raise StripeError(400, "Invalid array", param=name)
            elif name == "metadata":
                out[name] = self._metadata(value)
            elif name == "address":
                out[name] = self._address(value, name)
            elif name == "shipping":
                if value == "":
                    out[name] = None
                    continue
                if not isinstance(value, dict):
                    raise StripeError(400, "Invalid hash", param=name)
                for key in value:
                    if key not in ("address", "name", "phone"):
                        raise StripeError(
                            400, f"Received unknown parameter: shipping[{key}]", param=f"shipping[{key}]"
                        )
                if not value.get("name"):
                    raise StripeError(400, "Missing required param: shipping[name].", param="shipping[name]")
                out[name] = {
                    "address": self._address(value.get("address", {}), "shipping[address]")
                    or dict.fromkeys(_ADDRESS_FIELDS),
                    "name": self._string(value["name"], "shipping[name]"),
                    "phone": self._string(value.get("phone", ""), "shipping[phone]") or None,
                }
        return out

    def _metadata(self, value: Any) -> dict[str, str | None] | None:
        if value == "":
            return None  # clears all metadata
        if not isinstance(value, dict):
            raise StripeError(400, "Invalid hash", param="metadata")
        out: dict[str, str | None] = {}
        for key, item in value.items():
            param = f"metadata[{key}]"
            if not isinstance(item, str):
                raise StripeError(400, "Invalid string: nested metadata is not supported", param=param)
            if len(key) > 40:
                raise StripeError(
                    400, "Metadata keys can have a maximum length of 40 characters.", param=param
                )
            if len(item) > 500:
                raise StripeError(
                    400, "Metadata values can have a maximum length of 500 characters.", param=param
                )
            out[key] = item or None  # an empty value deletes the key
        return out

    def _address(self, value: Any, param: str) -> dict[str, Any] | None:
        if value == "":
            return None
        if not isinstance(value, dict):
            raise StripeError(400, "Invalid hash", param=param)
        for key in value:
            if key not in _ADDRESS_FIELDS:
                raise StripeError(400, f"Received unknown parameter: {param}[{key}]", param=f"{param}[{key}]")
        return {
            key: (self._string(value[key], f"{param}[{key}]") or None) if key in value else None
            for key in _ADDRESS_FIELDS
        }

    @staticmethod
    def _apply(obj: dict[str, Any], fields: dict[str, Any]) -> None:
        for name, value in fields.items():
            if name == "metadata":
                if value is None:
                    obj["metadata"] = {}
                    continue
                metadata = dict(obj.get("metadata") or {})
                for key, item in value.items():
                    if item is None:
                        metadata.pop(key, None)
                    else:
                        metadata[key] = item
                obj["metadata"] = metadata
            else:  # hashes other than metadata are replaced whole
                obj[name] = value
