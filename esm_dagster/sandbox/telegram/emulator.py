"""A stateful Telegram Bot API emulator on loopback.

What it implements, as the Bot API does (PROVIDERS.md §6; Telegram publishes no OpenAPI document):

- `/bot<TOKEN>/<method>`, GET or POST, parameters in the query string, a form or a JSON body.
  A malformed token (not `<digits>:<secret>`) or an unknown method is 404 `Not Found`; a
  well-formed wrong token, or one expired by the fault switch, is 401 `Unauthorized`.
- `getUpdates(offset, limit 1..100, timeout, allowed_updates)`: the queue of unconfirmed updates,
  oldest first. Calling it with an `offset` confirms, and drops for good, every update below it; a
  negative offset keeps only the last `-offset` updates. While a webhook is set (`setWebhook`) it
  is 409 Conflict. `timeout` (long polling) is accepted and not waited on.
- `sendMessage(chat_id, text, ...)`: 400 `chat not found` for an unknown chat, `message text is
  empty`, `message is too long` over 4096 characters; 403 for a chat that blocked the bot. The
  sent message is returned and kept (`sent_messages()`), but, as on Telegram, no Bot API method
  shows it to the bot again. There is no idempotency: the same call twice sends twice.
- `getMe`, `deleteWebhook(drop_pending_updates)`, `getWebhookInfo` (`url`, `pending_update_count`).
- `setWebhook(url, secret_token, drop_pending_updates)`: from then on each update is pushed (the
  ones waiting first), one Update JSON per POST with `X-Telegram-Bot-Api-Secret-Token`, from a
  background thread; an update leaves the queue once the receiver answered 2xx. Telegram retries
  a failed delivery and "gives up after a reasonable amount of attempts" (Bot API docs; not in
  PROVIDERS.md): the emulator makes 3 tries, seconds apart, and an update it gave up on stays
  pending (`getWebhookInfo`, or `getUpdates` after `deleteWebhook`). Only a loopback URL gets
  deliveries: another one is set but never called (updates stay pending), since the emulator never
  leaves the host. The secret token must be 1-256 characters of `A-Z a-z 0-9 _ -` (PROVIDERS.md
  §6); the request log masks it.
- Answers are `{ok:true,result}` or `{ok:false,error_code,description[,parameters]}`; `faults`: 429
  with `parameters.retry_after` (and the "retry after N" description), 5xx, delays, disconnects,
  lost responses after a send committed.

The request log masks the token in the path (`/bot***/getUpdates`) and in queries.
Not implemented: files, keyboards, inline mode, edits, chats other than private ones.
"""

from __future__ import annotations

import copy
import hmac
import json
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs

import httpx

from esm_dagster.sandbox._http import Fault, Request, Response
from esm_dagster.sandbox.telegram import data
from esm_dagster.sandbox.webhook_sender import PushingEmulator, RetryPolicy
from esm_dagster.sandbox.webhook_signers import telegram_headers
from esm_dagster.security.endpoints import is_loopback
from esm_dagster.security.redact import redact_text
from esm_dagster.security.secret import Secret

MAX_LIMIT = 100
MAX_TEXT = 4096
_PATH = re.compile(r"^/bot([^/]*)/([A-Za-z]+)$")
_TOKEN = re.compile(r"^(\d+):[A-Za-z0-9_-]{20,}$")
_PATH_TOKEN = re.compile(r"^/bot[^/]*")
METHODS = ("getUpdates", "sendMessage", "getMe", "setWebhook", "deleteWebhook", "getWebhookInfo")
_SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_SECRET_PARAM = re.compile(r"(?i)(secret_token=)[^&]*")
TELEGRAM_RETRY = RetryPolicy(attempts=3, first_wait=0.5, max_wait=5.0)


class TelegramError(Exception):
    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


class TelegramEmulator(PushingEmulator):
    def __init__(
        self,
        *,
        tokens: Sequence[str],
        updates: int = 60,
        seed: int = 7,
        start: int = data.DEFAULT_START,
        end: int = data.DEFAULT_END,
        bot_username: str = "padel_club_bot",
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        if not tokens or not all(_TOKEN.match(t) for t in tokens):
            raise ValueError(
                "give at least one token of the form <bot id>:<secret>: digits, a colon, then at "
                "least 20 letters, digits, '_' or '-' (like a real bot token)"
            )
        self._tokens = list(tokens)
        self.clock = clock
        self.bot_username = bot_username
        self._lock = threading.Lock()
        self._queue: list[dict[str, Any]] = data.seed_updates(updates, seed, start, end)
        self._next_update_id = (self._queue[-1]["update_id"] + 1) if self._queue else data.FIRST_UPDATE_ID
        self._chats: dict[int, dict[str, Any]] = {
            u["message"]["chat"]["id"]: u["message"]["chat"] for u in self._queue
        }
        self._blocked: set[int] = set()
        self._sent: list[dict[str, Any]] = []
        self._webhook: str | None = None
        self._secret_token: Secret | None = None
        self.webhook_retry = TELEGRAM_RETRY  # tests shorten it
        self.confirmed = 0  # updates confirmed (dropped) so far

    # ---- Python API -----------------------------------------------------------------------------
    def pending_updates(self) -> list[dict[str, Any]]:
        """The unconfirmed updates, oldest first (what getUpdates without an offset would return)."""
        with self._lock:
            return copy.deepcopy(self._queue)

    def chats(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._chats.values()))

    def add_update(self, chat_id: int, text: str, date: int | None = None) -> dict[str, Any]:
        """A member writes to the bot: a new update at the end of the queue."""
        with self._lock:
            chat = self._chats[chat_id]
            update_id = self._next_update_id
            self._next_update_id += 1
            message = {
                "message_id": 5000 + update_id % 100000,
                "from": data.sender(chat),
                "chat": dict(chat),
                "date": int(self.clock()) if date is None else date,
                "text": text,
            }
            update = {"update_id": update_id, "message": message}
            self._queue.append(update)
            self._push_update(update)
            return copy.deepcopy(update)

    def block(self, chat_id: int) -> None:
        """The member blocks the bot: sends to them get 403 from now on."""
        with self._lock:
            self._blocked.add(chat_id)

    def sent_messages(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        """What the bot sent (Telegram shows this to the chat, not to the bot)."""
        with self._lock:
            return [copy.deepcopy(m) for m in self._sent if chat_id is None or m["chat"]["id"] == chat_id]

    # ---- LoopbackEmulator hooks -----------------------------------------------------------------
    def redact_path(self, path: str) -> str:
        return _PATH_TOKEN.sub("/bot***", path)

    def redact_query(self, query: str) -> str:
        # The secret half alone is enough to mask a token in any encoding (`:` becomes `%3A`).
        masked = redact_text(query, [*self._tokens, *(t.split(":", 1)[1] for t in self._tokens)])
        return _SECRET_PARAM.sub(r"\1***", masked)

    def handle(self, request: Request) -> Response:
        try:
            method = self._authenticate(request)
            params = self._params(request)
            return self._json(200, {"ok": True, "result": self._route(method, params)})
        except TelegramError as error:
            return self._error(error)

    def render_fault(self, request: Request, fault: Fault) -> Response:
        if fault.kind == "rate_limit":
            wait = max(1, math.ceil(fault.retry_after if fault.retry_after is not None else 1))
            return self._error(
                TelegramError(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
            )
        if fault.status == 502:
            return self._error(TelegramError(502, "Bad Gateway"))
        if fault.status >= 500:
            return self._error(TelegramError(fault.status, "Internal Server Error"))
        return self._error(TelegramError(fault.status, f"Bad Request: injected error {fault.status}"))

    def internal_error(self, request: Request) -> Response:
        return self._error(TelegramError(500, "Internal Server Error"))

    # ---- plumbing -------------------------------------------------------------------------------
    @staticmethod
    def _json(status: int, payload: Any) -> Response:
        return Response(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"))

    def _error(self, error: TelegramError) -> Response:
        payload: dict[str, Any] = {"ok": False, "error_code": error.code, "description": error.description}
        if error.parameters:
            payload["parameters"] = error.parameters
        return self._json(error.code, payload)

    def _authenticate(self, request: Request) -> str:
        match = _PATH.match(request.path)
        if match is None or not _TOKEN.match(match.group(1)) or match.group(2) not in METHODS:
            raise TelegramError(404, "Not Found")
        token = match.group(1)
        matched = False
        for accepted in self._tokens:
            matched |= hmac.compare_digest(token.encode(), accepted.encode())
        if not matched or self.faults.credential_expired(token):
            raise TelegramError(401, "Unauthorized")
        return match.group(2)

    @staticmethod
    def _params(request: Request) -> dict[str, Any]:
        params: dict[str, Any] = {
            k: v[-1] for k, v in parse_qs(request.query, keep_blank_values=True).items()
        }
        if request.body:
            content_type = (request.header("content-type") or "").lower()
            if content_type.startswith("application/json"):
                try:
                    body = json.loads(request.body)
                except ValueError:
                    raise TelegramError(400, "Bad Request: can't parse JSON") from None
                if not isinstance(body, dict):
                    raise TelegramError(400, "Bad Request: JSON object expected")
                params.update(body)
            else:
                form = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
                params.update({k: v[-1] for k, v in form.items()})
        return params

    def _route(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getUpdates":
            return self._get_updates(params)
        if method == "sendMessage":
            return self._send_message(params)
        if method == "getMe":
            bot_id = int(self._tokens[0].split(":", 1)[0])
            return {
                "id": bot_id,
                "is_bot": True,
                "first_name": "Padel Club",
                "username": self.bot_username,
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        if method == "setWebhook":
            return self._set_webhook(params)
        if method == "getWebhookInfo":
            with self._lock:
                return {
                    "url": self._webhook or "",
                    "has_custom_certificate": False,
                    "pending_update_count": len(self._queue) if self._webhook else 0,
                }
        self.stop_webhooks()  # deleteWebhook
        with self._lock:
            self._webhook = None
            self._secret_token = None
            if str(params.get("drop_pending_updates") or "").lower() in ("true", "1"):
                self.confirmed += len(self._queue)
                self._queue.clear()
        return True

    # ---- webhook --------------------------------------------------------------------------------
    def _set_webhook(self, params: dict[str, Any]) -> bool:
        url = str(params.get("url") or "")
        token = params.get("secret_token")
        if not url:  # an empty url removes the webhook, as deleteWebhook does
            self.stop_webhooks()
            with self._lock:
                self._webhook, self._secret_token = None, None
            return True
        if token is not None and not (isinstance(token, str) and _SECRET_TOKEN.match(token)):
            raise TelegramError(400, "Bad Request: secret token contains unallowed characters")
        try:
            host = httpx.URL(url).host
        except httpx.InvalidURL:
            raise TelegramError(400, "Bad Request: bad webhook: invalid URL") from None
        if is_loopback(host):
            self._open_sender(url, self.webhook_retry)
        else:  # set (getUpdates is refused), but the emulator never sends off the host
            self.stop_webhooks()
        with self._lock:
            self._webhook = url
            self._secret_token = Secret(token) if token else None
            if str(params.get("drop_pending_updates") or "").lower() in ("true", "1"):
                self.confirmed += len(self._queue)
                self._queue.clear()
            for update in self._queue:  # what waits is pushed first, oldest first
                self._push_update(update)
        return True

    def _push_update(self, update: dict[str, Any]) -> None:
        """Queue one update for the webhook (call under the lock); it leaves the queue once delivered."""
        if self._webhook is None:
            return
        update_id = int(update["update_id"])
        token = self._secret_token

        def sign(body: bytes, attempt: int) -> dict[str, str]:
            return {"Content-Type": "application/json", **(telegram_headers(token) if token else {})}

        def delivered() -> None:
            with self._lock:
                before = len(self._queue)
                self._queue = [u for u in self._queue if u["update_id"] != update_id]
                self.confirmed += before - len(self._queue)

        body = json.dumps(update, ensure_ascii=False).encode("utf-8")
        self._push(f"telegram:{update_id}", body, sign, delivered=delivered)

    @staticmethod
    def _integer(params: dict[str, Any], name: str, default: int | None) -> int | None:
        value = params.get(name)
        if value in (None, ""):
            return default
        if isinstance(value, bool):
            raise TelegramError(400, f"Bad Request: invalid {name} specified")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise TelegramError(400, f"Bad Request: invalid {name} specified") from None

    def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = self._integer(params, "offset", None)
        limit = self._integer(params, "limit", MAX_LIMIT) or MAX_LIMIT
        limit = max(1, min(limit, MAX_LIMIT))
        with self._lock:
            if self._webhook is not None:
                raise TelegramError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; "
                    "use deleteWebhook to delete the webhook first",
                )
            before = len(self._queue)
            if offset is not None and offset < 0:
                self._queue = self._queue[offset:]
            elif offset is not None:
                self._queue = [u for u in self._queue if u["update_id"] >= offset]
            self.confirmed += before - len(self._queue)
            return copy.deepcopy(self._queue[:limit])

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._integer(params, "chat_id", None)
        if chat_id is None:
            raise TelegramError(400, "Bad Request: chat_id is empty")
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise TelegramError(400, "Bad Request: message text is empty")
        if len(text) > MAX_TEXT:
            raise TelegramError(400, "Bad Request: message is too long")
        with self._lock:
            chat = self._chats.get(chat_id)
            if chat is None:
                raise TelegramError(400, "Bad Request: chat not found")
            if chat_id in self._blocked:
                raise TelegramError(403, "Forbidden: bot was blocked by the user")
            bot_id = int(self._tokens[0].split(":", 1)[0])
            message = {
                "message_id": 90_000 + len(self._sent),
                "from": {
                    "id": bot_id,
                    "is_bot": True,
                    "first_name": "Padel Club",
                    "username": self.bot_username,
                },
                "chat": dict(chat),
                "date": int(self.clock()),
                "text": text,
            }
            self._sent.append(message)
            return copy.deepcopy(message)
