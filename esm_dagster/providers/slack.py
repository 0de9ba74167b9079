"""Slack Web API: the `users` and `conversations` streams and `chat.postMessage` (PROVIDERS.md §8).

- Auth: `Authorization: Bearer xoxb-...` (credentials `bot_token`, or `token` / `access_token`).
- Reads: `users.list` and `conversations.list` page with `cursor=<response_metadata.next_cursor>`;
  an absent or empty `next_cursor` is the end. Neither list filters by time, so a window is cut here
  on `updated` (users) or `created` (conversations), unix seconds; every page is still read.
- Application errors come back as HTTP 200 `{ok: false, error}` and are classified here:
  `not_authed` / `invalid_auth` / `token_revoked` / `token_expired` / `account_inactive` /
  `missing_scope` / `no_permission` are auth errors (a person must act), `ratelimited` a rate limit,
  `internal_error` / `fatal_error` / `service_unavailable` / `request_timeout` retryable server
  errors, argument errors validation, anything else a client error. An HTTP 429 carries
  `Retry-After` (seconds), which the transport policy honours.
- `chat.postMessage` takes no idempotency key: a post is made once (`retry=False`) with a marker
  derived from the write's idempotency key at the end of its text (`providers.markers`), and after a
  lost answer `find_written` reads the channel's last day of `conversations.history` for it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Self

import httpx

from esm_dagster.providers.auth import BearerAuth
from esm_dagster.providers.base import CursorGuard, ErrorClass, Page, ProviderError, StreamSpec, WriteSpec
from esm_dagster.providers.context import ProviderContext
from esm_dagster.providers.http import HttpResult, JsonHttpProvider
from esm_dagster.providers.markers import carries_marker, with_marker
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy

AUTH_ERRORS = frozenset(
    {
        "not_authed",
        "invalid_auth",
        "token_revoked",
        "token_expired",
        "account_inactive",
        "missing_scope",
        "no_permission",
        "not_allowed_token_type",
    }
)
RATE_LIMIT_ERRORS = frozenset({"ratelimited", "rate_limited"})
SERVER_ERRORS = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})
VALIDATION_ERRORS = frozenset(
    {
        "invalid_arguments",
        "invalid_cursor",
        "invalid_limit",
        "limit_required",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "msg_too_long",
        "no_text",
        "too_many_attachments",
        "invalid_blocks",
        "invalid_arg_name",
        "invalid_array_arg",
        "invalid_charset",
        "invalid_form_data",
        "invalid_post_type",
        "missing_post_type",
        "invalid_json",
        "json_not_object",
        "invalid_ts_latest",
        "invalid_ts_oldest",
    }
)
# How far back find_written reads a channel's history for a lost post.
FIND_WINDOW_SECONDS = 86_400
HISTORY_PAGE = 200


def classify(error: str) -> tuple[ErrorClass, bool]:
    """(error class, retryable) of a Slack `error` string."""
    if error in AUTH_ERRORS:
        return "auth", False
    if error in RATE_LIMIT_ERRORS:
        return "rate_limit", True
    if error in SERVER_ERRORS:
        return "server", True
    if error in VALIDATION_ERRORS:
        return "validation", False
    return "client", False


class SlackProvider(JsonHttpProvider):
    name: ClassVar[str] = "slack"
    label: ClassVar[str] = "Slack"
    BASE_SUFFIX: ClassVar[str] = "/api"
    STREAMS: ClassVar[tuple[StreamSpec, ...]] = (
        StreamSpec(
            name="users",
            default_target="user",
            supports_created_window=False,
            primary_key="id",
            cursor_field="updated",
            max_page_size=200,
            description="users.list, cursor paging; window cut on updated",
        ),
        StreamSpec(
            name="conversations",
            default_target="conversation",
            supports_created_window=False,
            primary_key="id",
            cursor_field="created",
            max_page_size=1000,
            description="conversations.list, cursor paging; window cut on created",
        ),
    )
    WRITES: ClassVar[tuple[WriteSpec, ...]] = (
        WriteSpec(
            name="messages",
            operation="send",
            idempotency="none",
            max_batch=1,
            description="chat.postMessage (channel, text[, thread_ts]); text carries a marker",
        ),
    )
    IDENTITY_FIELDS: ClassVar[tuple[str, ...]] = ("bot_token", "token", "access_token")
    # A bot token is what Slack's OAuth install hands out: `oauth2` and `api_key` both mean one.
    AUTH_TYPES: ClassVar[frozenset[str]] = frozenset({"api_key", "oauth2", "webhook"})
    CREDENTIAL_SHAPES: ClassVar[Mapping[str, tuple[tuple[str, ...], ...]]] = {
        "api_key": (("bot_token|token|access_token",),),
        "oauth2": (("bot_token|token|access_token",),),
        "webhook": (("signing_secret|webhook_secret",),),
    }
    _LISTS: ClassVar[dict[str, tuple[str, str]]] = {
        "users": ("users.list", "members"),
        "conversations": ("conversations.list", "channels"),
    }

    @classmethod
    def from_context(cls, ctx: ProviderContext) -> Self:
        return cls(
            ctx.base_url,
            token=ctx.secret("bot_token", "token", "access_token"),
            policy=ctx.policy,
            conversation_types=ctx.value("conversation_types"),
        )

    def __init__(
        self,
        base_url: str,
        *,
        token: Secret,
        policy: TransportPolicy,
        client: httpx.Client | None = None,
        conversation_types: str | None = None,
    ) -> None:
        if not isinstance(token, Secret) or not token:
            raise TypeError("token must be a non-empty esm_dagster.security.secret.Secret")
        super().__init__(base_url, auth=BearerAuth(token), policy=policy, client=client)
        self.conversation_types = conversation_types

    def _path(self, method: str) -> str:
        return f"/api/{method}"

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
        """Pages in Slack's order; `cursor` is an earlier page's `next_cursor`."""
        spec = self.stream(stream)
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        method, key = self._LISTS[spec.name]
        params: dict[str, str] = {"limit": str(min(page_size, spec.max_page_size))}
        if spec.name == "conversations" and self.conversation_types:
            params["types"] = self.conversation_types
        return self._pages(spec, method, key, params, cursor, window_start, window_end)

    def _pages(
        self,
        spec: StreamSpec,
        method: str,
        key: str,
        params: dict[str, str],
        cursor: str | None,
        window_start: int | None,
        window_end: int | None,
    ) -> Iterator[Page]:
        guard = CursorGuard(self.name, spec.name)
        if cursor is not None:
            guard.check(cursor)
        field = spec.cursor_field or "created"
        while True:
            query = dict(params)
            if cursor:
                query["cursor"] = cursor
            result = self.request("GET", self._path(method), params=query)
            items = result.body.get(key)
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise self.protocol_error(f"{method} answered without a {key} array", "unexpected_response")
            next_cursor = _next_cursor(result.body)
            if next_cursor is not None:
                guard.check(next_cursor)
            records = [i for i in items if _in_window(i.get(field), window_start, window_end)]
            yield Page(
                records=records,
                has_more=next_cursor is not None,
                next_cursor=next_cursor,
                request_seconds=result.seconds,
            )
            if next_cursor is None:
                return
            cursor = next_cursor

    def probe(self) -> float:
        return self.request("GET", self._path("conversations.list"), params={"limit": "1"}).seconds

    # ---- writes ---------------------------------------------------------------------------------
    def write(
        self, name: str, records: Sequence[dict[str, Any]], *, idempotency_keys: Sequence[str]
    ) -> list[dict[str, Any]]:
        spec = self.write_spec(name)
        if len(records) != len(idempotency_keys):
            raise ValueError("one idempotency key per record")
        if len(records) > spec.max_batch:
            raise ValueError(f"slack {name}: at most {spec.max_batch} record per write")
        out = []
        for record, key in zip(records, idempotency_keys, strict=True):
            body = self.post_body(record, key)
            result = self.request("POST", self._path("chat.postMessage"), json=body, retry=False)
            out.append(result.body)
        return out

    def post_body(self, record: dict[str, Any], idempotency_key: str) -> dict[str, str]:
        """The `chat.postMessage` JSON for a record (`channel`, `text` + marker, optional `thread_ts`)."""
        channel, text = record.get("channel"), record.get("text")
        if not isinstance(channel, str) or not channel:
            raise ValueError("slack messages: the record has no channel")
        if not isinstance(text, str) or not text:
            raise ValueError(f"slack messages to {channel!r}: the record has no text")
        body = {"channel": channel, "text": with_marker(text, idempotency_key)}
        if record.get("thread_ts"):
            body["thread_ts"] = str(record["thread_ts"])
        return body

    def find_written(self, name: str, record: dict[str, Any], idempotency_key: str) -> dict[str, Any] | None:
        """The message an earlier post left in the channel (marker in its text, last day), or None."""
        self.write_spec(name)
        channel = record.get("channel")
        if not isinstance(channel, str) or not channel:
            raise ValueError("slack messages: the record has no channel")
        params = {
            "channel": channel,
            "oldest": f"{int(time.time()) - FIND_WINDOW_SECONDS}.000000",
            "limit": str(HISTORY_PAGE),
        }
        guard = CursorGuard(self.name, "conversations.history")
        cursor: str | None = None
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            result = self.request("GET", self._path("conversations.history"), params=query)
            messages = result.body.get("messages")
            if not isinstance(messages, list):
                raise self.protocol_error(
                    "conversations.history answered without messages", "unexpected_response"
                )
            for message in messages:
                if isinstance(message, dict) and carries_marker(message.get("text"), idempotency_key):
                    return {**message, "channel": channel}
            cursor = _next_cursor(result.body)
            if cursor is None:
                return None
            guard.check(cursor)

    # ---- errors ---------------------------------------------------------------------------------
    def check_success(self, result: HttpResult, method: str, url: str) -> None:
        body = result.body
        if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
            raise self.protocol_error("Slack answered without an ok flag", "unexpected_response", method, url)
        if body["ok"]:
            return
        error = str(body.get("error") or "unknown_error")
        error_class, retryable = classify(error)
        raise ProviderError(
            f"Slack answered ok=false ({error})",
            provider=self.name,
            error_class=error_class,
            status=result.status,
            code=error,
            provider_message=_warning_text(body),
            retryable=retryable,
            retry_after=None,
            method=method,
            url=url,
            secrets=self._secrets,
        )

    def http_error(self, response: httpx.Response, method: str, url: str) -> ProviderError:
        error = warning = None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            error = body["error"]
            warning = _warning_text(body)
        error_class: ErrorClass
        if response.status_code == 429:
            error_class, retryable = "rate_limit", True
        elif response.status_code >= 500:
            error_class, retryable = "server", True
        elif error is not None:
            error_class, retryable = classify(error)
        else:
            error_class, retryable = (
                ("auth", False) if response.status_code in (401, 403) else ("client", False)
            )
        return self.error_from_response(
            response,
            method,
            url,
            error_class=error_class,
            retryable=retryable,
            code=error,
            message=warning,
        )


def _next_cursor(body: dict[str, Any]) -> str | None:
    metadata = body.get("response_metadata")
    value = metadata.get("next_cursor") if isinstance(metadata, dict) else None
    return value if isinstance(value, str) and value else None


def _in_window(value: Any, start: int | None, end: int | None) -> bool:
    if start is None and end is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True  # no time on the record: it cannot be placed, so it is not dropped
    return (start is None or value >= start) and (end is None or value < end)


def _warning_text(body: dict[str, Any]) -> str | None:
    metadata = body.get("response_metadata")
    messages = metadata.get("messages") if isinstance(metadata, dict) else None
    if isinstance(messages, list) and messages:
        return "; ".join(str(m) for m in messages[:3])
    return None
