"""Mixpanel: raw export as the `events` stream, `/import` as the write (PROVIDERS.md §10).

- Two hosts: ingestion (`api_endpoint`, e.g. `https://api.mixpanel.com`) and export
  (`credentials.export_url`, by default the data host that goes with the ingestion host:
  `api[-eu|-in].mixpanel.com` -> `data[-eu|-in].mixpanel.com`). Both get the same Basic auth.
- Auth: a service account (`username`, `secret`) with `project_id` in the query, or the legacy
  project secret (`api_secret`) as the Basic user name with an empty password.
- Export filters on dates only (inclusive, in the project's timezone, `credentials.project_timezone`,
  UTC by default as for projects made since 2023) and answers JSON lines. A window is turned into the
  dates that cover it, read in chunks of `CHUNK_DAYS` days (the export allows 60 queries an hour), and
  cut exactly on `properties.time` here. The resume cursor is the last date fully read. Without a
  window start, reading starts at `sync_config.start_date`: the export has no "from the beginning".
- Import takes at most 2000 events per request with `strict=1`; `$insert_id` is derived from the
  idempotency key, so Mixpanel's de-duplication makes a retried import safe (idempotency "key").
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from esm_dagster.providers.auth import BasicAuth
from esm_dagster.providers.base import CursorGuard, Page, ProviderError, StreamSpec, WriteSpec
from esm_dagster.providers.context import ProviderConfigError, ProviderContext
from esm_dagster.providers.http import normalise_base_url
from esm_dagster.providers.jsonlines import JsonLinesProvider, batches
from esm_dagster.rules.schema import RulesError, parse_rules
from esm_dagster.security.endpoints import is_loopback
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy

MAX_IMPORT_EVENTS = 2000
CHUNK_DAYS = 7
EXPORT_PATH = "/api/2.0/export"
_DATA_HOSTS = {
    "api.mixpanel.com": "data.mixpanel.com",
    "api-eu.mixpanel.com": "data-eu.mixpanel.com",
    "api-in.mixpanel.com": "data-in.mixpanel.com",
}


def insert_id(idempotency_key: str) -> str:
    """The `$insert_id` for a key: 32 hex characters, the same for the same key."""
    return hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:32]


def default_export_url(base_url: str) -> str | None:
    """The export host that goes with an ingestion host; loopback (an emulator) serves both."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if host in _DATA_HOSTS:
        return f"https://{_DATA_HOSTS[host]}"
    if is_loopback(host):
        return f"{parts.scheme}://{parts.netloc}"
    return None


class MixpanelProvider(JsonLinesProvider):
    name: ClassVar[str] = "mixpanel"
    label: ClassVar[str] = "Mixpanel"
    STREAMS: ClassVar[tuple[StreamSpec, ...]] = (
        StreamSpec(
            name="events",
            default_target=None,
            supports_created_window=True,
            primary_key="properties.$insert_id",
            cursor_field="properties.time",
            max_page_size=MAX_IMPORT_EVENTS,
            description="GET data host /api/2.0/export by date range (JSONL), cut on properties.time",
        ),
    )
    WRITES: ClassVar[tuple[WriteSpec, ...]] = (
        WriteSpec(
            name="import",
            operation="create",
            idempotency="key",
            max_batch=MAX_IMPORT_EVENTS,
            description="POST /import?strict=1; $insert_id from the idempotency key de-duplicates",
        ),
    )
    IDENTITY_FIELDS: ClassVar[tuple[str, ...]] = ("username", "project_id", "api_secret")
    # basic_auth: a service account (+ project id) or the project secret as user name; api_key:
    # the project secret alone.
    AUTH_TYPES: ClassVar[frozenset[str]] = frozenset({"basic_auth", "api_key"})
    CREDENTIAL_SHAPES: ClassVar[Mapping[str, tuple[tuple[str, ...], ...]]] = {
        "basic_auth": (("username", "secret", "project_id"), ("api_secret",)),
        "api_key": (("api_secret",),),
    }

    @classmethod
    def from_context(cls, ctx: ProviderContext) -> Self:
        username = ctx.value("username")
        secret = ctx.optional_secret("secret")
        api_secret = ctx.optional_secret("api_secret")
        project_id = ctx.value("project_id")
        if username and secret:
            if not project_id:
                raise ProviderConfigError(
                    f"mapping {ctx.mapping!r}: credentials.project_id is missing (a service account needs it)"
                )
            auth = BasicAuth(username, secret)
        elif api_secret:
            auth = BasicAuth(api_secret, Secret(""))
        else:
            raise ProviderConfigError(
                f"mapping {ctx.mapping!r}: credentials.username and credentials.secret (a service account) "
                "or credentials.api_secret (the project secret) are missing"
            )
        export_url = ctx.value("export_url") or default_export_url(ctx.base_url)
        if export_url is None:
            raise ProviderConfigError(
                f"mapping {ctx.mapping!r}: credentials.export_url is missing and cannot be derived from "
                f"api_endpoint {ctx.base_url!r}"
            )
        zone = ctx.value("project_timezone", default="UTC") or "UTC"
        start_date: dt.date | None = None
        if ctx.row.mapping_rules:
            try:
                start_date = parse_rules(ctx.row.mapping_rules).sync.start_date
            except RulesError:
                start_date = None  # the engine reports invalid rules itself
        try:
            return cls(
                ctx.base_url,
                auth=auth,
                policy=ctx.policy,
                export_url=export_url,
                project_id=project_id,
                timezone=zone,
                start_date=start_date,
            )
        except (ValueError, ZoneInfoNotFoundError) as exc:
            raise ProviderConfigError(f"mapping {ctx.mapping!r}: {exc}") from None

    def __init__(
        self,
        base_url: str,
        *,
        auth: BasicAuth,
        policy: TransportPolicy,
        export_url: str,
        project_id: str | None = None,
        timezone: str = "UTC",
        start_date: dt.date | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, auth=auth, policy=policy, client=client)
        self.export_url = normalise_base_url(export_url, label="Mixpanel export_url")
        self.project_id = project_id
        try:
            self.timezone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"credentials.project_timezone {timezone!r} is not a known timezone") from None
        self.start_date = start_date

    # ---- errors ---------------------------------------------------------------------------------
    def error_details(self, body: Any) -> tuple[str | None, str | None]:
        """Mixpanel's `{code,error,status,failed_records}`: the message, with the first failed record."""
        if not isinstance(body, dict) or "error" not in body:
            return super().error_details(body)
        message = str(body.get("error"))
        failed = body.get("failed_records")
        if isinstance(failed, list) and failed and isinstance(failed[0], dict):
            first = failed[0]
            message += f" ({len(failed)} failed; first: index {first.get('index')}, {first.get('field')}: "
            message += f"{first.get('message')})"
        status = body.get("status")
        return (str(status) if isinstance(status, str) else None), message

    # ---- streams --------------------------------------------------------------------------------
    def iter_pages(
        self,
        stream: str,
        *,
        window_start: int | None = None,
        window_end: int | None = None,
        page_size: int = 1000,
        cursor: str | None = None,
    ) -> Iterator[Page]:
        """Date chunks of at most `CHUNK_DAYS` days, each handed out `page_size` events at a time.

        `cursor` is the last date already read in full (`YYYY-MM-DD`); reading resumes the day after.
        """
        spec = self.stream(stream)
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        first = self._first_date(window_start)
        last = (
            self._date_of(window_end - 1) if window_end is not None else dt.datetime.now(self.timezone).date()
        )
        guard = CursorGuard(self.name, stream)
        if cursor is not None:
            try:
                done = dt.date.fromisoformat(cursor)
            except ValueError:
                raise ValueError(f"a Mixpanel events cursor is a date (YYYY-MM-DD), not {cursor!r}") from None
            guard.check(cursor)
            first = max(first, done + dt.timedelta(days=1))
        return self._chunks(
            spec, first, last, window_start, window_end, min(page_size, spec.max_page_size), guard, cursor
        )

    def _chunks(
        self,
        spec: StreamSpec,
        first: dt.date,
        last: dt.date,
        start: int | None,
        end: int | None,
        size: int,
        guard: CursorGuard,
        cursor: str | None,
    ) -> Iterator[Page]:
        if first > last:
            yield Page(records=[], has_more=False, next_cursor=None, request_seconds=0.0)
            return
        done = cursor
        while first <= last:
            chunk_end = min(last, first + dt.timedelta(days=CHUNK_DAYS - 1))
            events, seconds = self._export(first, chunk_end)
            more_chunks = chunk_end < last
            boundary = chunk_end.isoformat() if more_chunks else None
            if boundary is not None:
                guard.check(boundary)
            for records, final in batches((e for e in events if _in_window(e, start, end)), size):
                # Mid-chunk pages resume at the chunk's start: a date is the finest cursor there is.
                yield Page(
                    records=records,
                    has_more=more_chunks or not final,
                    next_cursor=boundary if final else done,
                    request_seconds=seconds,
                )
                seconds = 0.0
            done = boundary
            first = chunk_end + dt.timedelta(days=1)

    def _export(
        self, first: dt.date, last: dt.date, limit: int | None = None
    ) -> tuple[Iterator[dict[str, Any]], float]:
        """The export's events for the dates `first`..`last` (inclusive), streamed line by line."""
        params: dict[str, str | int] = {"from_date": first.isoformat(), "to_date": last.isoformat()}
        if self.project_id:
            params["project_id"] = self.project_id
        if limit is not None:
            params["limit"] = limit
        url = self.export_url + EXPORT_PATH
        events, seconds = self.stream_json_lines(url, params=params, what=f"GET {EXPORT_PATH}")
        return (self._event(e, url) for e in events), seconds

    def _event(self, event: dict[str, Any], url: str) -> dict[str, Any]:
        if not isinstance(event.get("properties"), dict):
            raise self.protocol_error("an export line is not an event object", "unexpected_response", url=url)
        return event

    def _first_date(self, window_start: int | None) -> dt.date:
        if window_start is not None:
            return self._date_of(window_start)
        if self.start_date is None:
            raise ProviderError(
                "Mixpanel's export reads date ranges only: set sync_config.start_date for a run without a window",
                provider=self.name,
                error_class="validation",
                code="start_date_required",
            )
        return self.start_date

    def _date_of(self, seconds: int) -> dt.date:
        return dt.datetime.fromtimestamp(int(seconds), self.timezone).date()

    def probe(self) -> float:
        today = dt.datetime.now(self.timezone).date()
        events, seconds = self._export(today, today, limit=1)
        for _ in events:  # read (at most one line) so the connection is released
            pass
        return seconds

    # ---- writes ---------------------------------------------------------------------------------
    def write(
        self, name: str, records: Sequence[dict[str, Any]], *, idempotency_keys: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Import one batch; per event `{"$insert_id", "status": "imported"|"failed", ...}`.

        With strict=1 Mixpanel imports the valid events of a batch and lists the others: those come
        back as `failed` with Mixpanel's field and message rather than as an exception.
        """
        spec = self.write_spec(name)
        if len(records) != len(idempotency_keys):
            raise ValueError("one idempotency key per record")
        if len(records) > spec.max_batch:
            raise ValueError(f"{name} takes at most {spec.max_batch} events per call")
        if not records:
            return []
        events = []
        for index, (record, key) in enumerate(zip(records, idempotency_keys, strict=True)):
            properties = record.get("properties")
            if not isinstance(record.get("event"), str) or not isinstance(properties, dict):
                raise ValueError(f"record {index}: a Mixpanel event needs a string `event` and `properties`")
            events.append({**record, "properties": {**properties, "$insert_id": insert_id(key)}})
        params: dict[str, str | int] = {"strict": "1"}
        if self.project_id:
            params["project_id"] = self.project_id
        result = self.request("POST", "/import", params=params, json=events, ok=(200, 400))
        body = result.body if isinstance(result.body, dict) else {}
        failed = body.get("failed_records")
        if result.status == 400 and not isinstance(failed, list):
            code, message = self.error_details(body)
            raise ProviderError(
                "Mixpanel answered HTTP 400",
                provider=self.name,
                error_class="validation",
                status=400,
                code=code,
                provider_message=message,
                method="POST",
                url=self.url_for("/import"),
                secrets=self._secrets,
            )
        problems = {f.get("index"): f for f in failed or [] if isinstance(f, dict)}
        answers = []
        for index, event in enumerate(events):
            answer: dict[str, Any] = {"$insert_id": event["properties"]["$insert_id"], "status": "imported"}
            if index in problems:
                answer.update(
                    status="failed",
                    field=problems[index].get("field"),
                    message=problems[index].get("message"),
                )
            answers.append(answer)
        return answers


def _in_window(event: dict[str, Any], start: int | None, end: int | None) -> bool:
    moment = event["properties"].get("time")
    if isinstance(moment, bool) or not isinstance(moment, (int, float)):
        return start is None and end is None
    seconds = moment / 1000 if moment > 1e11 else moment
    return (start is None or seconds >= start) and (end is None or seconds < end)
