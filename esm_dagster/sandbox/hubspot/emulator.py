"""A stateful HubSpot CRM v3 contacts emulator on loopback (PROVIDERS.md §4).

What it implements, as PROVIDERS.md describes HubSpot:

- `GET /crm/v3/objects/contacts?limit=(<=100, default 10)&after=&properties=&archived=` ->
  `{results:[{id,properties,createdAt,updatedAt,archived,archivedAt?}], paging:{next:{after,link}}}`,
  ids ascending; no `paging` on the last page. `propertiesWithHistory` and `associations` are
  accepted and ignored.
- `GET /crm/v3/objects/contacts/{id}` (also `?idProperty=email`), `DELETE /crm/v3/objects/contacts/{id}`
  (archives, 204).
- `POST /crm/v3/objects/contacts/search {filterGroups,sorts,properties,limit,after}` ->
  `{total,results,paging}`: groups OR'ed, filters AND'ed; EQ NEQ LT LTE GT GTE BETWEEN IN NOT_IN
  HAS_PROPERTY NOT_HAS_PROPERTY; datetime properties compare as epoch milliseconds (the value may be
  epoch-ms text or ISO-8601). Limits: 5 groups, 10 filters per group, 25 in total [D]; paging stops
  at 10,000 results [3P]: no `paging.next` beyond it, and an `after` at or past it is a 400. The page
  limit of 200 is [U]. Archived contacts are not searchable.
- `POST /crm/v3/objects/contacts/batch/upsert {inputs:[{idProperty:"email",id,properties,
  objectWriteTraceId?}]}`: at most 100 inputs, emails matched case-insensitively, duplicates in one
  batch refused; an upsert that changes nothing leaves `lastmodifieddate` alone, so repeating it is
  invisible. `POST .../batch/archive {inputs:[{id}]}` (204).
- OAuth (`oauth_clients={client_id: client_secret}`): the embedded `OAuthTokenServer` answers
  `POST /oauth/v1/token` (form `grant_type=refresh_token`, `client_id`, `client_secret`,
  `refresh_token`) with `{token_type,access_token,refresh_token,expires_in}`. The refresh token does
  not rotate (the same one comes back); access tokens live `token_lifetime` seconds (1800 is
  HubSpot's figure as PROVIDERS.md gives it, unconfirmed [U]). `emulator.oauth` issues, expires
  and revokes tokens and counts refreshes. Its error answers are RFC 6749's `{error,
  error_description}` (`invalid_grant` for a revoked refresh token); HubSpot's own error body at
  this endpoint is not documented in PROVIDERS.md, so it is not imitated.
- Auth: `Authorization: Bearer <private-app token or OAuth access token>`; a missing or unknown token is a 401 with
  HubSpot's error body, the token never echoed. The category names of the 401 bodies
  (`INVALID_AUTHENTICATION`, `EXPIRED_AUTHENTICATION`) are what HubSpot answers in practice; PROVIDERS.md
  does not list them, and the client does not depend on them.
- Every answer carries `X-HubSpot-RateLimit-Daily` / `-Daily-Remaining` [D]; a 429 carries the
  `-Secondly*`, `-Interval-Milliseconds`, `-Max`, `-Remaining` headers [3P] and the body
  `{status,message,errorType:"RATE_LIMIT",correlationId,policyName,requestId}` [3P]. `search_per_second`
  turns on the documented 4 searches per second per token [D].
- `faults`: 5xx and 429 in HubSpot's shapes, delays, disconnects, lost answers after a committed
  write, pages continuing an `after` that repeat the end of the page before (`duplicate`), contacts
  changed and created between two pages (`mutate`), and tokens that expire after N requests.

- Webhooks (`send_webhooks(url, client_secret)`): `contact.creation` and `contact.propertyChange`
  events for the changes of each API call (or Python call), one v3-signed batch per call, sent
  from a background thread and retried on a non-2xx (`esm_dagster.sandbox.hubspot.webhooks`).

Not implemented: other objects, associations, `query` full-text search, properties history,
date-versioned paths (`/crm/objects/2026-03/...`), the OAuth authorization-code step.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote

from esm_dagster.sandbox._http import Fault, Request, Response
from esm_dagster.sandbox.hubspot.data import (
    DEFAULT_END_MS,
    DEFAULT_START_MS,
    FIRST_ID,
    Contact,
    generate,
    iso_ms,
)
from esm_dagster.sandbox.hubspot.webhooks import HUBSPOT_RETRY, HubSpotWebhookConfig
from esm_dagster.sandbox.oauth import OAuthTokenServer
from esm_dagster.sandbox.webhook_sender import PushingEmulator, RetryPolicy, WebhookSender
from esm_dagster.security.redact import redact_text
from esm_dagster.security.secret import Secret

BASE = "/crm/v3/objects/contacts"
TOKEN_PATH = "/oauth/v1/token"  # noqa: S105 - a URL path
OAUTH_LIFETIME = 1800.0  # [U]
MAX_LIST_LIMIT = 100
MAX_SEARCH_LIMIT = 200  # [U]
DEFAULT_LIMIT = 10
SEARCH_CAP = 10_000  # [3P]
MAX_BATCH = 100
MAX_GROUPS, MAX_FILTERS_PER_GROUP, MAX_FILTERS = 5, 10, 25
DAILY_LIMIT = 250_000
# Returned when a request names no `properties` (HubSpot's default set for contacts).
DEFAULT_PROPERTIES = ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname")
KNOWN_PROPERTIES = frozenset(
    {*DEFAULT_PROPERTIES, "phone", "lifecyclestage", "company", "website", "city", "jobtitle"}
)
READ_ONLY = frozenset({"createdate", "lastmodifieddate", "hs_object_id"})
DATETIME_PROPERTIES = frozenset({"createdate", "lastmodifieddate"})
OPERATORS = frozenset(
    {"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY"}
)
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_NO_AUTH = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
    "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


class HubSpotError(Exception):
    """An error answer, rendered as HubSpot's `{status:"error",message,correlationId,category,...}`."""

    def __init__(
        self,
        status: int,
        message: str,
        category: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        sub_category: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.category = category
        self.errors = errors or []
        self.sub_category = sub_category


class Mutation(NamedTuple):
    """What one `mutate` fault did between two pages."""

    changed: str  # id of the already-served contact that changed
    inserted: str  # id of the contact created


def _ms_of(value: str) -> int | None:
    """A filter value or a datetime property as epoch ms (epoch-ms text or ISO-8601)."""
    text = value.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp() * 1000)


def _stamp(contact: Contact, name: str) -> int:
    """A datetime property as epoch ms, from the contact's own clock (no text parsing per search)."""
    return contact.updated_ms if name == "lastmodifieddate" else contact.created_ms


class HubSpotEmulator(PushingEmulator):
    """`HubSpotEmulator(tokens=["pat-na1-..."], contacts=120, seed=7).start()`.

    `clock` gives the emulator's time in seconds (default: the wall clock); writes stamp
    `lastmodifieddate` with it.
    """

    def __init__(
        self,
        tokens: Iterable[str | Secret],
        *,
        contacts: int = 120,
        archived: int = 5,
        seed: int = 7,
        start_ms: int = DEFAULT_START_MS,
        end_ms: int = DEFAULT_END_MS,
        clock: Callable[[], float] | None = None,
        search_per_second: float | None = None,
        search_cap: int = SEARCH_CAP,
        oauth_clients: Mapping[str, str] | None = None,
        token_lifetime: float = OAUTH_LIFETIME,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        keys = [t.reveal() if isinstance(t, Secret) else str(t) for t in tokens]
        if not all(keys) or not (keys or oauth_clients):
            raise ValueError("the emulator needs a non-empty private-app token or an OAuth client")
        self._tokens = tuple(keys)
        self._clock = clock or time.time
        self.oauth = OAuthTokenServer(
            clients=dict(oauth_clients or {}),
            access_lifetime=token_lifetime,
            rotate_refresh_tokens=False,
            echo_refresh_token=True,
            token_prefix="hsoa",  # noqa: S106 - a label in front of random tokens
            clock=self._clock,
        )
        self._lock = threading.RLock()
        self._contacts: dict[int, Contact] = {
            c.id: c
            for c in generate(contacts, seed=seed, start_ms=start_ms, end_ms=end_ms, archived=archived)
        }
        self._next_id = FIRST_ID + contacts
        self._daily_used = 0
        self._search_per_second = search_per_second
        self.search_cap = search_cap  # lowered by tests: the real one needs 10,000 matches to meet
        self._search_times: dict[str, list[float]] = {}
        self.mutations: list[Mutation] = []
        self._hooks: HubSpotWebhookConfig | None = None
        self._outgoing: list[dict[str, Any]] = []  # events of the call in progress
        self._event_id = 100

    # ---- webhooks -------------------------------------------------------------------------------
    def send_webhooks(
        self,
        url: str,
        client_secret: str | Secret,
        *,
        properties: Iterable[str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> WebhookSender:
        """The app's webhook subscriptions: contact creations and changes of `properties`, posted
        to `url` (loopback) and signed with the app's client secret."""
        secret = client_secret if isinstance(client_secret, Secret) else Secret(client_secret)
        config = HubSpotWebhookConfig(url, secret)
        if properties is not None:
            config = dataclasses.replace(config, properties=tuple(properties))
        with self._lock:
            self._hooks = config
            return self._open_sender(url, retry or HUBSPOT_RETRY)

    def _note(self, kind: str, contact: Contact, **extra: Any) -> None:
        if self._hooks is None or self.webhooks is None:
            return
        self._event_id += 1
        self._outgoing.append(self._hooks.event(self._event_id, kind, contact.id, self.now_ms(), **extra))

    def _flush(self) -> None:
        events, self._outgoing = self._outgoing, []
        if self._hooks is not None and events:
            for name, body in self._hooks.batches(events):
                self._push(name, body, self._hooks.sign)

    # ---- Python API for tests and the demo ------------------------------------------------------
    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def contacts(self, *, archived: bool = False) -> list[dict[str, Any]]:
        """Every contact (active, or archived) as the API renders it with all properties, by id."""
        with self._lock:
            return [
                self._render(c, list(KNOWN_PROPERTIES))
                for c in sorted(self._contacts.values(), key=lambda c: c.id)
                if c.archived == archived
            ]

    def get_contact(self, contact_id: str | int) -> dict[str, Any] | None:
        with self._lock:
            contact = self._contacts.get(int(contact_id))
            return None if contact is None else self._render(contact, list(KNOWN_PROPERTIES))

    def find_by_email(self, email: str) -> dict[str, Any] | None:
        with self._lock:
            contact = self._active_by_email(email)
            return None if contact is None else self._render(contact, list(KNOWN_PROPERTIES))

    def add_contact(self, *, modified_ms: int | None = None, **properties: str | None) -> dict[str, Any]:
        """A new contact; `modified_ms` backdates it (createdate and lastmodifieddate)."""
        with self._lock:
            contact = self._create(dict(properties), self.now_ms() if modified_ms is None else modified_ms)
            self._flush()
            return self._render(contact, list(KNOWN_PROPERTIES))

    def update_contact(self, contact_id: str | int, **properties: str | None) -> dict[str, Any]:
        with self._lock:
            contact = self._contacts[int(contact_id)]
            self._update(contact, dict(properties))
            self._flush()
            return self._render(contact, list(KNOWN_PROPERTIES))

    def archive_contact(self, contact_id: str | int) -> None:
        with self._lock:
            self._archive(int(contact_id))

    # ---- LoopbackEmulator hooks -----------------------------------------------------------------
    def redact_query(self, query: str) -> str:
        return redact_text(re.sub(r"(?i)(hapikey=)[^&]*", r"\1***", query), self._tokens)

    def handle(self, request: Request) -> Response:
        if request.path.rstrip("/") == TOKEN_PATH:
            return self.oauth.handle_token(request)
        try:
            token = self._authenticate(request)
            self._check_search_rate(request, token)
            try:
                status, payload = self._route(request)
            finally:
                with self._lock:
                    self._flush()  # the changes the call made, one batch, even if it then failed
        except _RateLimited:
            return self._rate_limited(None)
        except HubSpotError as error:
            return self._error(error)
        if status == 204:
            return Response(204, b"", self._headers(), content_type="application/json")
        return self._json(status, payload)

    def render_fault(self, request: Request, fault: Fault) -> Response:
        if fault.kind == "rate_limit":
            return self._rate_limited(fault.retry_after)
        status = fault.status
        if status >= 500:
            error = HubSpotError(status, "internal error", "INTERNAL_ERROR")
        else:
            error = HubSpotError(status, f"Injected client error {status}.", "VALIDATION_ERROR")
        return self._error(error)

    def internal_error(self, request: Request) -> Response:
        return self._error(HubSpotError(500, "internal error", "INTERNAL_ERROR"))

    # ---- plumbing -------------------------------------------------------------------------------
    def _headers(self) -> list[tuple[str, str]]:
        with self._lock:
            self._daily_used += 1
            remaining = max(0, DAILY_LIMIT - self._daily_used)
        return [
            ("X-HubSpot-RateLimit-Daily", str(DAILY_LIMIT)),
            ("X-HubSpot-RateLimit-Daily-Remaining", str(remaining)),
            ("X-HubSpot-Correlation-Id", str(uuid.uuid4())),
        ]

    def _json(self, status: int, payload: Any) -> Response:
        return Response(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), self._headers())

    def _error(self, error: HubSpotError) -> Response:
        body: dict[str, Any] = {
            "status": "error",
            "message": error.message,
            "correlationId": str(uuid.uuid4()),
            "category": error.category,
        }
        if error.sub_category:
            body["subCategory"] = error.sub_category
        if error.errors:
            body["errors"] = error.errors
        body["context"] = {}
        body["links"] = {}
        return self._json(error.status, body)

    def _rate_limited(self, retry_after: float | None) -> Response:
        secondly = retry_after is None or retry_after <= 1
        policy = "SECONDLY" if secondly else "TEN_SECONDLY_ROLLING"
        interval = 1000 if retry_after is None or secondly else round(retry_after * 1000)
        body = {
            "status": "error",
            "message": "You have reached your secondly limit."
            if secondly
            else "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": policy,
            "requestId": str(uuid.uuid4()),
        }
        response = self._json(429, body)
        response.headers += [
            ("X-HubSpot-RateLimit-Interval-Milliseconds", str(interval)),
            ("X-HubSpot-RateLimit-Max", "100"),
            ("X-HubSpot-RateLimit-Remaining", "0"),
            ("X-HubSpot-RateLimit-Secondly", "10"),
            ("X-HubSpot-RateLimit-Secondly-Remaining", "0"),
        ]
        return response

    def _authenticate(self, request: Request) -> str:
        header = (request.header("authorization") or "").strip()
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise HubSpotError(401, _NO_AUTH, "INVALID_AUTHENTICATION")
        encoded = token.encode("utf-8")
        matched = False
        for accepted in self._tokens:  # every token compared: no early exit
            matched |= hmac.compare_digest(encoded, accepted.encode("utf-8"))
        if not matched and self.oauth.authenticate(token) is None:
            raise HubSpotError(401, _NO_AUTH, "INVALID_AUTHENTICATION")
        if self.faults.credential_expired(token):
            raise HubSpotError(
                401,
                "The OAuth token used to make this call expired 0 second(s) ago.",
                "EXPIRED_AUTHENTICATION",
            )
        return token

    def _check_search_rate(self, request: Request, token: str) -> None:
        if self._search_per_second is None or not request.path.endswith("/search"):
            return
        now = time.monotonic()
        key = hmac.new(b"rate", token.encode(), "sha256").hexdigest()
        with self._lock:
            recent = [t for t in self._search_times.get(key, []) if now - t < 1.0]
            if len(recent) >= self._search_per_second:
                self._search_times[key] = recent
                raise _RateLimited()
            recent.append(now)
            self._search_times[key] = recent

    def _route(self, request: Request) -> tuple[int, Any]:
        path, method = request.path.rstrip("/"), request.method
        if not path.startswith(BASE):
            raise HubSpotError(404, f"Unable to route {method} request to {path}", "OBJECT_NOT_FOUND")
        rest = [unquote(p) for p in path[len(BASE) :].split("/") if p]
        query = {k: v for k, v in parse_qs(request.query, keep_blank_values=True).items()}
        with self._lock:
            if not rest and method == "GET":
                return 200, self._list(query)
            if rest == ["search"] and method == "POST":
                return 200, self._search(self._body(request))
            if rest == ["batch", "upsert"] and method == "POST":
                return 200, self._batch_upsert(self._body(request))
            if rest == ["batch", "archive"] and method == "POST":
                for item in self._inputs(self._body(request)):
                    self._archive(self._numeric_id(item.get("id")))
                return 204, None
            if len(rest) == 1 and method == "GET":
                return 200, self._read_one(rest[0], query)
            if len(rest) == 1 and method == "DELETE":
                self._archive(self._numeric_id(rest[0]))
                return 204, None
        raise HubSpotError(404, f"Unable to route {method} request to {path}", "OBJECT_NOT_FOUND")

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            raise HubSpotError(400, "Invalid input JSON on line 1", "VALIDATION_ERROR") from None
        if not isinstance(body, dict):
            raise HubSpotError(400, "Invalid input JSON: expected an object", "VALIDATION_ERROR")
        return body

    @staticmethod
    def _numeric_id(value: Any) -> int:
        if isinstance(value, str) and value.isdigit():
            return int(value)
        raise HubSpotError(404, "resource not found", "OBJECT_NOT_FOUND")

    # ---- rendering ------------------------------------------------------------------------------
    @staticmethod
    def _requested(values: list[str] | None) -> list[str]:
        if not values:
            return list(DEFAULT_PROPERTIES)
        names: list[str] = []
        for value in values:
            names.extend(n.strip() for n in value.split(",") if n.strip())
        return names

    @staticmethod
    def _render(contact: Contact, properties: list[str]) -> dict[str, Any]:
        props = {name: contact.properties.get(name) for name in properties if name in KNOWN_PROPERTIES}
        out: dict[str, Any] = {
            "id": str(contact.id),
            "properties": props,
            "createdAt": iso_ms(contact.created_ms),
            "updatedAt": iso_ms(contact.updated_ms),
            "archived": contact.archived,
        }
        if contact.archived_ms is not None:
            out["archivedAt"] = iso_ms(contact.archived_ms)
        return out

    # ---- reads ----------------------------------------------------------------------------------
    @staticmethod
    def _limit(raw: Any, maximum: int) -> int:
        if raw is None:
            return DEFAULT_LIMIT
        text = str(raw)
        if not re.fullmatch(r"\d{1,6}", text) or not 1 <= int(text) <= maximum:
            raise HubSpotError(
                400, f"limit must be between 1 and {maximum}, got {text!r}", "VALIDATION_ERROR"
            )
        return int(text)

    def _list(self, query: dict[str, list[str]]) -> dict[str, Any]:
        limit = self._limit(query.get("limit", [None])[-1], MAX_LIST_LIMIT)
        archived_text = query.get("archived", ["false"])[-1].lower()
        if archived_text not in ("true", "false"):
            raise HubSpotError(
                400, f"archived must be true or false, got {archived_text!r}", "VALIDATION_ERROR"
            )
        archived = archived_text == "true"
        properties = self._requested(query.get("properties"))
        rows = sorted((c for c in self._contacts.values() if c.archived == archived), key=lambda c: c.id)
        after_text = query.get("after", [None])[-1]
        if after_text is not None:
            if not after_text.isdigit():
                raise HubSpotError(
                    400, f"after must be a paging cursor, got {after_text!r}", "VALIDATION_ERROR"
                )
            lower = int(after_text)
            repeat = self._page_faults(rows, lower)
            position = next((i for i, c in enumerate(rows) if c.id >= lower), len(rows))
            rows = rows[max(0, position - repeat) :]
        page, more = rows[:limit], len(rows) > limit
        out: dict[str, Any] = {"results": [self._render(c, properties) for c in page]}
        if more:
            after = str(page[-1].id + 1)
            link = f"{self.url}{BASE}?after={after}"
            out["paging"] = {"next": {"after": after, "link": link}}
        return out

    def _page_faults(self, rows: list[Contact], lower: int) -> int:
        """Apply the faults about a page continuing after `lower`; how many contacts to repeat."""
        mutate = self.faults.take_handler_fault("mutate", BASE)
        if mutate is not None:
            served = [c for c in rows if c.id < lower]
            if served:
                self._mutate(served[-1], mutate.seconds)
        duplicate = self.faults.take_handler_fault("duplicate", BASE)
        return 0 if duplicate is None else duplicate.items

    def _mutate(self, served: Contact, backdate: float) -> None:
        self._update(served, {"lifecyclestage": "customer", "jobtitle": "mutated between pages"})
        made = self._create(
            {
                "email": f"late.arrival.{self._next_id}@example.com",
                "firstname": "Late",
                "lastname": "Arrival",
            },
            self.now_ms() - int(backdate * 1000),
        )
        self.mutations.append(Mutation(str(served.id), str(made.id)))

    def _read_one(self, ref: str, query: dict[str, list[str]]) -> dict[str, Any]:
        properties = self._requested(query.get("properties"))
        id_property = query.get("idProperty", [None])[-1]
        contact: Contact | None
        if id_property == "email":
            contact = self._active_by_email(ref)
        elif id_property in (None, "hs_object_id"):
            contact = self._contacts.get(int(ref)) if ref.isdigit() else None
        else:
            raise HubSpotError(
                400, f"Property {id_property!r} is not a unique identifier", "VALIDATION_ERROR"
            )
        archived = query.get("archived", ["false"])[-1].lower() == "true"
        if contact is None or contact.archived != archived:
            raise HubSpotError(404, "resource not found", "OBJECT_NOT_FOUND")
        return self._render(contact, properties)

    def _active_by_email(self, email: str) -> Contact | None:
        wanted = email.strip().lower()
        for contact in self._contacts.values():
            if not contact.archived and (contact.properties.get("email") or "").lower() == wanted:
                return contact
        return None

    # ---- search ---------------------------------------------------------------------------------
    def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - {"filterGroups", "sorts", "properties", "limit", "after", "query"}
        if unknown:
            raise HubSpotError(400, f"Unrecognized field(s): {sorted(unknown)}", "VALIDATION_ERROR")
        groups = body.get("filterGroups") or []
        if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
            raise HubSpotError(400, "filterGroups must be a list of objects", "VALIDATION_ERROR")
        total_filters = 0
        for group in groups:
            filters = group.get("filters") or []
            if len(filters) > MAX_FILTERS_PER_GROUP:
                raise HubSpotError(
                    400, f"Too many filters in a group (max {MAX_FILTERS_PER_GROUP})", "VALIDATION_ERROR"
                )
            total_filters += len(filters)
        if len(groups) > MAX_GROUPS or total_filters > MAX_FILTERS:
            raise HubSpotError(
                400,
                f"Too many filter groups or filters (max {MAX_GROUPS} groups, {MAX_FILTERS} filters)",
                "VALIDATION_ERROR",
            )
        limit = self._limit(body.get("limit"), MAX_SEARCH_LIMIT)
        offset = 0
        if body.get("after") not in (None, ""):
            text = str(body["after"])
            if not text.isdigit():
                raise HubSpotError(400, f"after must be a paging cursor, got {text!r}", "VALIDATION_ERROR")
            offset = int(text)
            if offset >= self.search_cap:
                raise HubSpotError(
                    400, f"Paging past {self.search_cap} search results is not supported", "VALIDATION_ERROR"
                )
        properties = body.get("properties") or list(DEFAULT_PROPERTIES)
        if not isinstance(properties, list) or not all(isinstance(p, str) for p in properties):
            raise HubSpotError(400, "properties must be a list of property names", "VALIDATION_ERROR")
        matches = [
            c
            for c in sorted(self._contacts.values(), key=lambda c: c.id)
            if not c.archived and (not groups or any(self._matches(c, g) for g in groups))
        ]
        for sort in reversed(body.get("sorts") or []):
            matches = self._sorted(matches, sort)
        if offset:
            repeat = self._search_faults(matches, offset)
            offset = max(0, offset - repeat)
        page = matches[offset : offset + limit]
        out: dict[str, Any] = {"total": len(matches), "results": [self._render(c, properties) for c in page]}
        next_offset = offset + len(page)
        if next_offset < len(matches) and next_offset < self.search_cap:
            out["paging"] = {"next": {"after": str(next_offset)}}
        return out

    def _search_faults(self, matches: list[Contact], offset: int) -> int:
        path = f"{BASE}/search"
        mutate = self.faults.take_handler_fault("mutate", path)
        if mutate is not None and 0 < offset <= len(matches):
            self._mutate(matches[offset - 1], mutate.seconds)
        duplicate = self.faults.take_handler_fault("duplicate", path)
        return 0 if duplicate is None else duplicate.items

    @staticmethod
    def _sorted(rows: list[Contact], sort: Any) -> list[Contact]:
        if isinstance(sort, str):
            sort = {
                "propertyName": sort.lstrip("-"),
                "direction": "DESCENDING" if sort.startswith("-") else "ASCENDING",
            }
        if not isinstance(sort, dict) or not isinstance(sort.get("propertyName"), str):
            raise HubSpotError(400, "sorts must name a propertyName", "VALIDATION_ERROR")
        name = sort["propertyName"]
        direction = str(sort.get("direction", "ASCENDING")).upper()
        if direction not in ("ASCENDING", "DESCENDING"):
            raise HubSpotError(400, f"Unknown sort direction {direction!r}", "VALIDATION_ERROR")

        def key(contact: Contact) -> tuple[int, Any]:
            value = contact.properties.get(name)
            if value is None:
                return (1, "")
            if name in DATETIME_PROPERTIES:
                return (0, _stamp(contact, name))
            return (0, value.lower())

        return sorted(rows, key=key, reverse=direction == "DESCENDING")

    def _matches(self, contact: Contact, group: dict[str, Any]) -> bool:
        return all(self._filter(contact, f) for f in group.get("filters") or [])

    @staticmethod
    def _filter(contact: Contact, spec: Any) -> bool:
        if not isinstance(spec, dict) or not isinstance(spec.get("propertyName"), str):
            raise HubSpotError(400, "a filter must name a propertyName", "VALIDATION_ERROR")
        name, operator = spec["propertyName"], str(spec.get("operator", ""))
        if operator not in OPERATORS:
            raise HubSpotError(400, f"Unknown filter operator {operator!r}", "VALIDATION_ERROR")
        actual = contact.properties.get(name)
        if operator == "HAS_PROPERTY":
            return actual not in (None, "")
        if operator == "NOT_HAS_PROPERTY":
            return actual in (None, "")
        if actual in (None, ""):
            return operator in ("NEQ", "NOT_IN")

        def convert(raw: Any) -> Any:
            text = str(raw)
            if name in DATETIME_PROPERTIES:
                ms = _ms_of(text)
                if ms is None:
                    raise HubSpotError(
                        400, f"{text!r} is not a valid value for the datetime {name}", "VALIDATION_ERROR"
                    )
                return ms
            return text.lower()

        value = _stamp(contact, name) if name in DATETIME_PROPERTIES else convert(actual)
        if operator in ("IN", "NOT_IN"):
            values = spec.get("values")
            if not isinstance(values, list):
                raise HubSpotError(400, f"{operator} needs values", "VALIDATION_ERROR")
            found = value in {convert(v) for v in values}
            return found if operator == "IN" else not found
        if "value" not in spec:
            raise HubSpotError(400, f"{operator} on {name} needs a value", "VALIDATION_ERROR")
        target = convert(spec["value"])
        if operator == "BETWEEN":
            if "highValue" not in spec:
                raise HubSpotError(400, "BETWEEN needs a highValue", "VALIDATION_ERROR")
            return bool(target <= value <= convert(spec["highValue"]))
        compare: dict[str, Callable[[Any, Any], bool]] = {
            "EQ": lambda a, b: a == b,
            "NEQ": lambda a, b: a != b,
            "LT": lambda a, b: a < b,
            "LTE": lambda a, b: a <= b,
            "GT": lambda a, b: a > b,
            "GTE": lambda a, b: a >= b,
        }
        return compare[operator](value, target)

    # ---- writes ---------------------------------------------------------------------------------
    @staticmethod
    def _inputs(body: dict[str, Any]) -> list[dict[str, Any]]:
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs or not all(isinstance(i, dict) for i in inputs):
            raise HubSpotError(400, "inputs must be a non-empty list of objects", "VALIDATION_ERROR")
        if len(inputs) > MAX_BATCH:
            raise HubSpotError(
                400,
                f"Batch input cannot have more than {MAX_BATCH} inputs, got {len(inputs)}",
                "VALIDATION_ERROR",
            )
        return inputs

    def _batch_upsert(self, body: dict[str, Any]) -> dict[str, Any]:
        started = iso_ms(self.now_ms())
        inputs = self._inputs(body)
        errors: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(inputs):
            if item.get("idProperty") != "email":
                errors.append(
                    self._input_error(index, "idProperty must be a unique property: email", "INVALID_ID")
                )
                continue
            email = item.get("id")
            if not isinstance(email, str) or not _EMAIL_RE.match(email.strip()):
                errors.append(
                    self._input_error(index, f"Email address {email!r} is invalid", "INVALID_EMAIL")
                )
                continue
            if email.lower() in seen:
                raise HubSpotError(400, f"Duplicate IDs found in batch input: [{email}]", "VALIDATION_ERROR")
            seen[email.lower()] = index
            properties = item.get("properties")
            if not isinstance(properties, dict):
                errors.append(self._input_error(index, "properties must be an object", "INVALID_PROPERTIES"))
                continue
            for name, value in properties.items():
                if name not in KNOWN_PROPERTIES:
                    errors.append(
                        self._input_error(
                            index, f'Property "{name}" does not exist', "PROPERTY_DOESNT_EXIST", name
                        )
                    )
                elif name in READ_ONLY:
                    errors.append(
                        self._input_error(index, f'"{name}" is a read only property', "READ_ONLY_VALUE", name)
                    )
                elif value is not None and not isinstance(value, (str, int, float, bool)):
                    errors.append(self._input_error(index, f"{name} must be a string", "INVALID_VALUE", name))
        if errors:
            raise HubSpotError(400, "Property values were not valid", "VALIDATION_ERROR", errors=errors)
        results = []
        for item in inputs:
            props = {k: self._text(v) for k, v in item["properties"].items()}
            contact = self._active_by_email(item["id"])
            new = contact is None
            if contact is None:
                contact = self._create({**props, "email": item["id"]}, self.now_ms())
            else:
                self._update(contact, props)
            rendered = self._render(
                contact, sorted(k for k, v in contact.properties.items() if v is not None)
            )
            rendered["new"] = new
            if item.get("objectWriteTraceId") is not None:
                rendered["objectWriteTraceId"] = str(item["objectWriteTraceId"])
            results.append(rendered)
        return {
            "status": "COMPLETE",
            "results": results,
            "startedAt": started,
            "completedAt": iso_ms(self.now_ms()),
        }

    @staticmethod
    def _text(value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    @staticmethod
    def _input_error(index: int, message: str, code: str, name: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"message": message, "code": code, "context": {"inputIndex": [str(index)]}}
        if name is not None:
            error["context"]["propertyName"] = [name]
        return error

    def _create(self, properties: dict[str, str | None], modified_ms: int) -> Contact:
        contact_id = self._next_id
        self._next_id += 1
        props: dict[str, str | None] = {name: None for name in KNOWN_PROPERTIES}
        props.update({k: v for k, v in properties.items() if k in KNOWN_PROPERTIES and k not in READ_ONLY})
        props.update(
            createdate=iso_ms(modified_ms), lastmodifieddate=iso_ms(modified_ms), hs_object_id=str(contact_id)
        )
        contact = Contact(contact_id, props, modified_ms, modified_ms)
        self._contacts[contact_id] = contact
        self._note("contact.creation", contact)
        for name in self._hooks.properties if self._hooks is not None else ():
            if props.get(name) is not None:
                self._note("contact.propertyChange", contact, propertyName=name, propertyValue=props[name])
        return contact

    def _update(self, contact: Contact, properties: dict[str, str | None]) -> None:
        changes = {
            k: v
            for k, v in properties.items()
            if k in KNOWN_PROPERTIES and k not in READ_ONLY and contact.properties.get(k) != v
        }
        if not changes:
            return  # nothing changed: lastmodifieddate stays
        now = max(self.now_ms(), contact.updated_ms + 1)
        contact.properties.update(changes)
        contact.properties["lastmodifieddate"] = iso_ms(now)
        contact.updated_ms = now
        contact.history.append(",".join(sorted(changes)))
        for name in self._hooks.properties if self._hooks is not None else ():
            if name in changes:
                self._note("contact.propertyChange", contact, propertyName=name, propertyValue=changes[name])

    def _archive(self, contact_id: int) -> None:
        contact = self._contacts.get(contact_id)
        if contact is None or contact.archived:
            raise HubSpotError(404, "resource not found", "OBJECT_NOT_FOUND")
        contact.archived_ms = self.now_ms()


class _RateLimited(HubSpotError):
    def __init__(self) -> None:
        super().__init__(429, "You have reached your secondly limit.", "RATE_LIMITS")
