"""A stateful Twilio Programmable Messaging (2010-04-01) emulator on loopback.

What it implements, as Twilio does (PROVIDERS.md §2; shapes checked against Twilio's OpenAPI document
by `esm_dagster_tests/sandbox/test_twilio_contract.py`):

- `GET /2010-04-01/Accounts/{AccountSid}/Messages.json` with `To`, `From`, `DateSent`, `DateSent<`
  (on or before), `DateSent>` (on or after; days in GMT, `YYYY-MM-DD`), `PageSize` (1..1000, default
  50; larger is 400 code 20007), `Page` and `PageToken` (`PA<sid>` continues after, `PB<sid>` goes
  back before that message; unknown is 400 code 21481). Newest first. The page object carries
  `first_page_uri`, `next_page_uri` (null on the last page), `previous_page_uri`, `page`,
  `page_size`, `start`, `end`, `uri`.
- `POST .../Messages.json` (form): `To`, `From` | `MessagingServiceSid`, `Body` | `MediaUrl` |
  `ContentSid`; 201 with the new message (status `queued`), visible to the list at once. There is
  no idempotency key: the same POST twice makes two messages, as on Twilio.
- `GET .../Messages/{Sid}.json`.
- Auth: Basic `AccountSid:AuthToken` or `SK...:secret` (an API key of the account in the path).
  A missing or wrong credential is 401 code 20003 with `WWW-Authenticate: Basic realm="Twilio API"`;
  an expired one (fault switch) the same.
- Errors `{code, message, more_info, status}`; `faults`: 5xx code 20500, 429 code 20429 (with
  `Retry-After` only when `retry_after_header=True`: whether Messages sends it is unconfirmed),
  delays, disconnects, lost responses after a send committed, pages that repeat the last
  messages of the page before (`duplicate_next`), and a message delivered plus a new one sent
  between two pages (`mutate_next`; `mutations` lists them).

- Status callbacks (`send_status_callbacks(url)`): every status change of a message is a signed form
  POST from a background thread (`esm_dagster.sandbox.twilio.callbacks`); while they are on, a
  created message moves queued -> sent -> delivered at once, as a carrier would report it, and
  `set_status` plays any other change (failed, undelivered with an error code).

Not implemented: media, message update/delete, other resources; the choice of
code 21422 for an unreadable `DateSent` value is this emulator's, not a confirmed Twilio code.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import hmac
import json
import math
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from esm_dagster.sandbox._http import Fault, Request, Response
from esm_dagster.sandbox.twilio import data
from esm_dagster.sandbox.twilio.callbacks import (
    DELIVERY_PATH,
    FAILED,
    MESSAGE_STATUSES,
    TWILIO_RETRY,
    StatusCallbacks,
)
from esm_dagster.sandbox.webhook_sender import PushingEmulator, RetryPolicy, WebhookSender
from esm_dagster.security.redact import redact_text
from esm_dagster.security.secret import Secret

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_MESSAGES = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")
_MESSAGE = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages/([^/]+)\.json$")
_PHONE = re.compile(r"^(?:(?:whatsapp|messenger):)?\+[1-9]\d{6,14}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_FILTERS = ("To", "From", "DateSent", "DateSent<", "DateSent>")


class TwilioError(Exception):
    def __init__(self, status: int, code: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = list(headers)


def _sent_key(message: dict[str, Any]) -> tuple[int, str]:
    stamp = message["date_sent"] or message["date_created"]
    return (int(_parse_date(stamp)), message["sid"])


def _parse_date(value: str) -> float:
    import email.utils

    return email.utils.parsedate_to_datetime(value).timestamp()


class TwilioEmulator(PushingEmulator):
    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        api_keys: dict[str, str] | None = None,
        messages: int = 120,
        seed: int = 7,
        start: int = data.DEFAULT_START,
        end: int = data.DEFAULT_END,
        sender: str = "+15005550006",
        retry_after_header: bool = False,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.account_sid = account_sid
        self._auth_token = auth_token
        self._api_keys = dict(api_keys or {})
        self.sender = sender
        self.retry_after_header = retry_after_header
        self.clock = clock
        self._lock = threading.Lock()
        self._rng = random.Random(seed + 1)
        self._messages: list[dict[str, Any]] = data.seed_messages(
            account_sid, sender, messages, seed, start, end
        )
        self.mutations: list[tuple[str, str]] = []  # (sid changed, sid created) per mutate fault
        self._callbacks: StatusCallbacks | None = None
        self._sort()

    def _sort(self) -> None:
        self._messages.sort(key=_sent_key, reverse=True)

    # ---- Python API -----------------------------------------------------------------------------
    def messages(self) -> list[dict[str, Any]]:
        """Every message, newest first, as the list returns them."""
        with self._lock:
            return copy.deepcopy(self._messages)

    def add_message(self, *, to: str, body: str, sent: int, sender: str | None = None) -> dict[str, Any]:
        """An inbound or outbound message sent at `sent` (unix seconds), as if it happened on Twilio."""
        with self._lock:
            message = data.message(
                account_sid=self.account_sid,
                message_sid=data.sid("SM", self._rng),
                to=to,
                sender=sender or self.sender,
                body=body,
                status="delivered",
                direction="outbound-api",
                created=sent,
                sent=sent,
                price="-0.00750",
            )
            self._messages.append(message)
            self._sort()
            return copy.deepcopy(message)

    # ---- status callbacks -----------------------------------------------------------------------
    def send_status_callbacks(
        self, url: str, *, auth_token: str | Secret | None = None, retry: RetryPolicy | None = None
    ) -> WebhookSender:
        """Every message's StatusCallback is `url` (loopback), signed with the account's Auth Token
        (or `auth_token`: a wrong one plays a forged delivery)."""
        token = auth_token if auth_token is not None else self._auth_token
        with self._lock:
            self._callbacks = StatusCallbacks(url, token if isinstance(token, Secret) else Secret(token))
            return self._open_sender(url, retry or TWILIO_RETRY)

    def set_status(self, sid: str, status: str, *, error_code: int | None = None) -> dict[str, Any]:
        """The carrier reports a new status for a message (and its callback goes out)."""
        if status not in MESSAGE_STATUSES:
            raise ValueError(f"{status!r} is not a Twilio message status")
        with self._lock:
            message = next((m for m in self._messages if m["sid"] == sid), None)
            if message is None:
                raise KeyError(f"no message {sid!r}")
            self._change_status(message, status, error_code)
            return copy.deepcopy(message)

    def _change_status(self, message: dict[str, Any], status: str, error_code: int | None = None) -> None:
        """Call under the lock."""
        message["status"] = status
        message["date_updated"] = data.rfc2822(int(self.clock()))
        if status in FAILED:
            message["error_code"] = error_code
        if self._callbacks is not None and self.webhooks is not None:
            self._push(*self._callbacks.delivery(message, error_code if status in FAILED else None))

    # ---- LoopbackEmulator hooks -----------------------------------------------------------------
    def redact_query(self, query: str) -> str:
        return redact_text(query, [self._auth_token, *self._api_keys.values()])

    def handle(self, request: Request) -> Response:
        try:
            self._authenticate(request)
            return self._route(request)
        except TwilioError as error:
            return self._error(error)

    def render_fault(self, request: Request, fault: Fault) -> Response:
        if fault.kind == "rate_limit":
            headers = []
            if self.retry_after_header and fault.retry_after is not None:
                headers.append(("Retry-After", str(max(0, math.ceil(fault.retry_after)))))
            return self._error(TwilioError(429, 20429, "Too Many Requests", headers))
        if fault.status >= 500:
            return self._error(TwilioError(fault.status, 20500, "An internal server error has occurred"))
        return self._error(TwilioError(fault.status, 20001, f"Injected client error {fault.status}"))

    def internal_error(self, request: Request) -> Response:
        return self._error(TwilioError(500, 20500, "An internal server error has occurred"))

    # ---- plumbing -------------------------------------------------------------------------------
    def _json(self, status: int, payload: Any, headers: Sequence[tuple[str, str]] = ()) -> Response:
        request_id = "RQ" + "".join(random.choice(data.HEX) for _ in range(32))
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return Response(status, body, [("Twilio-Request-Id", request_id), *headers])

    def _error(self, error: TwilioError) -> Response:
        payload = {
            "code": error.code,
            "message": error.message,
            "more_info": f"https://www.twilio.com/docs/errors/{error.code}",
            "status": error.status,
        }
        return self._json(error.status, payload, error.headers)

    def _authenticate(self, request: Request) -> None:
        unauthorized = TwilioError(
            401, 20003, "Authenticate", [("WWW-Authenticate", 'Basic realm="Twilio API"')]
        )
        header = (request.header("authorization") or "").strip()
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            raise unauthorized
        try:
            user, _, password = (
                base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            raise unauthorized from None
        match = _MESSAGES.match(request.path) or _MESSAGE.match(request.path)
        path_account = match.group(1) if match else None
        expected = self._auth_token if user == self.account_sid else self._api_keys.get(user)
        ok = expected is not None and hmac.compare_digest(password.encode(), expected.encode())
        if not ok or (path_account is not None and path_account != self.account_sid):
            raise unauthorized
        if self.faults.credential_expired(f"{user}:{password}"):
            raise unauthorized

    def _route(self, request: Request) -> Response:
        if match := _MESSAGES.match(request.path):
            if request.method == "GET":
                return self._json(200, self._list(match.group(1), request.query))
            if request.method == "POST":
                return self._json(201, self._create(request))
        elif (match := _MESSAGE.match(request.path)) and request.method == "GET":
            with self._lock:
                for message in self._messages:
                    if message["sid"] == match.group(2):
                        return self._json(200, copy.deepcopy(message))
        raise TwilioError(404, 20404, f"The requested resource {request.path} was not found")

    # ---- list -----------------------------------------------------------------------------------
    def _list(self, account: str, query: str) -> dict[str, Any]:
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        size = self._page_size(params.get("PageSize"))
        page = int(params["Page"]) if params.get("Page", "").isdigit() else 0
        predicate = self._predicate(params)
        base = f"/2010-04-01/Accounts/{account}/Messages.json"
        filters = {k: params[k] for k in _FILTERS if k in params}
        token = params.get("PageToken")
        with self._lock:
            if token and token.startswith("PA"):
                mutate = self.faults.take_handler_fault("mutate", base)
                if mutate is not None:
                    self._mutate(token[2:], mutate.seconds)
            matching = [m for m in self._messages if predicate(m)]
            begin = 0
            if token:
                begin = self._token_position(matching, token, size)
                duplicate = (
                    self.faults.take_handler_fault("duplicate", base) if token.startswith("PA") else None
                )
                if duplicate is not None:
                    begin = max(0, begin - duplicate.items)
            chunk = copy.deepcopy(matching[begin : begin + size])
            more = begin + size < len(matching)

        def uri(**extra: Any) -> str:
            return base + "?" + urlencode({**filters, "PageSize": size, **extra}, quote_via=quote, safe="<>")

        current = {"Page": page, **({"PageToken": token} if token else {})}
        return {
            "end": page * size + max(len(chunk) - 1, 0),
            "first_page_uri": uri(Page=0),
            "messages": chunk,
            "next_page_uri": uri(Page=page + 1, PageToken="PA" + chunk[-1]["sid"])
            if more and chunk
            else None,
            "page": page,
            "page_size": size,
            "previous_page_uri": (
                uri(Page=page - 1, PageToken="PB" + chunk[0]["sid"]) if page > 0 and chunk else None
            ),
            "start": page * size,
            "uri": uri(**current),
        }

    def _mutate(self, served_sid: str, backdate: float) -> None:
        """Between two pages: the message the cursor names is delivered, and a new one is sent
        `backdate` seconds ago (newest first, it lands among the pages already served)."""
        now = int(self.clock())
        for message in self._messages:
            if message["sid"] == served_sid:
                message["status"] = "delivered"
                message["date_updated"] = data.rfc2822(now)
        sent = int(now - backdate)
        new = data.message(
            account_sid=self.account_sid,
            message_sid=data.sid("SM", self._rng),
            to="+66811110000",
            sender=self.sender,
            body="Sent while you were paging",
            status="sent",
            direction="outbound-api",
            created=sent,
            sent=sent,
            price="-0.00750",
        )
        self._messages.append(new)
        self._sort()
        self.mutations.append((served_sid, new["sid"]))

    @staticmethod
    def _page_size(value: str | None) -> int:
        if value is None:
            return DEFAULT_PAGE_SIZE
        if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE_SIZE:
            raise TwilioError(400, 20007, f"PageSize must be between 1 and {MAX_PAGE_SIZE}")
        return int(value)

    @staticmethod
    def _token_position(matching: list[dict[str, Any]], token: str, size: int) -> int:
        kind, sid = token[:2], token[2:]
        for index, message in enumerate(matching):
            if message["sid"] == sid:
                return index + 1 if kind == "PA" else max(0, index - size)
        raise TwilioError(400, 21481, "Invalid PageToken")

    @staticmethod
    def _predicate(params: dict[str, str]) -> Callable[[dict[str, Any]], bool]:
        days: dict[str, str] = {}
        for name in ("DateSent", "DateSent<", "DateSent>"):
            if name in params:
                if not _DAY.match(params[name]):
                    raise TwilioError(400, 21422, f"Invalid {name}: expected YYYY-MM-DD")
                days[name] = params[name]
        to, sender = params.get("To"), params.get("From")

        def keep(message: dict[str, Any]) -> bool:
            if to is not None and message["to"] != to:
                return False
            if sender is not None and message["from"] != sender:
                return False
            if days:
                if message["date_sent"] is None:
                    return False
                day = dt.datetime.fromtimestamp(_parse_date(message["date_sent"]), dt.UTC).strftime(
                    "%Y-%m-%d"
                )
                if "DateSent" in days and day != days["DateSent"]:
                    return False
                if "DateSent<" in days and day > days["DateSent<"]:
                    return False
                if "DateSent>" in days and day < days["DateSent>"]:
                    return False
            return True

        return keep

    # ---- create ---------------------------------------------------------------------------------
    def _create(self, request: Request) -> dict[str, Any]:
        form = {k: v[-1] for k, v in parse_qs(request.body.decode("utf-8"), keep_blank_values=True).items()}
        to = form.get("To", "").strip()
        if not to:
            raise TwilioError(400, 21604, "A 'To' phone number is required.")
        if not _PHONE.match(to):
            raise TwilioError(400, 21211, f"Invalid 'To' Phone Number: {to}")
        sender, service = form.get("From"), form.get("MessagingServiceSid")
        if not sender and not service:
            raise TwilioError(400, 21603, "A 'From' phone number is required.")
        if not any(form.get(k) for k in ("Body", "MediaUrl", "ContentSid")):
            raise TwilioError(400, 21602, "Message body is required.")
        now = int(self.clock())
        with self._lock:
            message = data.message(
                account_sid=self.account_sid,
                message_sid=data.sid("SM", self._rng),
                to=to,
                sender=sender or None,
                body=form.get("Body", ""),
                status="queued",
                direction="outbound-api",
                created=now,
                sent=now,
                messaging_service_sid=service or None,
            )
            self._messages.append(message)
            self._sort()
            created = copy.deepcopy(message)  # the 201 shows it queued, as Twilio answers
            if self._callbacks is not None and self.webhooks is not None:
                for status in DELIVERY_PATH:
                    self._change_status(message, status)
            return created
