"""Telegram Bot API: the `updates` stream (`getUpdates`) and `sendMessage` (PROVIDERS.md §6).

**The token is in the path** (`/bot<TOKEN>/<method>`), so every URL this client builds, logs or puts
in an error holds the placeholder `/bot***/` instead; `TokenPathTransport` swaps the real token in
on a copy of the request just before it goes on the wire. httpx logs, retries, exceptions and
`ProviderError`s all see the request object with the placeholder.

**`getUpdates` is a queue, not a list.** An update is confirmed, and dropped by Telegram for good,
as soon as `getUpdates` is called with an `offset` above its `update_id`. So:

- the cursor is that offset (`last update_id + 1`), and a page is confirmed only by asking for the
  next one. `consuming_reads` tells the engine to load each page before it asks for the next and
  not to read ahead; a run killed in between resumes at the offset of the last stored page, and
  nothing it had not stored has been confirmed;
- the last page of a run is not confirmed (no extra call is made for that): the next run reads it
  again, and the upsert by `update_id` makes the repeat harmless;
- a window cuts on the update's message `date` (unix seconds). An update at or after `window_end`
  ends the stream *before* it is confirmed, so a bounded run never throws away what it did not
  keep; updates older than `window_start` are skipped (and confirmed).

**`sendMessage` has no idempotency key and no way to look back.** A bot cannot list the messages
it sent (`getUpdates` delivers what others send; there is no history method for bots), so
`find_written` cannot tell whether a send whose answer was lost was delivered. It raises a
non-retryable error that needs a person (look at the chat, then resend or skip) instead of
returning None, which would make the caller send a second copy.

Errors are `{ok:false, error_code, description, parameters}`: 429 carries
`parameters.retry_after` (seconds); 401 (an invalid token) and 404 (a malformed token; this client
only calls methods that exist) are auth errors; 403 (the bot was blocked, kicked) is a client error
for that chat; 409 means a webhook is set (getUpdates cannot be used while it is);
`parameters.migrate_to_chat_id` names the supergroup a group became.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

import httpx

from esm_dagster.providers.base import CursorGuard, ErrorClass, Page, ProviderError, StreamSpec, WriteSpec
from esm_dagster.providers.context import ProviderConfigError, ProviderContext
from esm_dagster.providers.http import HttpResult, JsonHttpProvider, default_classification
from esm_dagster.security.endpoints import EndpointPolicy
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy
from esm_dagster.transport.client import GuardedTransport

MAX_PAGE_SIZE = 100  # getUpdates limit is 1..100
TOKEN_SHAPE = re.compile(r"^\d+:[A-Za-z0-9_-]+$")
PLACEHOLDER = "/bot***/"
_BOT_PATH = re.compile(r"/bot[^/]")
# The update kinds that carry a message with a `date`, in the order they are looked for.
MESSAGE_KINDS = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_message",
    "edited_business_message",
)


class TokenPathTransport(httpx.BaseTransport):
    """Puts the bot token into `/bot***/` on a copy of each request, at the last moment.

    The request httpx logs and attaches to responses and errors keeps the placeholder; only the
    copy handed to the socket layer holds the token.
    """

    def __init__(self, token: Secret, inner: httpx.BaseTransport) -> None:
        self._token = token
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raw = request.url.raw_path
        marker = PLACEHOLDER.encode()
        if marker not in raw:
            raise httpx.UnsupportedProtocol("Telegram requests must go to /bot***/<method>")
        real_path = raw.replace(marker, f"/bot{self._token.reveal()}/".encode(), 1)
        wire = httpx.Request(
            request.method,
            request.url.copy_with(raw_path=real_path),
            headers=request.headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        return self._inner.handle_request(wire)

    def close(self) -> None:
        self._inner.close()

    def __repr__(self) -> str:
        return "TokenPathTransport(***)"


def update_date(update: dict[str, Any]) -> int | None:
    """The `date` of the message an update carries (unix seconds), or None (callback queries...)."""
    for kind in MESSAGE_KINDS:
        message = update.get(kind)
        if isinstance(message, dict):
            date = message.get("date")
            if isinstance(date, int) and not isinstance(date, bool):
                return date
    return None


class TelegramProvider(JsonHttpProvider):
    name: ClassVar[str] = "telegram"
    label: ClassVar[str] = "Telegram"
    consuming_reads: ClassVar[bool] = True
    STREAMS: ClassVar[tuple[StreamSpec, ...]] = (
        StreamSpec(
            name="updates",
            default_target="message",
            supports_created_window=False,
            primary_key="update_id",
            cursor_field="message.date",
            max_page_size=MAX_PAGE_SIZE,
            description="getUpdates, offset = last update_id + 1 (confirms what came before)",
        ),
    )
    WRITES: ClassVar[tuple[WriteSpec, ...]] = (
        WriteSpec(
            name="messages",
            operation="send",
            idempotency="none",
            max_batch=1,
            description="sendMessage (chat_id, text); a lost answer needs a person (no lookup exists)",
        ),
    )
    IDENTITY_FIELDS: ClassVar[tuple[str, ...]] = ("bot_token", "token")
    AUTH_TYPES: ClassVar[frozenset[str]] = frozenset({"api_key", "webhook"})
    CREDENTIAL_SHAPES: ClassVar[Mapping[str, tuple[tuple[str, ...], ...]]] = {
        "api_key": (("bot_token|token",),),
        "webhook": (("webhook_secret|secret_token",),),
    }

    @classmethod
    def from_context(cls, ctx: ProviderContext) -> Self:
        token = ctx.secret("bot_token", "token")
        if not TOKEN_SHAPE.match(token.reveal()):
            raise ProviderConfigError(
                f"mapping {ctx.mapping!r}: credentials.bot_token is not a Telegram bot token "
                "(<bot id>:<secret>, as BotFather gives it)"
            )
        return cls(ctx.base_url, token=token, policy=ctx.policy)

    def __init__(
        self,
        base_url: str,
        *,
        token: Secret,
        policy: TransportPolicy,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not isinstance(token, Secret) or not token:
            raise TypeError("token must be a non-empty esm_dagster.security.secret.Secret")
        if _BOT_PATH.search(urlsplit(base_url).path):
            # Never echo it: the path would hold the token, which belongs in credentials.bot_token.
            raise ValueError("Telegram base_url must be the API host only (no /bot... path)")
        # The endpoint guard (checked, pinned, TLS-verified) under the token-in-path rewriting.
        inner = transport or GuardedTransport(
            policy.endpoints if policy.endpoints is not None else EndpointPolicy.from_env(),
            provider="telegram",
            secrets=(token,),
        )
        client = httpx.Client(
            transport=TokenPathTransport(token, inner),
            timeout=httpx.Timeout(policy.timeout_seconds),
            follow_redirects=False,
            trust_env=False,
        )
        # The secret half alone must be masked too: a percent-encoded token no longer contains ":".
        halves = tuple(Secret(part) for part in token.reveal().split(":", 1)[1:] if part)
        super().__init__(base_url, auth=None, policy=policy, client=client, secrets=(token, *halves))
        self._own_client = client

    def __repr__(self) -> str:
        return f"TelegramProvider(base_url={self.base_url!r}, token=***)"

    def close(self) -> None:
        self._own_client.close()

    def call(self, method: str, payload: dict[str, Any], *, retry: bool = True) -> Any:
        """One Bot API method (JSON body); its `result`."""
        result = self.request("POST", f"{PLACEHOLDER}{method}", json=payload, retry=retry)
        return result.body["result"]

    # ---- reads ----------------------------------------------------------------------------------
    def iter_pages(
        self,
        stream: str,
        *,
        window_start: int | None = None,
        window_end: int | None = None,
        page_size: int = MAX_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Iterator[Page]:
        """Updates oldest first; `cursor` is the offset an earlier page handed back."""
        spec = self.stream(stream)
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        offset: int | None = None
        if cursor is not None:
            if not cursor.isdigit():
                raise ValueError(f"telegram updates: cursor {cursor!r} is not an update offset")
            offset = int(cursor)
        return self._pages(spec, min(page_size, spec.max_page_size), offset, window_start, window_end)

    def _pages(
        self,
        spec: StreamSpec,
        limit: int,
        offset: int | None,
        window_start: int | None,
        window_end: int | None,
    ) -> Iterator[Page]:
        guard = CursorGuard(self.name, spec.name)
        if offset is not None:
            guard.check(str(offset))
        while True:
            payload: dict[str, Any] = {"limit": limit, "timeout": 0}
            if offset is not None:
                payload["offset"] = offset
            result = self.request("POST", f"{PLACEHOLDER}getUpdates", json=payload)
            updates = self._updates(result.body)
            records: list[dict[str, Any]] = []
            reached_end = False
            for update in updates:
                when = update_date(update)
                if window_end is not None and when is not None and when >= window_end:
                    reached_end = True  # leave it, and what follows, unconfirmed
                    break
                if window_start is None or when is None or when >= window_start:
                    records.append(update)
                offset = update["update_id"] + 1
            has_more = len(updates) == limit and not reached_end
            next_cursor = str(offset) if has_more and offset is not None else None
            if next_cursor is not None:
                guard.check(next_cursor)
            yield Page(
                records=records, has_more=has_more, next_cursor=next_cursor, request_seconds=result.seconds
            )
            if not has_more:
                return

    def _updates(self, body: Any) -> list[dict[str, Any]]:
        updates = body.get("result") if isinstance(body, dict) else None
        if not isinstance(updates, list) or not all(
            isinstance(u, dict) and isinstance(u.get("update_id"), int) for u in updates
        ):
            raise self.protocol_error(
                "getUpdates answered without a list of updates with update_id",
                "unexpected_response",
                "POST",
                self.base_url + PLACEHOLDER + "getUpdates",
            )
        return updates

    def probe(self) -> float:
        return self.request("POST", f"{PLACEHOLDER}getMe", json={}).seconds

    # ---- writes ---------------------------------------------------------------------------------
    def write(
        self, name: str, records: Sequence[dict[str, Any]], *, idempotency_keys: Sequence[str]
    ) -> list[dict[str, Any]]:
        spec = self.write_spec(name)
        if len(records) != len(idempotency_keys):
            raise ValueError("one idempotency key per record")
        if len(records) > spec.max_batch:
            raise ValueError(f"telegram {name}: at most {spec.max_batch} record per write")
        return [self.call("sendMessage", self.send_body(record), retry=False) for record in records]

    def send_body(self, record: dict[str, Any]) -> dict[str, Any]:
        """The `sendMessage` JSON for a record (`chat_id`, `text`, optional `parse_mode`)."""
        chat_id, text = record.get("chat_id"), record.get("text")
        if chat_id in (None, "") or isinstance(chat_id, bool):
            raise ValueError("telegram messages: the record has no chat_id")
        if not isinstance(text, str) or not text:
            raise ValueError(f"telegram messages to chat {chat_id!r}: the record has no text")
        body: dict[str, Any] = {"chat_id": chat_id, "text": text}
        for optional in ("parse_mode", "reply_to_message_id", "disable_notification"):
            if record.get(optional) not in (None, ""):
                body[optional] = record[optional]
        return body

    def find_written(self, name: str, record: dict[str, Any], idempotency_key: str) -> dict[str, Any] | None:
        """Always raises: the Bot API cannot show a bot the messages it sent (see the module doc)."""
        self.write_spec(name)
        raise ProviderError(
            f"a sendMessage to chat {record.get('chat_id')!r} lost its answer and the Bot API offers no "
            "way to read back what a bot sent, so whether it was delivered cannot be checked; a person "
            "must look at the chat and then resend or skip the record (it is not sent again blindly)",
            provider=self.name,
            error_class="client",
            code="send_unverifiable",
            retryable=False,
            secrets=self._secrets,
        )

    # ---- errors ---------------------------------------------------------------------------------
    def check_success(self, result: HttpResult, method: str, url: str) -> None:
        body = result.body
        if not isinstance(body, dict) or body.get("ok") is not True or "result" not in body:
            raise self.protocol_error(
                "Telegram answered without ok=true and a result", "unexpected_response", method, url
            )

    def http_error(self, response: httpx.Response, method: str, url: str) -> ProviderError:
        error_class, retryable = default_classification(response.status_code)
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        body: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        description = body.get("description")
        found = body.get("parameters")
        parameters: dict[str, Any] = found if isinstance(found, dict) else {}
        retry_after = parameters.get("retry_after")
        status = response.status_code
        klass: ErrorClass = error_class
        if status == 404:
            klass, retryable = "auth", False  # a malformed token; this client calls only real methods
        elif status == 403:
            klass, retryable = "client", False  # blocked or kicked: about the chat, not the token
        elif status == 409:
            klass, retryable = "client", False
        if "migrate_to_chat_id" in parameters:
            description = f"{description} (the group is now chat {parameters['migrate_to_chat_id']})"
        code = body.get("error_code", status)
        return self.error_from_response(
            response,
            method,
            url,
            error_class=klass,
            retryable=retryable,
            code=str(code),
            message=str(description) if description is not None else None,
            retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
        )
