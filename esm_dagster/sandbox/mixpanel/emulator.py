"""A stateful Mixpanel emulator on loopback: `/import` and the raw `/api/2.0/export` (PROVIDERS.md §10).

In production the two live on different hosts (`api.mixpanel.com`, `data.mixpanel.com`); this one
server answers both paths, so a mapping points its `api_endpoint` and its `export_url` at it.

- Auth: HTTP Basic with a service account (`username:secret`) plus `?project_id=`, or the project
  secret as the user name with an empty password. A wrong credential is a 401 with Mixpanel's
  `{code,error,status}` body, never echoing it.
- `POST /import?strict=1&project_id=N`: a JSON array or NDJSON body (gzip allowed), at most 2000
  events and 10 MB. Each event needs `event` and `properties.time` (seconds or milliseconds),
  `properties.distinct_id`; events before 1971 or more than an hour ahead are refused. With strict=1
  a partly invalid batch is a 400 that lists `failed_records` and imports the rest. Events are
  de-duplicated on (`event`, `distinct_id`, `time`, `$insert_id`): a retried import adds nothing.
- `GET /api/2.0/export?from_date=&to_date=` (inclusive dates in the project's timezone), optional
  `event=["A","B"]` and `limit`; JSON lines ordered by time. `where` is not implemented (400).
- 429 `{code:429,error,status}` on injected rate limits; PROVIDERS.md documents no Retry-After for
  Mixpanel, so none is sent. 5xx with the same body shape.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import gzip
import random
import re
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import orjson

from esm_dagster.sandbox._http import Fault, LoopbackEmulator, Request, Response
from esm_dagster.sandbox.mixpanel.data import DEFAULT_END, DEFAULT_START, seed_events
from esm_dagster.security.redact import redact_text

MAX_EVENTS = 2000
MAX_BYTES = 10 * 1024 * 1024
EARLIEST = 31_536_000  # 1971-01-01
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_STATUS_TEXT = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class MixpanelError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"code": status, "error": message, "status": _STATUS_TEXT.get(status, "Error"), **extra}


def _key(event: Mapping[str, Any]) -> tuple[str, str, int, str]:
    props = event["properties"]
    return (
        event["event"],
        str(props.get("distinct_id")),
        int(props["time"]),
        str(props.get("$insert_id", "")),
    )


class MixpanelEmulator(LoopbackEmulator):
    def __init__(
        self,
        *,
        service_accounts: Mapping[str, str],
        project_id: int,
        project_secret: str | None = None,
        events: int = 200,
        seed: int = 11,
        start: int = DEFAULT_START,
        end: int = DEFAULT_END,
        timezone: str = "UTC",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        if not service_accounts and not project_secret:
            raise ValueError("give at least one service account or a project secret")
        self._accounts = {u.encode(): s.encode() for u, s in service_accounts.items()}
        self._project_secret = project_secret.encode() if project_secret else None
        self._redact = [*service_accounts.values(), *([project_secret] if project_secret else [])]
        self.project_id = int(project_id)
        self.timezone = ZoneInfo(timezone)
        self._lock = threading.Lock()
        rng = random.Random(seed)
        self._events: dict[tuple[str, str, int, str], dict[str, Any]] = {}
        for event in seed_events(rng, events, start, end):
            self._events[_key(event)] = event
        self.import_requests = 0

    # ---- Python API ---------------------------------------------------------------------------
    @property
    def events(self) -> list[dict[str, Any]]:
        """Every stored event (de-duplicated), ordered by time."""
        with self._lock:
            return sorted((orjson.loads(orjson.dumps(e)) for e in self._events.values()), key=_order)

    # ---- LoopbackEmulator hooks ---------------------------------------------------------------
    def redact_query(self, query: str) -> str:
        return redact_text(query, self._redact)

    def handle(self, request: Request) -> Response:
        try:
            params = {k: v[-1] for k, v in parse_qs(request.query, keep_blank_values=True).items()}
            self._authenticate(request, params)
            if request.method == "POST" and request.path == "/import":
                return self._import(request, params)
            if request.method == "GET" and request.path == "/api/2.0/export":
                return self._export(params)
            raise MixpanelError(404, f"no route for {request.method} {request.path}")
        except MixpanelError as error:
            return Response(error.status, orjson.dumps(error.body))

    def render_fault(self, request: Request, fault: Fault) -> Response:
        if fault.kind == "rate_limit":
            error = MixpanelError(429, "too many requests; slow down")
        else:
            error = MixpanelError(fault.status, "internal error" if fault.status >= 500 else "injected error")
        return Response(error.status, orjson.dumps(error.body))

    def internal_error(self, request: Request) -> Response:
        return Response(500, orjson.dumps(MixpanelError(500, "internal error").body))

    # ---- auth ---------------------------------------------------------------------------------
    def _authenticate(self, request: Request, params: dict[str, str]) -> None:
        header = (request.header("authorization") or "").strip()
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            raise MixpanelError(401, "Unable to authenticate request")
        try:
            user, _, password = base64.b64decode(encoded, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            raise MixpanelError(401, "Unable to authenticate request") from None
        expected = self._accounts.get(user)
        if expected is not None and secrets.compare_digest(password, expected):
            project = params.get("project_id")
            if project is None:
                raise MixpanelError(400, "project_id is required when authenticating with a service account")
            if project != str(self.project_id):
                raise MixpanelError(403, "the service account has no access to this project")
            credential = user.decode() + ":" + password.decode()
        elif (
            self._project_secret is not None
            and secrets.compare_digest(user, self._project_secret)
            and not password
        ):
            credential = user.decode()
        else:
            raise MixpanelError(401, "Unable to authenticate request")
        if self.faults.credential_expired(credential):
            raise MixpanelError(401, "Unable to authenticate request")

    # ---- import -------------------------------------------------------------------------------
    def _import(self, request: Request, params: dict[str, str]) -> Response:
        raw = request.body
        if (request.header("content-encoding") or "").lower() == "gzip":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError):
                raise MixpanelError(400, "the body is not valid gzip") from None
        if len(raw) > MAX_BYTES:
            raise MixpanelError(413, "request body is larger than 10 MB")
        content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        try:
            if content_type == "application/x-ndjson":
                events = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
            else:
                events = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise MixpanelError(400, "unable to parse the body as JSON") from None
        if not isinstance(events, list):
            raise MixpanelError(400, "the body must be a JSON array of events")
        if len(events) > MAX_EVENTS:
            raise MixpanelError(400, f"a request takes at most {MAX_EVENTS} events")
        strict = params.get("strict") == "1"
        failed: list[dict[str, Any]] = []
        accepted: list[dict[str, Any]] = []
        now = time.time()
        for index, event in enumerate(events):
            problem = _problem(event, now)
            if problem is None:
                accepted.append(_normalised(event))
            else:
                insert_id = event.get("properties", {}).get("$insert_id") if isinstance(event, dict) else None
                failed.append(
                    {"index": index, "insert_id": insert_id, "field": problem[0], "message": problem[1]}
                )
        processed = int(now * 1000)
        with self._lock:
            self.import_requests += 1
            for event in accepted:
                event["properties"]["mp_processing_time_ms"] = processed
                self._events[_key(event)] = event
        if failed and strict:
            error = MixpanelError(
                400,
                "some data points in the request failed validation",
                num_records_imported=len(accepted),
                failed_records=failed,
            )
            return Response(400, orjson.dumps(error.body))
        return Response(
            200, orjson.dumps({"code": 200, "num_records_imported": len(accepted), "status": "OK"})
        )

    # ---- export -------------------------------------------------------------------------------
    def _export(self, params: dict[str, str]) -> Response:
        first, last = self._date(params, "from_date"), self._date(params, "to_date")
        if last < first:
            raise MixpanelError(400, "to_date must not be before from_date")
        if "where" in params:
            raise MixpanelError(400, "the emulator does not implement `where`")
        names: set[str] | None = None
        if params.get("event"):
            try:
                listed = orjson.loads(params["event"])
            except orjson.JSONDecodeError:
                listed = None
            if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
                raise MixpanelError(400, "event must be a JSON array of event names")
            names = set(listed)
        limit: int | None = None
        if params.get("limit"):
            if not params["limit"].isdigit() or not 1 <= int(params["limit"]) <= 100_000:
                raise MixpanelError(400, "limit must be an integer from 1 to 100000")
            limit = int(params["limit"])
        start = dt.datetime.combine(first, dt.time(), self.timezone).timestamp()
        end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), self.timezone).timestamp()
        with self._lock:
            rows = [
                e
                for e in self._events.values()
                if start <= e["properties"]["time"] < end and (names is None or e["event"] in names)
            ]
            rows.sort(key=_order)
            body = b"".join(orjson.dumps(e) + b"\n" for e in rows[:limit])
        return Response(200, body, content_type="application/x-ndjson")

    @staticmethod
    def _date(params: dict[str, str], name: str) -> dt.date:
        value = params.get(name)
        if not value or not _DATE.match(value):
            raise MixpanelError(400, f"{name} is required, as YYYY-MM-DD")
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise MixpanelError(400, f"{name} {value!r} is not a date") from None


def _order(event: Mapping[str, Any]) -> tuple[int, str]:
    return (event["properties"]["time"], str(event["properties"].get("$insert_id", "")))


def _problem(event: Any, now: float) -> tuple[str, str] | None:
    """(field, message) of what makes `event` invalid, or None."""
    if not isinstance(event, dict):
        return "event", "an event must be an object"
    if not isinstance(event.get("event"), str) or not event["event"]:
        return "event", "event name is required"
    props = event.get("properties")
    if not isinstance(props, dict):
        return "properties", "properties must be an object"
    moment = props.get("time")
    if isinstance(moment, bool) or not isinstance(moment, (int, float)):
        return "properties.time", "'properties.time' is invalid: must be a number"
    seconds = moment / 1000 if moment > 1e11 else moment  # milliseconds are accepted too
    if seconds < EARLIEST:
        return "properties.time", "'properties.time' is invalid: events must be after 1971-01-01"
    if seconds > now + 3600:
        return (
            "properties.time",
            "'properties.time' is invalid: events must not be more than 1 hour in the future",
        )
    if "distinct_id" not in props:
        return "properties.distinct_id", "'properties.distinct_id' is required"
    return None


def _normalised(event: dict[str, Any]) -> dict[str, Any]:
    """The event as export shows it: `time` in whole seconds."""
    props = dict(event["properties"])
    moment = props["time"]
    props["time"] = int(moment / 1000 if moment > 1e11 else moment)
    return {"event": event["event"], "properties": props}
