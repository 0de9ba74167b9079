"""A stateful Slack Web API emulator on loopback.

What it implements, as Slack does (PROVIDERS.md §8; shapes checked against Slack's OpenAPI document by
`esm_dagster_tests/sandbox/test_slack_contract.py`):

- `GET|POST /api/users.list`, `/api/conversations.list` (`types`, `exclude_archived`),
  `/api/conversations.history` (`channel`, `oldest`, `latest`, `inclusive`): `limit` and
  `cursor=<response_metadata.next_cursor>`, an empty `next_cursor` on the last page; a cursor that
  is not one it handed out is `invalid_cursor`. History is newest first, with `has_more`.
- `POST /api/chat.postMessage` (JSON or form): `channel`, `text` (or `blocks` / `attachments`),
  `thread_ts`; the message appears in `conversations.history` at once. No idempotency: the same
  post twice is two messages, as on Slack.
- Auth by `Authorization: Bearer <token>` (or a `token` parameter): none is HTTP 200
  `{ok:false,error:"not_authed"}`, a wrong one `invalid_auth`, one expired by the fault switch
  `token_expired`. Application errors are all HTTP 200 `{ok:false,error}`; an unknown method is
  HTTP 404 `unknown_method`.
- `faults`: 429 `{ok:false,error:"ratelimited"}` with `Retry-After: <seconds>`, 5xx (body
  `internal_error`, this emulator's choice), delays, disconnects, lost responses after a post
  committed, pages continuing a cursor that repeat the last items of the page before, and (on
  `users.list`) a member edited plus a member joining between two pages (`mutate_next`).

- Events API (`send_events(url, signing_secret)`): a `url_verification` first (`events_url_verified`
  once the receiver echoed the challenge), then a signed `event_callback` with a `message` event
  for each message posted (`chat.postMessage`, or `add_message` for a member), from a background
  thread, retried on a non-2xx (`esm_dagster.sandbox.slack.events`).

Not implemented: other methods, blocks rendering, threads beyond storing `thread_ts`, other events.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hmac
import json
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs

from esm_dagster.sandbox._http import Fault, Request, Response
from esm_dagster.sandbox.slack import data
from esm_dagster.sandbox.slack.events import (
    SLACK_RETRY,
    SlackEventsConfig,
    challenge_echoed,
    event_callback,
    url_verification,
)
from esm_dagster.sandbox.webhook_sender import PushingEmulator, RetryPolicy, WebhookSender
from esm_dagster.security.redact import redact_text
from esm_dagster.security.secret import Secret

MAX_LIMIT = 1000
MAX_TEXT = 40_000


class SlackError(Exception):
    def __init__(self, error: str, status: int = 200, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.headers = list(headers)


def encode_cursor(kind: str, object_id: str) -> str:
    return base64.b64encode(f"{kind}:{object_id}".encode()).decode("ascii")


class SlackEmulator(PushingEmulator):
    def __init__(
        self,
        *,
        tokens: Sequence[str],
        users: int = 40,
        channels: int = 9,
        messages_per_channel: int = 6,
        seed: int = 7,
        start: int = data.DEFAULT_START,
        end: int = data.DEFAULT_END,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        if not tokens:
            raise ValueError("give at least one accepted token")
        self._tokens = list(tokens)
        self.clock = clock
        self._lock = threading.Lock()
        rng = random.Random(seed)
        self._rng = random.Random(seed + 1)
        self._sequence = 0
        self.bot = data.seed_bot(rng, start)
        self._users = [*data.seed_users(users, rng, start, end), self.bot]
        self._channels = data.seed_conversations(channels, self._users[:-1], rng, start, end)
        self._history: dict[str, list[dict[str, Any]]] = {}
        self.mutations: list[tuple[str, str]] = []  # (member edited, member joined) per mutate fault
        self._events: SlackEventsConfig | None = None
        self.events_url_verified = False
        for channel in self._channels:
            history = []
            for _ in range(messages_per_channel):
                author = self._users[rng.randrange(len(self._users) - 1)]
                self._sequence += 1
                history.append(
                    {
                        "text": f"Court {rng.randrange(1, 9)} free at {rng.randrange(6, 22)}:00?",
                        "ts": data.ts(rng.randrange(channel["created"], end + 86400), self._sequence),
                        "type": "message",
                        "user": author["id"],
                    }
                )
            history.sort(key=lambda m: m["ts"], reverse=True)
            self._history[channel["id"]] = history

    # ---- Python API -----------------------------------------------------------------------------
    def users(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._users)

    def channels(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._channels)

    def history(self, channel_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._history[channel_id])

    def add_message(self, channel_id: str, user_id: str, text: str) -> dict[str, Any]:
        """A member writes in a channel (its `message` event goes out when events are on)."""
        with self._lock:
            if channel_id not in self._history:
                raise KeyError(f"no channel {channel_id!r}")
            self._sequence += 1
            message = {
                "text": text,
                "ts": data.ts(int(self.clock()), self._sequence),
                "type": "message",
                "user": user_id,
            }
            self._history[channel_id].insert(0, message)
            self._emit_message(channel_id, message)
            return copy.deepcopy(message)

    # ---- Events API -----------------------------------------------------------------------------
    def send_events(
        self, url: str, signing_secret: str | Secret, *, retry: RetryPolicy | None = None
    ) -> WebhookSender:
        """Set the app's Request URL (loopback): verified first, then events, signed with the app's
        signing secret."""
        secret = signing_secret if isinstance(signing_secret, Secret) else Secret(signing_secret)
        config = SlackEventsConfig(url, secret)
        sender = self._open_sender(url, retry or SLACK_RETRY)
        with self._lock:
            self._events = config
            self.events_url_verified = False
        body, challenge = url_verification()

        def verified() -> None:
            self.events_url_verified = True

        self._push(
            "url_verification", body, config.sign, accept=challenge_echoed(challenge), delivered=verified
        )
        return sender

    def _emit_message(self, channel_id: str, message: dict[str, Any]) -> None:
        """Queue the `message` event of a new message (call under the lock)."""
        if self._events is None or self.webhooks is None:
            return
        event = {
            **copy.deepcopy(message),
            "channel": channel_id,
            "event_ts": message["ts"],
            "channel_type": "channel",
        }
        event_id, body = event_callback(event, self.bot["id"], int(self.clock()))
        self._push(event_id, body, self._events.sign)

    # ---- LoopbackEmulator hooks -----------------------------------------------------------------
    def redact_query(self, query: str) -> str:
        return redact_text(query, self._tokens)

    def handle(self, request: Request) -> Response:
        try:
            params = self._params(request)
            self._authenticate(request, params)
            return self._json(200, {"ok": True, **self._route(request, params)})
        except SlackError as error:
            return self._json(error.status, {"ok": False, "error": error.error}, error.headers)

    def render_fault(self, request: Request, fault: Fault) -> Response:
        if fault.kind == "rate_limit":
            wait = max(1, math.ceil(fault.retry_after if fault.retry_after is not None else 1))
            return self._json(429, {"ok": False, "error": "ratelimited"}, [("Retry-After", str(wait))])
        error = "internal_error" if fault.status >= 500 else "invalid_arguments"
        return self._json(fault.status, {"ok": False, "error": error})

    def internal_error(self, request: Request) -> Response:
        return self._json(500, {"ok": False, "error": "internal_error"})

    # ---- plumbing -------------------------------------------------------------------------------
    @staticmethod
    def _json(status: int, payload: Any, headers: Sequence[tuple[str, str]] = ()) -> Response:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return Response(status, body, list(headers), content_type="application/json; charset=utf-8")

    @staticmethod
    def _params(request: Request) -> dict[str, Any]:
        params: dict[str, Any] = {
            k: v[-1] for k, v in parse_qs(request.query, keep_blank_values=True).items()
        }
        if request.method == "POST" and request.body:
            content_type = (request.header("content-type") or "").lower()
            if content_type.startswith("application/json"):
                try:
                    body = json.loads(request.body)
                except ValueError:
                    raise SlackError("invalid_json") from None
                if not isinstance(body, dict):
                    raise SlackError("json_not_object")
                params.update(body)
            else:
                form = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
                params.update({k: v[-1] for k, v in form.items()})
        return params

    def _authenticate(self, request: Request, params: dict[str, Any]) -> None:
        header = (request.header("authorization") or "").strip()
        scheme, _, credential = header.partition(" ")
        token = credential.strip() if scheme.lower() == "bearer" else str(params.get("token") or "")
        if not token:
            raise SlackError("not_authed")
        matched = False
        for accepted in self._tokens:
            matched |= hmac.compare_digest(token.encode(), accepted.encode())
        if not matched:
            raise SlackError("invalid_auth")
        if self.faults.credential_expired(token):
            raise SlackError("token_expired")

    def _route(self, request: Request, params: dict[str, Any]) -> dict[str, Any]:
        method = request.path.removeprefix("/api/")
        if method == "users.list":
            return self._users_list(request.path, params)
        if method == "conversations.list":
            return self._conversations_list(request.path, params)
        if method == "conversations.history":
            return self._conversations_history(request.path, params)
        if method == "chat.postMessage" and request.method == "POST":
            return self._post(params)
        raise SlackError("unknown_method", status=404)

    @staticmethod
    def _limit(params: dict[str, Any], default: int) -> int:
        value = params.get("limit")
        if value in (None, ""):
            return default
        try:
            limit = int(value)
        except (TypeError, ValueError):
            raise SlackError("invalid_limit") from None
        if limit < 1:
            raise SlackError("invalid_limit")
        return min(limit, MAX_LIMIT)

    def _page(
        self,
        path: str,
        items: list[dict[str, Any]],
        kind: str,
        key: str,
        params: dict[str, Any],
        default: int,
    ) -> tuple[list[dict[str, Any]], str]:
        limit = self._limit(params, default)
        cursor = str(params.get("cursor") or "")
        begin = 0
        if cursor:
            try:
                found_kind, _, object_id = base64.b64decode(cursor, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise SlackError("invalid_cursor") from None
            ids = [item[key] for item in items]
            if found_kind != kind or object_id not in ids:
                raise SlackError("invalid_cursor")
            begin = ids.index(object_id)
            duplicate = self.faults.take_handler_fault("duplicate", path)
            if duplicate is not None:
                begin = max(0, begin - duplicate.items)
        chunk = items[begin : begin + limit]
        more = begin + limit < len(items)
        next_cursor = encode_cursor(kind, items[begin + limit][key]) if more else ""
        return copy.deepcopy(chunk), next_cursor

    def _users_list(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if params.get("cursor"):
                mutate = self.faults.take_handler_fault("mutate", path)
                if mutate is not None:
                    self._mutate_users(str(params["cursor"]), mutate.seconds)
            members, next_cursor = self._page(path, self._users, "user", "id", params, 100)
        return {
            "members": members,
            "cache_ts": int(self.clock()),
            "response_metadata": {"next_cursor": next_cursor},
        }

    def _mutate_users(self, cursor: str, backdate: float) -> None:
        """Between two pages: the member served just before the cursor edits their profile, and a
        new member joins (at the end of the list), `backdate` seconds before the clock."""
        try:
            _, _, next_id = base64.b64decode(cursor, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return
        ids = [u["id"] for u in self._users]
        if next_id not in ids or ids.index(next_id) == 0:
            return
        now = int(self.clock())
        served = self._users[ids.index(next_id) - 1]
        served["profile"]["title"] = "Head coach"
        served["updated"] = now
        joined = data.user(
            user_id=data.slack_id("U", self._rng),
            first="New",
            last="Member",
            email=f"new.member.{len(self._users)}@padel.example",
            phone="",
            updated=int(now - backdate),
        )
        self._users.append(joined)
        self.mutations.append((served["id"], joined["id"]))

    def _conversations_list(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        types = {t.strip() for t in str(params.get("types") or "public_channel").split(",") if t.strip()}
        exclude_archived = str(params.get("exclude_archived") or "").lower() in ("true", "1")
        with self._lock:
            channels = [
                c
                for c in self._channels
                if "public_channel" in types and not (exclude_archived and c["is_archived"])
            ]
            chunk, next_cursor = self._page(path, channels, "channel", "id", params, 100)
        return {"channels": chunk, "response_metadata": {"next_cursor": next_cursor}}

    def _conversations_history(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel") or "")
        oldest = self._ts_param(params, "oldest", "invalid_ts_oldest", 0.0)
        latest = self._ts_param(params, "latest", "invalid_ts_latest", math.inf)
        inclusive = str(params.get("inclusive") or "").lower() in ("true", "1")
        with self._lock:
            if channel not in self._history:
                raise SlackError("channel_not_found")

            def inside(message: dict[str, Any]) -> bool:
                stamp = float(message["ts"])
                if inclusive:
                    return oldest <= stamp <= latest
                return oldest < stamp < latest

            messages = [m for m in self._history[channel] if inside(m)]
            chunk, next_cursor = self._page(path, messages, "message", "ts", params, 100)
        return {
            "messages": chunk,
            "has_more": bool(next_cursor),
            "pin_count": 0,
            "channel_actions_ts": None,
            "channel_actions_count": 0,
            "response_metadata": {"next_cursor": next_cursor},
        }

    @staticmethod
    def _ts_param(params: dict[str, Any], name: str, error: str, default: float) -> float:
        value = params.get(name)
        if value in (None, ""):
            return default
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SlackError(error) from None

    def _post(self, params: dict[str, Any]) -> dict[str, Any]:
        channel_id = str(params.get("channel") or "")
        text = params.get("text")
        text = text if isinstance(text, str) else ""
        with self._lock:
            channel = next((c for c in self._channels if c["id"] == channel_id), None)
            if channel is None:
                raise SlackError("channel_not_found")
            if channel["is_archived"]:
                raise SlackError("is_archived")
            if not text and not params.get("blocks") and not params.get("attachments"):
                raise SlackError("no_text")
            if len(text) > MAX_TEXT:
                raise SlackError("msg_too_long")
            self._sequence += 1
            message: dict[str, Any] = {
                "bot_id": self.bot["profile"]["bot_id"],
                "team": data.TEAM_ID,
                "text": text,
                "ts": data.ts(int(self.clock()), self._sequence),
                "type": "message",
                "user": self.bot["id"],
            }
            if params.get("thread_ts"):
                message["thread_ts"] = str(params["thread_ts"])
            self._history[channel_id].insert(0, message)
            self._emit_message(channel_id, message)
            return {"channel": channel_id, "ts": message["ts"], "message": copy.deepcopy(message)}
