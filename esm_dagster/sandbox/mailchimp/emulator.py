"""A stateful Mailchimp Marketing API v3 list-members emulator on loopback (PROVIDERS.md §7).

What it implements, as PROVIDERS.md describes Mailchimp:

- `GET /3.0/lists/{list_id}/members?count=(<=1000, default 10)&offset=&status=&since_last_changed=
  &before_last_changed=&fields=&exclude_fields=` -> `{members:[...],list_id,total_items,_links}`, in
  signup order. `since_last_changed` / `before_last_changed` are ISO-8601 and compare strictly
  (changed after / before), as the parameter names read; that they are exclusive is [U], and the
  client does not rely on it. Without `status`, archived members are left out [U]; `status=archived`
  lists them.
- `GET /3.0/lists/{list_id}/members/{subscriber_hash}`; `PUT` the same path is an upsert
  (`{email_address,status_if_new,status?,merge_fields?,language?,vip?}`; `status_if_new` is required
  for a new member; a hash that is not `md5(lowercase(email_address))` is refused); a PUT that
  changes nothing leaves `last_changed` alone. `DELETE` archives (204).
- Auth: HTTP Basic, any user name, the API key as password; the key's `-usX` suffix must name this
  emulator's data centre, else the same 401 as an unknown key. Bodies are problem+json
  `{type,title,status,detail,instance,errors?}` sent as `application/problem+json` [U]; the key is
  never echoed.
- At most `max_connections` (10) requests in flight per API key; the next one is a 429 (title
  `TooManyConnections`, no rate-limit headers) [3P]. `latency` holds each request that long, so a
  test can have several in flight.
- `faults`: 5xx and 429 in Mailchimp's shapes (a 429 has no `Retry-After`, as Mailchimp's has none),
  delays, disconnects, answers lost after a committed write, pages after an offset that repeat the
  end of the page before (`duplicate`), and a served member changed (and a new one created) between
  two pages (`mutate`); keys that expire after N requests answer 401 `API Key Invalid`.

- OAuth: `oauth_tokens` are access tokens as Mailchimp's OAuth hands them out, sent as
  `Authorization: Bearer <token>`; they do not expire [U]. `GET /oauth2/metadata` with
  `Authorization: OAuth <token>` answers `{dc,role,accountname,login_url,api_endpoint}`, the
  account's data centre (the URL lives on `login.mailchimp.com` at Mailchimp; its path, header
  and fields are [U]); an unknown token there is a 401 `{error:"invalid_token"}`.

Not implemented: other resources, batches, tags, interests, merge-field definitions (FNAME LNAME
PHONE BIRTHDAY ADDRESS are known, others refused), the OAuth authorization and token exchange.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote

from esm_dagster.sandbox._http import Fault, LoopbackEmulator, Request, Response
from esm_dagster.sandbox.mailchimp.data import (
    DEFAULT_END,
    DEFAULT_START,
    MEMBER_STATUSES,
    Member,
    generate,
    iso_seconds,
    subscriber_hash,
)
from esm_dagster.security.redact import redact_text
from esm_dagster.security.secret import Secret

ERROR_TYPE = "https://mailchimp.com/developer/marketing/docs/errors/"
PROBLEM_JSON = "application/problem+json"
MAX_COUNT = 1000
DEFAULT_COUNT = 10
MAX_CONNECTIONS = 10
METADATA_PATH = "/oauth2/metadata"
DEFAULT_LIST_ID = "5e2a9d41c7"
MERGE_FIELDS = frozenset({"FNAME", "LNAME", "PHONE", "BIRTHDAY", "ADDRESS"})
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_KEY_RE = re.compile(r"^[0-9a-f]{32}-([a-z]+[0-9]+)$")
_INVALID_KEY = "Your API key may be invalid, or you've attempted to access the wrong datacenter."


class MailchimpError(Exception):
    """An error answer, rendered as Mailchimp's problem+json."""

    def __init__(
        self, status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []


class Mutation(NamedTuple):
    changed: str  # subscriber hash of the served member that changed
    inserted: str  # subscriber hash of the member created


def _iso_to_seconds(text: str, param: str) -> int:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise MailchimpError(
            400, "Invalid Resource", f"The value for {param} must be an ISO 8601 date-time with an offset."
        )
    return int(moment.timestamp())


def _pick(obj: Any, paths: list[list[str]]) -> Any:
    """`fields=` applied: only the given dotted paths (`members.id`, `total_items`)."""
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    for key, value in obj.items():
        below = [p[1:] for p in paths if p and p[0] == key]
        if not below:
            continue
        if any(not rest for rest in below):
            out[key] = value
        elif isinstance(value, list):
            out[key] = [_pick(item, below) for item in value]
        else:
            out[key] = _pick(value, below)
    return out


def _drop(obj: Any, paths: list[list[str]]) -> Any:
    """`exclude_fields=` applied."""
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    for key, value in obj.items():
        below = [p[1:] for p in paths if p and p[0] == key]
        if any(not rest for rest in below):
            continue
        if below and isinstance(value, list):
            out[key] = [_drop(item, below) for item in value]
        elif below:
            out[key] = _drop(value, below)
        else:
            out[key] = value
    return out


class MailchimpEmulator(LoopbackEmulator):
    """`MailchimpEmulator(api_keys=["<32 hex>-us6"], dc="us6", members=80, seed=7).start()`.

    One audience, `list_id`. `clock` gives the time in seconds for writes (default: wall clock).
    """

    def __init__(
        self,
        api_keys: Iterable[str | Secret],
        *,
        dc: str = "us6",
        list_id: str = DEFAULT_LIST_ID,
        members: int = 80,
        archived: int = 4,
        seed: int = 7,
        start: int = DEFAULT_START,
        end: int = DEFAULT_END,
        clock: Callable[[], float] | None = None,
        max_connections: int = MAX_CONNECTIONS,
        latency: float = 0.0,
        oauth_tokens: Iterable[str | Secret] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        keys = [k.reveal() if isinstance(k, Secret) else str(k) for k in api_keys]
        bearer = [k.reveal() if isinstance(k, Secret) else str(k) for k in oauth_tokens]
        if not all(keys) or not all(bearer) or not (keys or bearer):
            raise ValueError("the emulator needs a non-empty API key or OAuth token")
        self._keys = tuple(keys)
        self._oauth_tokens = tuple(bearer)
        self.dc = dc
        self.list_id = list_id
        self._clock = clock or time.time
        self._lock = threading.RLock()
        self._members: dict[str, Member] = {
            m.id: m for m in generate(members, seed=seed, start=start, end=end, archived=archived)
        }
        self._next_web_id = 900_000
        self.max_connections = max_connections
        self.latency = latency
        self._in_flight: dict[bytes, int] = {}
        self.peak_in_flight = 0
        self.mutations: list[Mutation] = []

    # ---- Python API for tests and the demo ------------------------------------------------------
    def now(self) -> int:
        return int(self._clock())

    def members(self, *, archived: bool = False) -> list[dict[str, Any]]:
        """Every member (non-archived, or archived) as the API renders it, in list order."""
        with self._lock:
            return [self._render(m) for m in self._members.values() if (m.status == "archived") == archived]

    def get_member(self, email_or_hash: str) -> dict[str, Any] | None:
        key = email_or_hash if "@" not in email_or_hash else subscriber_hash(email_or_hash)
        with self._lock:
            member = self._members.get(key)
            return None if member is None else self._render(member)

    def update_member(self, email_or_hash: str, **merge_fields: str) -> dict[str, Any]:
        key = email_or_hash if "@" not in email_or_hash else subscriber_hash(email_or_hash)
        with self._lock:
            member = self._members[key]
            self._change(member, merge_fields=merge_fields)
            return self._render(member)

    def archive_member(self, email_or_hash: str) -> None:
        key = email_or_hash if "@" not in email_or_hash else subscriber_hash(email_or_hash)
        with self._lock:
            self._archive(key)

    # ---- LoopbackEmulator hooks -----------------------------------------------------------------
    def redact_query(self, query: str) -> str:
        return redact_text(query, self._keys + self._oauth_tokens)

    def handle(self, request: Request) -> Response:
        if request.path.rstrip("/") == METADATA_PATH:
            return self._metadata(request)
        try:
            key = self._authenticate(request)
            with self._connection(key):
                if self.latency:
                    time.sleep(self.latency)
                status, payload = self._route(request)
        except MailchimpError as error:
            return self._problem(error, request)
        if status == 204:
            return Response(204, b"")
        return Response(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"))

    def render_fault(self, request: Request, fault: Fault) -> Response:
        if fault.kind == "rate_limit":
            return self._problem(self._too_many(), request)
        if fault.status >= 500:
            error = MailchimpError(
                fault.status,
                "Internal Server Error",
                "An unexpected internal error has occurred. Please contact Support for more information.",
            )
        else:
            error = MailchimpError(fault.status, "Bad Request", f"Injected client error {fault.status}.")
        return self._problem(error, request)

    def internal_error(self, request: Request) -> Response:
        return self._problem(
            MailchimpError(500, "Internal Server Error", "An unexpected internal error."), request
        )

    # ---- plumbing -------------------------------------------------------------------------------
    def _problem(self, error: MailchimpError, request: Request) -> Response:
        body: dict[str, Any] = {
            "type": ERROR_TYPE,
            "title": error.title,
            "status": error.status,
            "detail": error.detail,
            "instance": str(uuid.uuid4()),
        }
        if error.errors:
            body["errors"] = error.errors
        return Response(error.status, json.dumps(body).encode("utf-8"), content_type=PROBLEM_JSON)

    @staticmethod
    def _too_many() -> MailchimpError:
        return MailchimpError(
            429, "TooManyConnections", "You have exceeded the limit of 10 simultaneous connections."
        )

    @contextmanager
    def _connection(self, key: str) -> Iterator[None]:
        digest = hmac.new(b"connections", key.encode(), "sha256").digest()
        with self._lock:
            current = self._in_flight.get(digest, 0)
            if current >= self.max_connections:
                raise self._too_many()
            self._in_flight[digest] = current + 1
            self.peak_in_flight = max(self.peak_in_flight, current + 1)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[digest] -= 1

    def _oauth_token(self, token: str) -> bool:
        encoded = token.encode("utf-8")
        matched = False
        for accepted in self._oauth_tokens:  # every token compared: no early exit
            matched |= hmac.compare_digest(encoded, accepted.encode("utf-8"))
        return matched and bool(token)

    def _metadata(self, request: Request) -> Response:
        scheme, _, token = (request.header("authorization") or "").strip().partition(" ")
        if scheme.lower() != "oauth" or not self._oauth_token(token.strip()):
            body = {"error": "invalid_token", "error_description": "Invalid token"}
            return Response(401, json.dumps(body).encode("utf-8"))
        answer = {
            "dc": self.dc,
            "role": "owner",
            "accountname": "Club Emulator",
            "login_url": "https://login.mailchimp.com",
            "api_endpoint": f"https://{self.dc}.api.mailchimp.com",
        }
        return Response(200, json.dumps(answer).encode("utf-8"))

    def _authenticate(self, request: Request) -> str:
        header = (request.header("authorization") or "").strip()
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            token = credential.strip()
            if not self._oauth_token(token) or self.faults.credential_expired(token):
                raise MailchimpError(401, "API Key Invalid", _INVALID_KEY)
            return token
        if scheme.lower() != "basic" or not credential.strip():
            raise MailchimpError(401, "API Key Missing", "Your request did not include an API key.")
        try:
            decoded = base64.b64decode(credential.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise MailchimpError(401, "API Key Invalid", _INVALID_KEY) from None
        key = decoded.partition(":")[2]
        encoded = key.encode("utf-8")
        matched = False
        for accepted in self._keys:  # every key compared: no early exit
            matched |= hmac.compare_digest(encoded, accepted.encode("utf-8"))
        match = _KEY_RE.match(key)
        if not matched or match is None or match.group(1) != self.dc:
            raise MailchimpError(401, "API Key Invalid", _INVALID_KEY)
        if self.faults.credential_expired(key):
            raise MailchimpError(401, "API Key Invalid", _INVALID_KEY)
        return key

    def _route(self, request: Request) -> tuple[int, Any]:
        parts = [unquote(p) for p in request.path.split("/") if p]
        if len(parts) < 4 or parts[:2] != ["3.0", "lists"] or parts[3] != "members":
            raise MailchimpError(404, "Resource Not Found", "The requested resource could not be found.")
        if parts[2] != self.list_id:
            raise MailchimpError(404, "Resource Not Found", "The requested resource could not be found.")
        query = parse_qs(request.query, keep_blank_values=True)
        with self._lock:
            if len(parts) == 4 and request.method == "GET":
                return 200, self._shape(self._list(query), query)
            if len(parts) == 5:
                member_hash = parts[4].lower()
                if request.method == "GET":
                    member = self._members.get(member_hash)
                    if member is None:
                        raise MailchimpError(
                            404, "Resource Not Found", "The requested resource could not be found."
                        )
                    return 200, self._shape(self._render(member), query)
                if request.method == "PUT":
                    return 200, self._upsert(member_hash, request.body)
                if request.method == "DELETE":
                    self._archive(member_hash)
                    return 204, None
        raise MailchimpError(
            405, "Method Not Allowed", f"The requested method {request.method} is not allowed."
        )

    @staticmethod
    def _shape(payload: dict[str, Any], query: dict[str, list[str]]) -> dict[str, Any]:
        fields = [p.split(".") for v in query.get("fields", []) for p in v.split(",") if p]
        excluded = [p.split(".") for v in query.get("exclude_fields", []) for p in v.split(",") if p]
        if fields:
            payload = _pick(payload, fields)
        if excluded:
            payload = _drop(payload, excluded)
        return payload

    def _render(self, member: Member) -> dict[str, Any]:
        full_name = " ".join(
            p for p in (member.merge_fields.get("FNAME"), member.merge_fields.get("LNAME")) if p
        )
        return {
            "id": member.id,
            "email_address": member.email,
            "unique_email_id": member.unique_email_id,
            "contact_id": member.contact_id,
            "full_name": full_name,
            "web_id": member.web_id,
            "email_type": "html",
            "status": member.status,
            "merge_fields": dict(member.merge_fields),
            "stats": {"avg_open_rate": 0, "avg_click_rate": 0},
            "ip_signup": "",
            "timestamp_signup": iso_seconds(member.signup),
            "ip_opt": "",
            "timestamp_opt": iso_seconds(member.opt_in),
            "member_rating": 2,
            "last_changed": iso_seconds(member.last_changed),
            "language": member.language,
            "vip": member.vip,
            "email_client": "",
            "location": {
                "latitude": 0,
                "longitude": 0,
                "gmtoff": 0,
                "dstoff": 0,
                "country_code": "",
                "timezone": "",
            },
            "source": "API - Generic",
            "tags_count": 0,
            "tags": [],
            "list_id": self.list_id,
            "_links": [],
        }

    # ---- reads ----------------------------------------------------------------------------------
    def _list(self, query: dict[str, list[str]]) -> dict[str, Any]:
        known = {
            "count",
            "offset",
            "status",
            "since_last_changed",
            "before_last_changed",
            "fields",
            "exclude_fields",
        }
        for name in query:
            if name not in known:
                raise MailchimpError(
                    400, "Invalid Resource", f"The query parameter {name} is not supported here."
                )
        count = self._integer(query.get("count", [str(DEFAULT_COUNT)])[-1], "count")
        if not 1 <= count <= MAX_COUNT:
            raise MailchimpError(400, "Invalid Resource", f"count must be between 1 and {MAX_COUNT}.")
        offset = self._integer(query.get("offset", ["0"])[-1], "offset")
        status = query.get("status", [None])[-1]
        if status is not None and status not in MEMBER_STATUSES:
            raise MailchimpError(400, "Invalid Resource", f"The status {status!r} is not a member status.")
        since = query.get("since_last_changed", [None])[-1]
        before = query.get("before_last_changed", [None])[-1]
        lo = None if since is None else _iso_to_seconds(since, "since_last_changed")
        hi = None if before is None else _iso_to_seconds(before, "before_last_changed")
        if offset > 0:
            self._page_faults(offset, status, lo, hi)
            duplicate = self.faults.take_handler_fault("duplicate", self._members_path())
            if duplicate is not None:
                offset = max(0, offset - duplicate.items)
        matches = self._matching(status, lo, hi)
        page = matches[offset : offset + count]
        return {
            "members": [self._render(m) for m in page],
            "list_id": self.list_id,
            "total_items": len(matches),
            "_links": [],
        }

    def _members_path(self) -> str:
        return f"/3.0/lists/{self.list_id}/members"

    def _matching(self, status: str | None, lo: int | None, hi: int | None) -> list[Member]:
        out = []
        for member in self._members.values():
            if (status is None and member.status == "archived") or (
                status is not None and member.status != status
            ):
                continue
            if (lo is not None and member.last_changed <= lo) or (
                hi is not None and member.last_changed >= hi
            ):
                continue
            out.append(member)
        return out

    def _page_faults(self, offset: int, status: str | None, lo: int | None, hi: int | None) -> None:
        mutate = self.faults.take_handler_fault("mutate", self._members_path())
        if mutate is None:
            return
        served = self._matching(status, lo, hi)[:offset]
        if not served:
            return
        changed = served[-1]
        self._change(
            changed, merge_fields={"LNAME": (changed.merge_fields.get("LNAME") or "") + " (changed)"}
        )
        email = f"late.arrival.{self._next_web_id}@example.com"
        made = self._new_member(email, "subscribed", {"FNAME": "Late", "LNAME": "Arrival"})
        made.last_changed = self.now() - int(mutate.seconds)
        self.mutations.append(Mutation(changed.id, made.id))

    @staticmethod
    def _integer(text: str, param: str) -> int:
        if not re.fullmatch(r"\d{1,9}", text or ""):
            raise MailchimpError(
                400, "Invalid Resource", f"The value for {param} must be a non-negative integer."
            )
        return int(text)

    # ---- writes ---------------------------------------------------------------------------------
    def _upsert(self, member_hash: str, raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise MailchimpError(
                400, "JSON Parse Error", "We encountered an unspecified JSON parsing error."
            ) from None
        if not isinstance(body, dict):
            raise MailchimpError(400, "JSON Parse Error", "The request body must be a JSON object.")
        errors: list[dict[str, str]] = []
        email = body.get("email_address")
        if not isinstance(email, str) or not email:
            errors.append({"field": "email_address", "message": "This value should not be blank."})
        status_if_new, status = body.get("status_if_new"), body.get("status")
        for name, value in (("status_if_new", status_if_new), ("status", status)):
            if value is not None and (value not in MEMBER_STATUSES or value == "archived"):
                errors.append({"field": name, "message": f"The value {value!r} is not a valid status."})
        merge = body.get("merge_fields", {})
        if not isinstance(merge, dict):
            errors.append({"field": "merge_fields", "message": "merge_fields must be an object."})
            merge = {}
        for tag, value in merge.items():
            if tag not in MERGE_FIELDS:
                errors.append(
                    {"field": f"merge_fields.{tag}", "message": f"Your merge fields were invalid: {tag}."}
                )
            elif not isinstance(value, str):
                errors.append(
                    {"field": f"merge_fields.{tag}", "message": "Merge field values must be strings."}
                )
        if errors:
            raise MailchimpError(
                400,
                "Invalid Resource",
                "The resource submitted could not be validated. For field-specific details, see the 'errors' array.",
                errors,
            )
        assert isinstance(email, str)
        if not _EMAIL_RE.match(email):
            raise MailchimpError(
                400, "Invalid Resource", f"{email} looks fake or invalid, please enter a real email address."
            )
        if subscriber_hash(email) != member_hash:
            raise MailchimpError(
                400,
                "Invalid Resource",
                "The subscriber hash in the path is not the MD5 hash of the lowercase email_address.",
                [{"field": "email_address", "message": "does not match the subscriber hash"}],
            )
        member = self._members.get(member_hash)
        if member is None:
            if status_if_new is None and status is None:
                raise MailchimpError(
                    400,
                    "Invalid Resource",
                    "The resource submitted could not be validated. For field-specific details, see the 'errors' array.",
                    [{"field": "status_if_new", "message": "This value should not be blank."}],
                )
            member = self._new_member(email, str(status or status_if_new), merge)
        else:
            target = (
                status if status is not None else (status_if_new if member.status == "archived" else None)
            )
            self._change(
                member,
                merge_fields=merge,
                status=target,
                language=body.get("language"),
                vip=body.get("vip"),
            )
        return self._render(member)

    def _new_member(self, email: str, status: str, merge: dict[str, Any]) -> Member:
        now = self.now()
        self._next_web_id += 1
        fields = {tag: "" for tag in ("FNAME", "LNAME", "PHONE", "BIRTHDAY")}
        fields.update(merge)
        member = Member(
            email=email,
            status=status,
            merge_fields=fields,
            signup=now,
            opt_in=now,
            last_changed=now,
            unique_email_id=uuid.uuid4().hex[:10],
            contact_id=uuid.uuid4().hex,
            web_id=self._next_web_id,
        )
        self._members[member.id] = member
        return member

    def _change(
        self,
        member: Member,
        *,
        merge_fields: dict[str, Any] | None = None,
        status: str | None = None,
        language: Any = None,
        vip: Any = None,
    ) -> None:
        changed = False
        for tag, value in (merge_fields or {}).items():
            if member.merge_fields.get(tag) != value:
                member.merge_fields[tag] = value
                changed = True
        if status is not None and status != member.status:
            member.status, changed = status, True
        if isinstance(language, str) and language != member.language:
            member.language, changed = language, True
        if isinstance(vip, bool) and vip != member.vip:
            member.vip, changed = vip, True
        if changed:  # an upsert that changes nothing is invisible
            member.last_changed = max(self.now(), member.last_changed + 1)

    def _archive(self, member_hash: str) -> None:
        member = self._members.get(member_hash)
        if member is None or member.status == "archived":
            raise MailchimpError(404, "Resource Not Found", "The requested resource could not be found.")
        member.previous_status = member.status
        self._change(member, status="archived")
