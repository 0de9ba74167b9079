"""Twilio Programmable Messaging (2010-04-01 API): the `messages` stream and message sends (PROVIDERS.md §2).

- Auth: HTTP Basic `AccountSid:AuthToken`, or an API key `SK...:secret` with the AccountSid still in
  the path (credentials `account_sid` + `auth_token`, or `account_sid` + `api_key_sid` +
  `api_key_secret`).
- Reads: `GET /2010-04-01/Accounts/{Sid}/Messages.json?PageSize=` and then `next_page_uri` (relative
  to the API host, carrying `PageToken`) until it is null. The next-page URI is the resume cursor.
- Windows: Twilio filters on `DateSent` by GMT day only (`DateSent>=YYYY-MM-DD` is the parameter
  `DateSent>`, "on or after"; `DateSent<=` is `DateSent<`, "on or before"). The days around the
  window are asked for server-side and the exact [start, end) cut is made here on `date_sent`
  (RFC 2822). A message without `date_sent` (not sent yet) is outside every window; it is read
  once it has been sent.
- Sends: `POST .../Messages.json` (form: `To`, `From` or `MessagingServiceSid`, `Body`). Twilio takes
  no idempotency key for this call, so a send is made once (`retry=False`) and its body ends in a
  marker derived from the write's idempotency key (`providers.markers`); after a lost answer
  `find_written` lists the recipient's messages of the last two GMT days and looks for that marker
  before anything is sent again.
- Errors: `{code, message, more_info, status}`; 429 with code 20429 is a rate limit Twilio never
  processed (always safe to retry). Whether Messages 429s carry `Retry-After` is unconfirmed; when
  one does, it is honoured.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

import httpx

from esm_dagster.providers.auth import BasicAuth
from esm_dagster.providers.base import CursorGuard, Page, ProviderError, StreamSpec, WriteSpec
from esm_dagster.providers.context import ProviderConfigError, ProviderContext
from esm_dagster.providers.http import JsonHttpProvider, default_classification
from esm_dagster.providers.markers import carries_marker, with_marker
from esm_dagster.transport import TransportPolicy

API_VERSION = "2010-04-01"
MAX_PAGE_SIZE = 1000  # larger is Twilio error 20007
RATE_LIMIT_CODE = 20429
AUTH_CODE = 20003
ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
API_KEY_SID = re.compile(r"^SK[0-9a-fA-F]{32}$")
# How far back find_written looks: the GMT day of the lost send and the day before it.
FIND_DAYS = 1


def gmt_day(unix_seconds: int) -> str:
    return dt.datetime.fromtimestamp(unix_seconds, dt.UTC).strftime("%Y-%m-%d")


def parse_rfc2822(value: str) -> int:
    """Unix seconds of a Twilio date (`Fri, 13 Aug 2010 01:16:24 +0000`); ValueError if unreadable."""
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"{value!r} is not an RFC 2822 date") from None
    if when.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset")
    return int(when.timestamp())


class TwilioProvider(JsonHttpProvider):
    name: ClassVar[str] = "twilio"
    label: ClassVar[str] = "Twilio"
    BASE_SUFFIX: ClassVar[str] = "/" + API_VERSION
    REQUEST_ID_HEADER: ClassVar[str | None] = "Twilio-Request-Id"
    STREAMS: ClassVar[tuple[StreamSpec, ...]] = (
        StreamSpec(
            name="messages",
            default_target="message",
            supports_created_window=True,
            primary_key="sid",
            cursor_field="date_sent",
            max_page_size=MAX_PAGE_SIZE,
            description="GET /2010-04-01/Accounts/{Sid}/Messages.json, following next_page_uri",
        ),
    )
    WRITES: ClassVar[tuple[WriteSpec, ...]] = (
        WriteSpec(
            name="messages",
            operation="send",
            idempotency="none",
            max_batch=1,
            description="POST Messages.json (To, From | MessagingServiceSid, Body); body carries a marker",
        ),
    )
    IDENTITY_FIELDS: ClassVar[tuple[str, ...]] = ("account_sid", "api_key_sid")
    # basic_auth: the Account SID with its Auth Token, or an API key (SK...) and its secret;
    # api_key: the API key pair alone names the same Basic credential.
    AUTH_TYPES: ClassVar[frozenset[str]] = frozenset({"basic_auth", "api_key", "webhook"})
    CREDENTIAL_SHAPES: ClassVar[Mapping[str, tuple[tuple[str, ...], ...]]] = {
        "basic_auth": (("account_sid", "auth_token"), ("account_sid", "api_key_sid", "api_key_secret")),
        "api_key": (("account_sid", "api_key_sid", "api_key_secret"),),
        "webhook": (("webhook_secret|auth_token",),),
    }

    @classmethod
    def from_context(cls, ctx: ProviderContext) -> Self:
        account_sid = ctx.required_value("account_sid")
        if not ACCOUNT_SID.match(account_sid):
            raise ProviderConfigError(
                f"mapping {ctx.mapping!r}: credentials.account_sid must be AC followed by 32 hex digits"
            )
        key_sid = ctx.value("api_key_sid")
        if key_sid is not None:
            if not API_KEY_SID.match(key_sid):
                raise ProviderConfigError(
                    f"mapping {ctx.mapping!r}: credentials.api_key_sid must be SK followed by 32 hex digits"
                )
            auth = BasicAuth(key_sid, ctx.secret("api_key_secret"))
        else:
            auth = BasicAuth(account_sid, ctx.secret("auth_token"))
        return cls(
            ctx.base_url,
            account_sid=account_sid,
            auth=auth,
            policy=ctx.policy,
            default_from=ctx.value("from_number", "from"),
            messaging_service_sid=ctx.value("messaging_service_sid"),
        )

    def __init__(
        self,
        base_url: str,
        *,
        account_sid: str,
        auth: BasicAuth,
        policy: TransportPolicy,
        client: httpx.Client | None = None,
        default_from: str | None = None,
        messaging_service_sid: str | None = None,
    ) -> None:
        if not ACCOUNT_SID.match(account_sid):
            raise ValueError("account_sid must be AC followed by 32 hex digits")
        super().__init__(base_url, auth=auth, policy=policy, client=client)
        self.account_sid = account_sid
        self.default_from = default_from
        self.messaging_service_sid = messaging_service_sid
        self._messages_path = f"/{API_VERSION}/Accounts/{account_sid}/Messages.json"

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
        """Pages in Twilio's order; `cursor` is an earlier page's `next_page_uri`."""
        spec = self.stream(stream)
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        params: dict[str, str] = {"PageSize": str(min(page_size, spec.max_page_size))}
        if window_start is not None:
            params["DateSent>"] = gmt_day(int(window_start))
        if window_end is not None:
            params["DateSent<"] = gmt_day(int(window_end) - 1)
        if cursor is not None:
            self._check_page_uri(cursor)
        return self._pages(spec, params, cursor, window_start, window_end)

    def _pages(
        self,
        spec: StreamSpec,
        params: dict[str, str],
        cursor: str | None,
        window_start: int | None,
        window_end: int | None,
    ) -> Iterator[Page]:
        guard = CursorGuard(self.name, spec.name)
        if cursor is not None:
            guard.check(cursor)
        while True:
            if cursor is None:
                result = self.request("GET", self._messages_path, params=params)
            else:
                result = self.request("GET", cursor)
            messages, next_uri = self._list_body(result.body)
            records = [m for m in messages if self._in_window(m, window_start, window_end)]
            if next_uri is not None:
                self._check_page_uri(next_uri)
                guard.check(next_uri)
            yield Page(
                records=records,
                has_more=next_uri is not None,
                next_cursor=next_uri,
                request_seconds=result.seconds,
            )
            if next_uri is None:
                return
            cursor = next_uri

    def _list_body(self, body: Any) -> tuple[list[dict[str, Any]], str | None]:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise self.protocol_error(
                "the answer is not a Twilio message list (no messages array)",
                "unexpected_response",
                url=self.base_url + self._messages_path,
            )
        messages = body["messages"]
        if not all(isinstance(m, dict) for m in messages):
            raise self.protocol_error(
                "a messages item is not an object",
                "unexpected_response",
                url=self.base_url + self._messages_path,
            )
        next_uri = body.get("next_page_uri")
        if next_uri is not None and (not isinstance(next_uri, str) or not next_uri):
            raise self.protocol_error(
                "next_page_uri is neither null nor a URI",
                "unexpected_response",
                url=self.base_url + self._messages_path,
            )
        return messages, next_uri

    def _check_page_uri(self, uri: str) -> None:
        """A next-page URI must be this account's message list (relative, or on the mapping's origin)."""
        expected = urlsplit(self.base_url).path + self._messages_path
        if not isinstance(uri, str) or urlsplit(self.url_for(uri)).path != expected:
            raise ProviderError(
                "the paging cursor is not a next_page_uri of this account's Messages.json",
                provider=self.name,
                error_class="client",
                code="invalid_cursor",
                url=str(uri),
                secrets=self._secrets,
            )

    def _in_window(self, message: dict[str, Any], start: int | None, end: int | None) -> bool:
        if start is None and end is None:
            return True
        value = message.get("date_sent")
        if value is None:
            return False
        try:
            sent = parse_rfc2822(str(value))
        except ValueError as exc:
            raise self.protocol_error(
                f"message {message.get('sid')!r}: date_sent {exc}",
                "unexpected_response",
                url=self.base_url + self._messages_path,
            ) from None
        return (start is None or sent >= start) and (end is None or sent < end)

    def probe(self) -> float:
        return self.request("GET", self._messages_path, params={"PageSize": "1"}).seconds

    # ---- writes ---------------------------------------------------------------------------------
    def write(
        self, name: str, records: Sequence[dict[str, Any]], *, idempotency_keys: Sequence[str]
    ) -> list[dict[str, Any]]:
        spec = self.write_spec(name)
        if len(records) != len(idempotency_keys):
            raise ValueError("one idempotency key per record")
        if len(records) > spec.max_batch:
            raise ValueError(f"twilio {name}: at most {spec.max_batch} record per write")
        return [self._send(record, key) for record, key in zip(records, idempotency_keys, strict=True)]

    def message_form(self, record: dict[str, Any], idempotency_key: str) -> dict[str, str]:
        """The create form for a record (`To`, `From` | `MessagingServiceSid`, `Body` + marker)."""
        to = _field(record, "To", "to")
        body = _field(record, "Body", "body")
        sender = _field(record, "From", "from") or self.default_from
        service = _field(record, "MessagingServiceSid", "messaging_service_sid") or self.messaging_service_sid
        if not to:
            raise ValueError("twilio messages: the record has no To (recipient)")
        if not body:
            raise ValueError(f"twilio messages to {to!r}: the record has no Body")
        if not sender and not service:
            raise ValueError(
                f"twilio messages to {to!r}: give From or MessagingServiceSid "
                "(in the record or as credentials.from_number / credentials.messaging_service_sid)"
            )
        form = {"To": to, "Body": with_marker(body, idempotency_key)}
        if service:
            form["MessagingServiceSid"] = service
        else:
            assert sender is not None
            form["From"] = sender
        return form

    def _send(self, record: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        form = self.message_form(record, idempotency_key)
        result = self.request("POST", self._messages_path, data=form, ok=(201,), retry=False)
        if not isinstance(result.body, dict) or not isinstance(result.body.get("sid"), str):
            raise self.protocol_error(
                "Twilio answered 201 without a message sid",
                "unexpected_response",
                "POST",
                self._messages_path,
            )
        return result.body

    def find_written(self, name: str, record: dict[str, Any], idempotency_key: str) -> dict[str, Any] | None:
        """The message an earlier attempt sent for this record (To + marker in the body), or None."""
        self.write_spec(name)
        to = _field(record, "To", "to")
        if not to:
            raise ValueError("twilio messages: the record has no To (recipient)")
        since = gmt_day(int(time.time()) - FIND_DAYS * 86400)
        params = {"To": to, "DateSent>": since, "PageSize": str(MAX_PAGE_SIZE)}
        guard = CursorGuard(self.name, "messages")
        cursor: str | None = None
        while True:
            if cursor is None:
                result = self.request("GET", self._messages_path, params=params)
            else:
                result = self.request("GET", cursor)
            messages, next_uri = self._list_body(result.body)
            for message in messages:
                if message.get("to") == to and carries_marker(message.get("body"), idempotency_key):
                    return message
            if next_uri is None:
                return None
            self._check_page_uri(next_uri)
            guard.check(next_uri)
            cursor = next_uri

    # ---- errors ---------------------------------------------------------------------------------
    def http_error(self, response: httpx.Response, method: str, url: str) -> ProviderError:
        error_class, retryable = default_classification(response.status_code)
        body = _json_object(response)
        code = body.get("code")
        message = body.get("message")
        if code == RATE_LIMIT_CODE:  # never processed by Twilio: always safe to retry
            error_class, retryable = "rate_limit", True
        elif code == AUTH_CODE:
            error_class, retryable = "auth", False
        return self.error_from_response(
            response,
            method,
            url,
            error_class=error_class,
            retryable=retryable,
            code=str(code) if code is not None else None,
            message=str(message) if message is not None else None,
        )


def _field(record: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = record.get(name)
        if value not in (None, ""):
            return str(value)
    return None


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


__all__ = ["TwilioProvider", "gmt_day", "parse_rfc2822"]
