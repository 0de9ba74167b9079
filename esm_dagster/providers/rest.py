"""The declarative REST provider (`provider_name: rest`): a JSON API described by the mapping's rules.

For systems without a provider module (a booking platform, an ERP) the mapping's `x-rest` block
(`providers.rest_config`) says everything this module needs: base path, auth, per stream the path,
where the records are, the primary key, the cursor field and its format, a server-side window if
the API has one, and the paginator; per write the method, path template, body shape and the
idempotency the API offers. A new system then needs configuration, not code.

Paginators, each resumable from `Page.next_cursor` (what to request next) and guarded against a
server that hands back the same position twice:

- `cursor`: a token in the body (`data.next_cursor`) sent back as a query parameter;
- `offset`: `offset` / `limit`, done at a short page or the body's total;
- `page`: page numbers, done at a short page or the body's page count;
- `link_header`: RFC 8288 `Link: <...>; rel="next"`;
- `next_url`: the next page's URL in the body (`links.next`).

Next-page URLs are followed on the mapping's own origin only (`JsonHttpProvider.url_for`), and a
query-string key the server echoes into them is dropped before the URL becomes a stored cursor.

Windows: with `window`, `window_start` / `window_end` go to the server in its format; the records
are filtered on `cursor_field` client-side as well (start inclusive, end exclusive), so a server
that ignores the parameters, or reads its bounds inclusively, still yields exactly the window.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

import httpx

from esm_dagster.providers.auth import BasicAuth, BearerAuth, HeaderKeyAuth, QueryKeyAuth
from esm_dagster.providers.base import CursorGuard, Page, StreamSpec, WriteSpec
from esm_dagster.providers.context import ProviderConfigError, ProviderContext
from esm_dagster.providers.http import HttpResult, JsonHttpProvider, QueryValue
from esm_dagster.providers.rest_config import (
    ApiKeyAuth,
    BasicCredentialsAuth,
    BearerTokenAuth,
    CursorPaginator,
    LinkHeaderPaginator,
    NextUrlPaginator,
    OffsetPaginator,
    PagePaginator,
    RestConfig,
    StreamConfig,
    TimeFormat,
    WriteConfig,
    rest_config_of,
)
from esm_dagster.rules.schema import MappingRules, RulesError, parse_rules
from esm_dagster.transport import TransportPolicy

_LINK_PART = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]+)*)")
_NEXT_REL = re.compile(r"""\brel\s*=\s*"?([^";]*)"?""", re.IGNORECASE)


def lookup(body: Any, path: str | None) -> Any:
    """The value at dotted `path` inside `body` (None when any step is missing); `body` for None."""
    if path is None:
        return body
    value = body
    for step in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(step)
    return value


def next_link(header: str | None) -> str | None:
    """The `rel="next"` target of a `Link` header, or None."""
    if not header:
        return None
    for match in _LINK_PART.finditer(header):
        rel = _NEXT_REL.search(match.group(2) or "")
        if rel and "next" in rel.group(1).lower().split():
            return match.group(1).strip()
    return None


def format_time(seconds: int, fmt: TimeFormat) -> str:
    if fmt == "unix_s":
        return str(int(seconds))
    if fmt == "unix_ms":
        return str(int(seconds) * 1000)
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).isoformat()


def parse_time(value: Any, fmt: TimeFormat) -> float | None:
    """Unix seconds of a cursor value in `fmt`, or None when it is absent or unreadable."""
    if value is None or isinstance(value, bool):
        return None
    try:
        if fmt == "iso":
            if not isinstance(value, str):
                return None
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number / 1000 if fmt == "unix_ms" else number


class RestProvider(JsonHttpProvider):
    name: ClassVar[str] = "rest"
    label: ClassVar[str] = "REST API"
    # Without rules nothing is known; with them, `x-rest.auth` decides (`auth_types` below).
    AUTH_TYPES: ClassVar[frozenset[str]] = frozenset({"api_key", "oauth2", "basic_auth", "jwt"})

    @classmethod
    def auth_types(cls, rules: MappingRules | None = None) -> frozenset[str]:
        """`x-rest.auth` names what goes on the wire; the auth types that can mean it:
        a key is `api_key`; a bearer token is a key or an issued (OAuth2 / JWT) token; Basic is
        `basic_auth`; `none` takes any. No `webhook`: there is no verifier for a configured API."""
        if rules is None:
            return cls.AUTH_TYPES
        auth = rest_config_of(rules).auth
        if isinstance(auth, ApiKeyAuth):
            return frozenset({"api_key"})
        if isinstance(auth, BearerTokenAuth):
            return frozenset({"api_key", "oauth2", "jwt"})
        if isinstance(auth, BasicCredentialsAuth):
            return frozenset({"basic_auth"})
        return cls.AUTH_TYPES

    @classmethod
    def credential_shapes(
        cls, auth_type: str, rules: MappingRules | None = None
    ) -> tuple[tuple[str, ...], ...]:
        """The credential fields `x-rest.auth` names (`credential`, `username` / `password`)."""
        if rules is None:
            return ()
        fields = rest_config_of(rules).credential_fields()
        return (fields,) if fields else ()

    @classmethod
    def stream_names(cls, rules: MappingRules | None = None) -> list[str]:
        if rules is None:
            raise ProviderConfigError("provider rest takes its streams from mapping_rules.x-rest")
        config = rest_config_of(rules)
        chosen = rules.sync.stream or next(iter(config.streams))
        stream = config.streams.get(chosen)
        if stream is not None and stream.primary_key != rules.sync.key:
            raise ProviderConfigError(
                f"x-rest.streams.{chosen}.primary_key {stream.primary_key!r} differs from sync_config.key "
                f"{rules.sync.key!r}: the loader keys rows by sync_config.key; make them the same"
            )
        return list(config.streams)

    @classmethod
    def from_context(cls, ctx: ProviderContext) -> Self:
        try:
            rules = parse_rules(ctx.row.mapping_rules)
        except RulesError as exc:
            raise ProviderConfigError(f"mapping {ctx.mapping!r}: mapping_rules.{exc}") from None
        try:
            config = rest_config_of(rules)
        except ProviderConfigError as exc:
            raise ProviderConfigError(f"mapping {ctx.mapping!r}: mapping_rules.{exc}") from None
        return cls(ctx.base_url, config, auth=_auth(config, ctx), policy=ctx.policy)

    def __init__(
        self,
        base_url: str,
        config: RestConfig,
        *,
        auth: httpx.Auth | None,
        policy: TransportPolicy,
        client: httpx.Client | None = None,
    ) -> None:
        self.config = config
        super().__init__(
            base_url.rstrip("/") + config.base_path,
            auth=auth,
            policy=policy,
            client=client,
            headers=config.headers,
        )
        self._streams = tuple(
            StreamSpec(
                name=name,
                default_target=None,
                supports_created_window=stream.window is not None,
                primary_key=stream.primary_key,
                cursor_field=stream.cursor_field,
                max_page_size=stream.max_page_size,
                description=stream.description or f"GET {stream.path}",
            )
            for name, stream in config.streams.items()
        )
        self._writes = tuple(
            WriteSpec(
                name=name,
                operation=write.operation,
                idempotency=write.idempotency,
                description=write.description or f"{write.method} {write.path}",
            )
            for name, write in config.writes.items()
        )
        auth_config = config.auth
        self._query_key = (
            auth_config.name if isinstance(auth_config, ApiKeyAuth) and auth_config.in_ == "query" else None
        )

    def streams(self) -> Sequence[StreamSpec]:
        return self._streams

    def write_spec(self, name: str) -> WriteSpec:
        for spec in self._writes:
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in self._writes) or "none"
        raise ValueError(f"{self.name} has no write {name!r} (writes: {known})")

    # ---- errors ---------------------------------------------------------------------------------
    def error_details(self, body: Any) -> tuple[str | None, str | None]:
        code = lookup(body, self.config.errors.code_path)
        message = lookup(body, self.config.errors.message_path)
        if code is None and message is None:
            return super().error_details(body)
        return (
            str(code) if isinstance(code, str | int) else None,
            str(message) if isinstance(message, str) else None,
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
        config = self.config.streams[stream]
        params: dict[str, QueryValue] = dict(config.params)
        if config.window is not None:
            if window_start is not None:
                params[config.window.start_param] = format_time(window_start, config.window.format)
            if window_end is not None and config.window.end_param:
                params[config.window.end_param] = format_time(window_end, config.window.format)
        size = min(page_size, spec.max_page_size)
        return self._pages(stream, config, params, size, cursor, (window_start, window_end))

    def _pages(
        self,
        stream: str,
        config: StreamConfig,
        params: dict[str, QueryValue],
        size: int,
        cursor: str | None,
        window: tuple[int | None, int | None],
    ) -> Iterator[Page]:
        guard = CursorGuard(self.name, stream)
        if cursor is not None:
            guard.check(cursor)
        position = cursor
        while True:
            path, query = self._page_request(config, params, size, position)
            result = self.request("GET", path, params=query)
            records = self._records(result, config, path)
            after = self._next_position(config, result, records, size, position, path)
            if after is not None:
                guard.check(after)
            kept = [r for r in records if _in_window(r, config, window)]
            yield Page(kept, has_more=after is not None, next_cursor=after, request_seconds=result.seconds)
            if after is None:
                return
            position = after

    def _page_request(
        self, config: StreamConfig, params: dict[str, QueryValue], size: int, position: str | None
    ) -> tuple[str, dict[str, QueryValue] | None]:
        paginator = config.paginator
        query = dict(params)
        if paginator.size_param:
            query[paginator.size_param] = str(size)
        if isinstance(paginator, LinkHeaderPaginator | NextUrlPaginator) and position is not None:
            return position, None  # the server's own URL carries every parameter
        if isinstance(paginator, CursorPaginator) and position is not None:
            query[paginator.cursor_param] = position
        elif isinstance(paginator, OffsetPaginator):
            query[paginator.offset_param] = str(_number(position, 0, "offset"))
        elif isinstance(paginator, PagePaginator):
            query[paginator.page_param] = str(_number(position, paginator.first_page, "page"))
        return config.path, query

    def _records(self, result: HttpResult, config: StreamConfig, path: str) -> list[dict[str, Any]]:
        records = lookup(result.body, config.record_path)
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            where = f"at {config.record_path!r}" if config.record_path else "as the body"
            raise self.protocol_error(
                f"the answer has no list of records {where}", "unexpected_response", "GET", self.url_for(path)
            )
        return records

    def _next_position(
        self,
        config: StreamConfig,
        result: HttpResult,
        records: list[dict[str, Any]],
        size: int,
        position: str | None,
        path: str,
    ) -> str | None:
        paginator = config.paginator
        if isinstance(paginator, CursorPaginator):
            token = lookup(result.body, paginator.cursor_path)
            return str(token) if isinstance(token, str | int) and str(token) else None
        if isinstance(paginator, OffsetPaginator):
            if not records:
                return None
            after = _number(position, 0, "offset") + len(records)
            total = lookup(result.body, paginator.total_path)
            if paginator.total_path is not None and isinstance(total, int):
                return str(after) if after < total else None
            return str(after) if len(records) >= size else None
        if isinstance(paginator, PagePaginator):
            if not records:
                return None
            page = _number(position, paginator.first_page, "page")
            pages = lookup(result.body, paginator.total_pages_path)
            if paginator.total_pages_path is not None and isinstance(pages, int):
                return str(page + 1) if page + 1 <= pages - (1 - paginator.first_page) else None
            return str(page + 1) if len(records) >= size else None
        if isinstance(paginator, LinkHeaderPaginator):
            return self._next_url(next_link(result.headers.get("link")), path)
        if isinstance(paginator, NextUrlPaginator):
            target = lookup(result.body, paginator.next_path)
            return self._next_url(target if isinstance(target, str) and target else None, path)
        return None

    def _next_url(self, target: str | None, current: str) -> str | None:
        """The next page's URL, absolute, on the mapping's origin, without an echoed query key."""
        if target is None:
            return None
        url = urljoin(self.url_for(current), target)
        self.url_for(url)  # refuses another origin before it is ever stored as a cursor
        if self._query_key is None:
            return url
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != self._query_key]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def probe(self) -> float:
        config = next(iter(self.config.streams.values()))
        path, query = self._page_request(config, dict(config.params), 1, None)
        return self.request("GET", path, params=query).seconds

    # ---- writes ---------------------------------------------------------------------------------
    def write(
        self, name: str, records: Sequence[dict[str, Any]], *, idempotency_keys: Sequence[str]
    ) -> list[dict[str, Any]]:
        """One call per record, as `x-rest.writes.<name>` describes it; the written record each."""
        spec = self.write_spec(name)
        if len(records) != len(idempotency_keys):
            raise ValueError("one idempotency key per record")
        if len(records) > spec.max_batch:
            raise ValueError(f"{name} takes at most {spec.max_batch} record per call")
        config = self.config.writes[name]
        return [self._write_one(name, config, r, k) for r, k in zip(records, idempotency_keys, strict=True)]

    def _write_one(self, name: str, config: WriteConfig, record: dict[str, Any], key: str) -> dict[str, Any]:
        if not isinstance(key, str) or not 1 <= len(key) <= 255:
            raise ValueError("idempotency key must be a string of 1 to 255 characters")
        body = dict(record)
        values: dict[str, str] = {}
        for field in config.path_fields:
            if body.get(field) in (None, ""):
                raise ValueError(f"{name}: the record needs {field!r} for the path {config.path}")
            values[field] = quote(str(body.pop(field)), safe="")
        path = config.path.format(**values)
        if config.marker_field:
            body[config.marker_field] = key
        payload: dict[str, Any] = {config.envelope: body} if config.envelope else body
        headers = {config.idempotency_header: key} if config.idempotency_header else {}
        json_body: Any = None
        form: dict[str, str] | None = None
        if config.body == "json":
            json_body = payload
        elif config.body == "form":
            form = _flat_form(payload, name)
        result = self.request(
            config.method,
            path,
            json=json_body,
            data=form,
            headers=headers,
            retry=config.idempotency != "none",  # a blind resend could write twice
        )
        written = lookup(result.body, config.response_path)
        return written if isinstance(written, dict) else {}

    def find_written(self, name: str, record: dict[str, Any], idempotency_key: str) -> dict[str, Any] | None:
        config = self.config.writes.get(name)
        if config is None or config.idempotency != "none" or config.find is None or not config.marker_field:
            return None
        result = self.request("GET", config.find.path, params={config.find.param: idempotency_key})
        found = lookup(result.body, config.find.record_path)
        if not isinstance(found, list):
            return None
        for candidate in found:
            if isinstance(candidate, dict) and candidate.get(config.marker_field) == idempotency_key:
                return candidate
        return None


def _auth(config: RestConfig, ctx: ProviderContext) -> httpx.Auth | None:
    auth = config.auth
    if isinstance(auth, ApiKeyAuth):
        key = ctx.secret(auth.credential)
        if auth.in_ == "query":
            return QueryKeyAuth(auth.name, key)
        return HeaderKeyAuth(auth.name, key, auth.prefix)
    if isinstance(auth, BearerTokenAuth):
        return BearerAuth(ctx.secret(auth.credential))
    if isinstance(auth, BasicCredentialsAuth):
        return BasicAuth(ctx.secret(auth.username), ctx.secret(auth.password))
    return None


def _number(position: str | None, default: int, what: str) -> int:
    if position is None:
        return default
    try:
        value = int(position)
    except ValueError:
        raise ValueError(f"cursor {position!r} is not a {what} number") from None
    if value < 0:
        raise ValueError(f"cursor {position!r} is not a {what} number")
    return value


def _in_window(record: dict[str, Any], config: StreamConfig, window: tuple[int | None, int | None]) -> bool:
    start, end = window
    if config.cursor_field is None or (start is None and end is None):
        return True
    when = parse_time(lookup(record, config.cursor_field), config.cursor_format)
    if when is None:
        return True  # no readable cursor value: the rules decide about the record, not the window
    return (start is None or when >= start) and (end is None or when < end)


def _flat_form(payload: dict[str, Any], name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in payload.items():
        if isinstance(value, dict | list):
            raise ValueError(f"{name}: a form body takes flat values; {key!r} is nested (use body: json)")
        out[str(key)] = (
            "" if value is None else ("true" if value is True else "false" if value is False else str(value))
        )
    return out
