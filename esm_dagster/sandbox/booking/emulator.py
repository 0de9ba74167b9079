"""A padel-court booking platform's JSON API on loopback: the system the declarative REST provider
is proven against.

There is no public spec to be faithful to (booking platforms publish none in a common form), so it is
a plausible one: each stream pages in a different, common style, so every paginator of the `rest`
provider is exercised over real HTTP.

- `GET /api/v2/courts`: page numbers, `page` / `per_page` (max 50), `{"data": [...], "meta": {...,
  "total_pages"}}`.
- `GET /api/v2/members`: `offset` / `limit` (max 100), `{"items": [...], "total", "offset", "limit"}`,
  ordered by id; `updated_since` (inclusive) / `updated_before` (exclusive) ISO-8601 with an offset;
  `external_ref` filter.
- `GET /api/v2/bookings`: an opaque keyset cursor, `cursor` / `limit` (max 100),
  `{"data": {"items": [...], "next_cursor": "..." | null}}`, ordered by (`updated_at`, id);
  `updated_since_ms` / `updated_before_ms` in unix milliseconds; `status` filter.
- `GET /api/v2/payments`: a bare JSON list with `Link: <...>; rel="next"`, newest `paid_at` first;
  the next link echoes every query parameter the request had (an `api_key` too, as careless servers
  do: the client must not keep it).
- `GET /api/v2/waitlist`: `{"results": [...], "next": "<absolute URL>" | null}`, `after` / `limit`.
- `GET /api/v2/members/{id}`, `/api/v2/bookings/{id}`.
- `POST /api/v2/bookings` (`{"booking": {...}}`): `Idempotency-Key` replays the first answer; the
  same key with another body is 422 `idempotency_key_reused`; an overlapping slot is 409
  `slot_unavailable`; the price is computed from the court's rate.
- `POST /api/v2/members` (no idempotency: a resend makes a second member) and
  `PATCH /api/v2/members/{id}`.

Auth: the API key in `X-Api-Key`, in `?api_key=`, or as `Authorization: Bearer`; HTTP Basic with
the `basic_users` given. A bad or missing credential is 401 `{"error": {"code": "unauthorized"}}`
that never echoes it. Errors are `{"error": {"code", "message", "field"?}}`; 429 carries
`Retry-After`. Faults (`FaultSwitch`): 5xx / 429 bodies, delays, disconnects, lost answers, expired
keys; duplicate pages on the keyset-paged streams (bookings, waitlist: a continuation page restarts
`items` records early, which is what a reader of a moving list sees; on the offset-paged ones a
one-off repeat would also lose records, which no real server does, so they ignore it); mutations
between pages (members and bookings: the last served record changes, a backdated one appears).
"""

from __future__ import annotations

import base64
import binascii
import copy
import hmac
import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlencode

import orjson

from esm_dagster.sandbox._http import Fault, LoopbackEmulator, Request, Response
from esm_dagster.sandbox.booking import data as booking_data
from esm_dagster.sandbox.booking.data import DEFAULT_END, DEFAULT_START, iso, parse_iso, price
from esm_dagster.security.redact import redact_text
from esm_dagster.security.secret import Secret

PREFIX = "/api/v2"
_MEMBER_FIELDS = {
    "first_name": str,
    "last_name": str,
    "email": str,
    "phone": str,
    "level": float,
    "marketing_opt_in": bool,
    "external_ref": str,
}
_BOOKING_FIELDS = frozenset({"court_id", "member_id", "starts_at", "duration_minutes", "notes"})
_QUERY_KEY = re.compile(r"(?i)(api_key=)[^&]*")


class BookingError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers: list[tuple[str, str]] = []


class Mutation(NamedTuple):
    resource: str
    changed: Any  # id of the served record that changed
    inserted: Any  # id of the record created behind the reader


class _Stored(NamedTuple):
    body: bytes
    status: int
    answer: bytes


class BookingEmulator(LoopbackEmulator):
    """`BookingEmulator(api_keys=["bk_live_..."], members=120, bookings=400, seed=7)`, then `.start()`."""

    def __init__(
        self,
        api_keys: Iterable[str | Secret],
        *,
        basic_users: dict[str, str | Secret] | None = None,
        members: int = 120,
        bookings: int = 400,
        seed: int = 7,
        start: int = DEFAULT_START,
        end: int = DEFAULT_END,
        clock: Callable[[], float] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        keys = [k.reveal() if isinstance(k, Secret) else str(k) for k in api_keys]
        if not keys or not all(keys):
            raise ValueError("the emulator needs at least one non-empty API key")
        self._keys = tuple(keys)
        self._basic = {
            u: (p.reveal() if isinstance(p, Secret) else str(p)) for u, p in (basic_users or {}).items()
        }
        self._clock = clock or time.time
        dataset = booking_data.generate(members=members, bookings=bookings, seed=seed, start=start, end=end)
        self._lock = threading.RLock()
        self.courts = dataset.courts
        self.members = dataset.members
        self.bookings = dataset.bookings
        self.payments = dataset.payments
        self.waitlist = dataset.waitlist
        self._idempotency: dict[tuple[str, str], _Stored] = {}
        self.mutations: list[Mutation] = []

    # ---- introspection for tests -----------------------------------------------------------------
    def records(self, resource: str) -> list[dict[str, Any]]:
        """A copy of every record of `courts`, `members`, `bookings`, `payments` or `waitlist`, in
        the order its list endpoint serves them."""
        with self._lock:
            return copy.deepcopy(self._ordered(resource))

    def count(self, resource: str) -> int:
        with self._lock:
            return len(self._ordered(resource))

    def _ordered(self, resource: str) -> list[dict[str, Any]]:
        if resource == "bookings":
            return sorted(self.bookings, key=_booking_key)
        if resource == "payments":
            return sorted(self.payments, key=lambda p: (-p["paid_at"], p["id"]))
        if resource == "members":
            return sorted(self.members, key=lambda m: m["id"])
        return list(getattr(self, resource))

    # ---- LoopbackEmulator hooks ------------------------------------------------------------------
    def redact_query(self, query: str) -> str:
        return _QUERY_KEY.sub(r"\1***", redact_text(query, self._keys + tuple(self._basic.values())))

    def handle(self, request: Request) -> Response:
        try:
            identity = self._authenticate(request)
            return self._route(request, identity)
        except BookingError as error:
            return self._error(error)

    def render_fault(self, request: Request, fault: Fault) -> Response:
        if fault.kind == "rate_limit":
            error = BookingError(429, "rate_limited", "Too many requests; slow down and retry later.")
            error.headers.append(("Retry-After", str(max(0, math.ceil(fault.retry_after or 1)))))
            return self._error(error)
        codes = {
            500: "internal_error",
            502: "bad_gateway",
            503: "service_unavailable",
            504: "gateway_timeout",
        }
        status = fault.status
        return self._error(BookingError(status, codes.get(status, "error"), f"Injected error {status}."))

    def internal_error(self, request: Request) -> Response:
        return self._error(BookingError(500, "internal_error", "Something went wrong on our side."))

    # ---- plumbing --------------------------------------------------------------------------------
    @staticmethod
    def _json(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
        return Response(status, orjson.dumps(payload), headers or [])

    def _error(self, error: BookingError) -> Response:
        detail: dict[str, Any] = {"code": error.code, "message": error.message}
        if error.field is not None:
            detail["field"] = error.field
        return self._json(error.status, {"error": detail}, error.headers)

    def _authenticate(self, request: Request) -> str:
        supplied: str | None = request.header("x-api-key")
        query_key = dict(parse_qsl(request.query, keep_blank_values=True)).get("api_key")
        header = (request.header("authorization") or "").strip()
        scheme, _, credential = header.partition(" ")
        if supplied is None and query_key is not None:
            supplied = query_key
        if supplied is None and scheme.lower() == "bearer":
            supplied = credential.strip()
        if supplied is not None:
            if not _one_of(supplied, self._keys):
                raise self._unauthorized("Invalid API key.")
            if self.faults.credential_expired(supplied):
                raise self._unauthorized("This API key has expired; create a new one.", "key_expired")
            return supplied
        if scheme.lower() == "basic" and self._basic:
            try:
                user, _, password = (
                    base64.b64decode(credential.strip(), validate=True).decode().partition(":")
                )
            except (binascii.Error, UnicodeDecodeError):
                raise self._unauthorized("Malformed Basic credentials.") from None
            expected = self._basic.get(user)
            if expected is None or not hmac.compare_digest(password.encode(), expected.encode()):
                raise self._unauthorized("Invalid username or password.")
            if self.faults.credential_expired(password):
                raise self._unauthorized("These credentials have expired.", "key_expired")
            return user
        raise self._unauthorized("No API key given: send it in the X-Api-Key header.")

    @staticmethod
    def _unauthorized(message: str, code: str = "unauthorized") -> BookingError:
        error = BookingError(401, code, message)
        error.headers.append(("WWW-Authenticate", 'ApiKey realm="booking"'))
        return error

    def _route(self, request: Request, identity: str) -> Response:
        if not request.path.startswith(PREFIX + "/"):
            raise BookingError(404, "not_found", f"No route for {request.method} {request.path}.")
        parts = [unquote(p) for p in request.path[len(PREFIX) + 1 :].split("/")]
        query = dict(parse_qsl(request.query, keep_blank_values=True))
        method = request.method
        with self._lock:
            if len(parts) == 1:
                resource = parts[0]
                if method == "GET" and resource in _LISTS:
                    return _LISTS[resource](self, request, query)
                if method == "POST" and resource == "bookings":
                    return self._idempotent(request, identity, self._create_booking)
                if method == "POST" and resource == "members":
                    return self._json(201, {"data": self._create_member(_json_body(request))})
            if len(parts) == 2 and parts[0] in ("members", "bookings"):
                record = self._find(parts[0], parts[1])
                if method == "GET":
                    return self._json(200, {"data": record})
                if method == "PATCH" and parts[0] == "members":
                    return self._json(200, {"data": self._update_member(record, _json_body(request))})
            if parts[0] in _LISTS or parts[0] in ("members", "bookings"):
                raise BookingError(405, "method_not_allowed", f"{method} is not allowed on {request.path}.")
        raise BookingError(404, "not_found", f"No route for {method} {request.path}.")

    def _find(self, resource: str, record_id: str) -> dict[str, Any]:
        for record in getattr(self, resource):
            if str(record["id"]) == record_id:
                return record
        raise BookingError(404, "not_found", f"No {resource[:-1]} {record_id}.")

    # ---- lists -----------------------------------------------------------------------------------
    def _list_courts(self, request: Request, query: dict[str, str]) -> Response:
        _known(query, {"page", "per_page", "api_key"})
        page = _int(query.get("page", "1"), "page", 1)
        size = _int(query.get("per_page", "20"), "per_page", 1, 50)
        begin = (page - 1) * size
        total = len(self.courts)
        body = {
            "data": self.courts[max(0, begin) : begin + size],
            "meta": {"page": page, "per_page": size, "total": total, "total_pages": -(-total // size)},
        }
        return self._json(200, body)

    def _list_members(self, request: Request, query: dict[str, str]) -> Response:
        _known(query, {"offset", "limit", "updated_since", "updated_before", "external_ref", "api_key"})
        offset = _int(query.get("offset", "0"), "offset", 0)
        size = _int(query.get("limit", "25"), "limit", 1, 100)
        if offset > 0:
            self._maybe_mutate("members", offset)
        since = _time(query, "updated_since")
        before = _time(query, "updated_before")
        ref = query.get("external_ref")
        rows = [
            m
            for m in self._ordered("members")
            if (since is None or parse_iso(m["updated_at"]) >= since)
            and (before is None or parse_iso(m["updated_at"]) < before)
            and (ref is None or m["external_ref"] == ref)
        ]
        return self._json(
            200, {"items": rows[offset : offset + size], "total": len(rows), "offset": offset, "limit": size}
        )

    def _list_bookings(self, request: Request, query: dict[str, str]) -> Response:
        _known(query, {"cursor", "limit", "updated_since_ms", "updated_before_ms", "status", "api_key"})
        size = _int(query.get("limit", "25"), "limit", 1, 100)
        since = (
            _int(query["updated_since_ms"], "updated_since_ms", 0) if "updated_since_ms" in query else None
        )
        before = (
            _int(query["updated_before_ms"], "updated_before_ms", 0) if "updated_before_ms" in query else None
        )
        rows = [
            b
            for b in self._ordered("bookings")
            if (since is None or _ms(b) >= since)
            and (before is None or _ms(b) < before)
            and ("status" not in query or b["status"] == query["status"])
        ]
        start = 0
        if "cursor" in query:
            after = _decode_cursor(query["cursor"])
            self._maybe_mutate("bookings", after)
            start = next((i for i, b in enumerate(rows) if _booking_key(b) > after), len(rows))
            start = max(0, start - self._duplicate("/api/v2/bookings"))
        page = rows[start : start + size]
        more = start + size < len(rows)
        token = _encode_cursor(_booking_key(page[-1])) if more and page else None
        return self._json(200, {"data": {"items": page, "next_cursor": token}})

    def _list_payments(self, request: Request, query: dict[str, str]) -> Response:
        _known(query, {"limit", "page_token", "api_key"})
        size = _int(query.get("limit", "50"), "limit", 1, 100)
        start = 0
        if "page_token" in query:
            start = _decode_offset(query["page_token"])
        rows = self._ordered("payments")
        headers = []
        if start + size < len(rows):
            echoed = {**query, "page_token": _encode_offset(start + size)}  # every parameter, as sent
            host = request.header("host") or f"127.0.0.1:{self.port}"
            headers.append(("Link", f'<http://{host}{PREFIX}/payments?{urlencode(echoed)}>; rel="next"'))
        return self._json(200, rows[start : start + size], headers)

    def _list_waitlist(self, request: Request, query: dict[str, str]) -> Response:
        _known(query, {"after", "limit", "api_key"})
        size = _int(query.get("limit", "20"), "limit", 1, 100)
        after = _int(query["after"], "after", 0) if "after" in query else 0
        rows = [w for w in self.waitlist if w["id"] > after]
        if "after" in query:
            back = self._duplicate("/api/v2/waitlist")
            if back:
                earlier = [w for w in self.waitlist if w["id"] <= after][-back:]
                rows = earlier + rows
        page = rows[:size]
        following = None
        if len(rows) > size:
            host = request.header("host") or f"127.0.0.1:{self.port}"
            following = (
                f"http://{host}{PREFIX}/waitlist?{urlencode({'after': page[-1]['id'], 'limit': size})}"
            )
        return self._json(200, {"results": page, "next": following})

    def _duplicate(self, path: str) -> int:
        fault = self.faults.take_handler_fault("duplicate", path)
        return 0 if fault is None else fault.items

    def _maybe_mutate(self, resource: str, position: Any) -> None:
        """A `mutate` fault: the last served record changes, and a backdated record appears."""
        fault = self.faults.take_handler_fault("mutate", f"{PREFIX}/{resource}")
        if fault is None:
            return
        now = self._clock()
        if resource == "members":
            ordered = self._ordered("members")
            served = ordered[min(int(position), len(ordered)) - 1]
            served["updated_at"] = iso(now)
            made = self._create_member(
                {"first_name": "Late", "last_name": "Arrival", "email": "late@example.com"}
            )
            made["created_at"] = made["updated_at"] = iso(now - fault.seconds)
        else:
            served = next((b for b in self.bookings if _booking_key(b) == position), self.bookings[0])
            served["notes"] = "changed between pages"
            served["updated_at"] = iso(now)
            made = self._create_booking(
                {
                    "court_id": "court-08",
                    "member_id": self.members[0]["id"],
                    "starts_at": iso(booking_data.DEFAULT_END + 86_400 * 30 + len(self.bookings) * 7_200),
                    "duration_minutes": 60,
                }
            )[1]["data"]
            made["updated_at"] = iso(now - fault.seconds)
        self.mutations.append(Mutation(resource, served["id"], made["id"]))

    # ---- writes ----------------------------------------------------------------------------------
    def _idempotent(
        self, request: Request, identity: str, action: Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]
    ) -> Response:
        key = request.header("idempotency-key")
        body = _json_body(request)
        booking = body.get("booking") if isinstance(body, dict) else None
        if not isinstance(booking, dict):
            raise BookingError(422, "validation_failed", 'The body must be {"booking": {...}}.', "booking")
        if key is None:
            status, answer = action(booking)
            return self._json(status, answer)
        if not 1 <= len(key) <= 255:
            raise BookingError(422, "validation_failed", "Idempotency-Key must be 1 to 255 characters.")
        canonical = orjson.dumps(booking, option=orjson.OPT_SORT_KEYS)
        stored = self._idempotency.get((identity, key))
        if stored is not None:
            if stored.body != canonical:
                raise BookingError(
                    422, "idempotency_key_reused", "This Idempotency-Key was used with another request body."
                )
            return Response(stored.status, stored.answer, [("Idempotent-Replayed", "true")])
        status, answer = action(booking)
        encoded = orjson.dumps(answer)
        self._idempotency[(identity, key)] = _Stored(canonical, status, encoded)
        return Response(status, encoded)

    def _create_booking(self, fields: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        unknown = set(fields) - _BOOKING_FIELDS
        if unknown:
            field = sorted(unknown)[0]
            raise BookingError(422, "validation_failed", f"Unknown field {field}.", field)
        court = next((c for c in self.courts if c["id"] == fields.get("court_id")), None)
        if court is None:
            raise BookingError(422, "validation_failed", "court_id does not name a court.", "court_id")
        member_id = fields.get("member_id")
        if not any(m["id"] == member_id for m in self.members):
            raise BookingError(422, "validation_failed", "member_id does not name a member.", "member_id")
        minutes = fields.get("duration_minutes")
        if minutes not in (60, 90, 120):
            raise BookingError(
                422, "validation_failed", "duration_minutes must be 60, 90 or 120.", "duration_minutes"
            )
        starts = fields.get("starts_at")
        try:
            begins = parse_iso(starts) if isinstance(starts, str) else None
        except ValueError:
            begins = None
        if begins is None or begins % 1800:
            raise BookingError(
                422,
                "validation_failed",
                "starts_at must be ISO-8601 with an offset, on the half hour.",
                "starts_at",
            )
        ends = begins + minutes * 60
        for other in self.bookings:
            overlaps = parse_iso(other["starts_at"]) < ends and begins < parse_iso(other["ends_at"])
            if other["court_id"] == court["id"] and other["status"] != "cancelled" and overlaps:
                raise BookingError(409, "slot_unavailable", f"{court['name']} is taken then.", "starts_at")
        now = iso(self._clock())
        booking = {
            "id": f"bk_n{len(self.bookings):09d}",
            "court_id": court["id"],
            "member_id": member_id,
            "starts_at": iso(begins),
            "ends_at": iso(ends),
            "duration_minutes": minutes,
            "status": "confirmed",
            "price_thb": price(court["hourly_rate_thb"], minutes),
            "currency": "THB",
            "notes": fields.get("notes"),
            "created_at": now,
            "updated_at": now,
        }
        self.bookings.append(booking)
        return 201, {"data": copy.deepcopy(booking)}

    def _member_changes(self, fields: Any) -> dict[str, Any]:
        if not isinstance(fields, dict):
            raise BookingError(422, "validation_failed", "The body must be a JSON object.")
        out: dict[str, Any] = {}
        for name, value in fields.items():
            kind = _MEMBER_FIELDS.get(name)
            if kind is None:
                raise BookingError(422, "validation_failed", f"Unknown field {name}.", name)
            ok = value is None or (
                isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
            )
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value, ok = float(value), True
            if not ok:
                raise BookingError(422, "validation_failed", f"{name} must be a {kind.__name__}.", name)
            out[name] = value
        return out

    def _create_member(self, fields: Any) -> dict[str, Any]:
        changes = self._member_changes(fields)
        if not changes.get("first_name"):
            raise BookingError(422, "validation_failed", "first_name is required.", "first_name")
        now = iso(self._clock())
        member: dict[str, Any] = dict.fromkeys(_MEMBER_FIELDS)
        member |= {"marketing_opt_in": False, "level": 1.0} | changes
        member = {
            "id": max(m["id"] for m in self.members) + 1,
            **member,
            "created_at": now,
            "updated_at": now,
        }
        self.members.append(member)
        return copy.deepcopy(member)

    def _update_member(self, member: dict[str, Any], fields: Any) -> dict[str, Any]:
        changes = self._member_changes(fields)
        if changes and any(member.get(k) != v for k, v in changes.items()):
            member.update(changes)
            member["updated_at"] = iso(self._clock())
        return copy.deepcopy(member)


_LISTS: dict[str, Callable[[BookingEmulator, Request, dict[str, str]], Response]] = {
    "courts": BookingEmulator._list_courts,
    "members": BookingEmulator._list_members,
    "bookings": BookingEmulator._list_bookings,
    "payments": BookingEmulator._list_payments,
    "waitlist": BookingEmulator._list_waitlist,
}


def _one_of(supplied: str, accepted: tuple[str, ...]) -> bool:
    matched = False
    for key in accepted:  # every key compared: no early exit
        matched |= hmac.compare_digest(supplied.encode(), key.encode())
    return matched


def _booking_key(booking: dict[str, Any]) -> tuple[int, str]:
    return (_ms(booking), booking["id"])


def _ms(booking: dict[str, Any]) -> int:
    return int(parse_iso(booking["updated_at"]) * 1000)


def _encode_cursor(key: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(f"{key[0]}:{key[1]}".encode()).decode().rstrip("=")


def _decode_cursor(token: str) -> tuple[int, str]:
    try:
        ms, _, booking_id = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().partition(":")
        return int(ms), booking_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BookingError(
            400, "invalid_cursor", "The cursor is not one this API issued.", "cursor"
        ) from None


def _encode_offset(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o{offset}".encode()).decode().rstrip("=")


def _decode_offset(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if not text.startswith("o"):
            raise ValueError(text)
        return int(text[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BookingError(
            400, "invalid_page_token", "The page_token is not one this API issued.", "page_token"
        ) from None


def _known(query: dict[str, str], allowed: set[str]) -> None:
    for name in query:
        if name not in allowed:
            raise BookingError(400, "invalid_parameter", f"Unknown query parameter {name}.", name)


def _int(text: str, name: str, low: int, high: int | None = None) -> int:
    if not re.fullmatch(r"\d{1,15}", text):
        raise BookingError(400, "invalid_parameter", f"{name} must be a whole number.", name)
    value = int(text)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BookingError(400, "invalid_parameter", f"{name} must be {bound}.", name)
    return value


def _time(query: dict[str, str], name: str) -> float | None:
    if name not in query:
        return None
    try:
        return parse_iso(query[name])
    except ValueError:
        raise BookingError(
            400, "invalid_parameter", f"{name} must be ISO-8601 with an offset.", name
        ) from None


def _json_body(request: Request) -> Any:
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise BookingError(415, "unsupported_media_type", "Send the body as application/json.")
    try:
        return orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise BookingError(400, "invalid_json", "The body is not valid JSON.") from None
