"""SendGrid v3: marketing contacts and the suppression lists as streams; mail send and contact upserts
as writes (PROVIDERS.md §3).

- Auth is `Authorization: Bearer SG.…`, added per request from a `Secret`.
- Suppression lists (`bounces`, `blocks`, `spam_reports`, `unsubscribes`) page with `limit` (at most
  500) and `offset`, and filter server-side on `created` with `start_time` / `end_time`, both
  inclusive: a window's exclusive end is sent as `end_time = end - 1`. Offsets are positions, not
  keys: the window's end is fixed before the first page, so entries added during a run fall outside
  it, but an entry deleted mid-run moves the rest up by one and the record at the page boundary is
  read by the next full refresh only (the order of these lists is not documented; the emulator
  serves newest first). A page equal to the one before (an ignored offset) stops the stream.
- Contacts: search answers only the first 50 matches and the plain list is a sample, so the whole
  list is read through an export job (`POST /marketing/contacts/exports`, poll until `ready`, fetch
  each URL without the API key: they are presigned links). Contacts carry `updated_at` in ISO 8601
  and SGQL filtering on it is [U], so a window is applied here, on `updated_at`.
- `mail_send` has no idempotency key (PROVIDERS.md: "none" [U]); it is sent once (`retry=False`)
  with a marker derived from the idempotency key in each personalization's `custom_args`. No read
  API this project has confirmed can look a sent message up by that marker, so `find_written`
  refuses: a person checks SendGrid's Email Activity for the marker before anything is resent.
- `contacts_upsert` is SendGrid's upsert keyed on the lower-cased email: repeating it changes nothing.
- 429 carries `X-RateLimit-Reset` (unix seconds): `retry_after = reset - now`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

import httpx
import orjson

from esm_dagster.providers.auth import BearerAuth
from esm_dagster.providers.base import CursorGuard, Page, ProviderError, StreamSpec, WriteSpec
from esm_dagster.providers.context import ProviderConfigError, ProviderContext
from esm_dagster.providers.http import (
    default_classification,
    normalise_base_url,
)
from esm_dagster.providers.jsonlines import JsonLinesProvider, batches
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy

SUPPRESSION_PAGE_MAX = 500
MAX_UPSERT_CONTACTS = 30_000
MAX_UPSERT_BYTES = 6 * 1024 * 1024
MARKER_ARG = "esm_write_id"  # the custom_args key a mail send carries its write marker in
EXPORT_POLL_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)  # then 5 s until the deadline
SUPPRESSIONS = ("bounces", "blocks", "spam_reports", "unsubscribes")


def write_marker(idempotency_key: str) -> str:
    """What a mail send carries in `custom_args` for its key: stable, short, and not the key itself."""
    return hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:32]


def _suppression(name: str) -> StreamSpec:
    return StreamSpec(
        name=name,
        default_target=None,
        supports_created_window=True,
        primary_key="email",
        cursor_field="created",
        max_page_size=SUPPRESSION_PAGE_MAX,
        description=f"GET /v3/suppression/{name}, limit/offset, start_time/end_time on created",
    )


class SendGridProvider(JsonLinesProvider):
    name: ClassVar[str] = "sendgrid"
    label: ClassVar[str] = "SendGrid"
    BASE_SUFFIX: ClassVar[str] = "/v3"
    STREAMS: ClassVar[tuple[StreamSpec, ...]] = (
        StreamSpec(
            name="contacts",
            default_target="user",
            supports_created_window=False,
            primary_key="id",
            cursor_field="updated_at",
            max_page_size=1000,
            description="marketing contacts through an export job; window on updated_at, client-side",
        ),
        *(_suppression(name) for name in SUPPRESSIONS),
    )
    WRITES: ClassVar[tuple[WriteSpec, ...]] = (
        WriteSpec(
            name="mail_send",
            operation="send",
            idempotency="none",
            description="POST /v3/mail/send (202); no idempotency key, so never resent blindly",
        ),
        WriteSpec(
            name="contacts_upsert",
            operation="upsert",
            idempotency="natural",
            max_batch=MAX_UPSERT_CONTACTS,
            description="PUT /v3/marketing/contacts, an asynchronous upsert keyed on email (202 {job_id})",
        ),
    )
    IDENTITY_FIELDS: ClassVar[tuple[str, ...]] = ("api_key",)
    AUTH_TYPES: ClassVar[frozenset[str]] = frozenset({"api_key", "webhook"})
    CREDENTIAL_SHAPES: ClassVar[Mapping[str, tuple[tuple[str, ...], ...]]] = {
        "api_key": (("api_key",),),
        "webhook": (("webhook_public_key",),),
    }

    @classmethod
    def from_context(cls, ctx: ProviderContext) -> Self:
        key = ctx.secret("api_key")
        if not key.reveal().startswith("SG."):
            raise ProviderConfigError(
                f"mapping {ctx.mapping!r}: credentials.api_key is not a SendGrid API key (they start with 'SG.')"
            )
        return cls(ctx.base_url, api_key=key, policy=ctx.policy, on_behalf_of=ctx.value("on_behalf_of"))

    def __init__(
        self,
        base_url: str,
        *,
        api_key: Secret,
        policy: TransportPolicy,
        on_behalf_of: str | None = None,
        client: httpx.Client | None = None,
        export_timeout_seconds: float = 600.0,
    ) -> None:
        if not isinstance(api_key, Secret) or not api_key:
            raise TypeError("api_key must be a non-empty esm_dagster.security.secret.Secret")
        headers = {"On-Behalf-Of": on_behalf_of} if on_behalf_of else None
        super().__init__(base_url, auth=BearerAuth(api_key), policy=policy, client=client, headers=headers)
        self.export_timeout_seconds = export_timeout_seconds

    # ---- errors ---------------------------------------------------------------------------------
    def error_details(self, body: Any) -> tuple[str | None, str | None]:
        """SendGrid's `{"errors":[{"field","message"}]}`: the first field as code, messages joined."""
        errors = body.get("errors") if isinstance(body, dict) else None
        if not isinstance(errors, list) or not errors:
            return super().error_details(body)
        items = [e for e in errors if isinstance(e, dict)]
        fields = [str(e["field"]) for e in items if e.get("field")]
        messages = [(f"{e['field']}: " if e.get("field") else "") + str(e.get("message", "")) for e in items]
        return (fields[0] if fields else None), "; ".join(m for m in messages if m) or None

    def _api_error(self, response: httpx.Response, method: str, url: str) -> ProviderError:
        error_class, retryable = default_classification(response.status_code)
        if response.status_code == 413:
            error_class, retryable = "validation", False
        code, message = self.error_details(_json(response))
        retry_after = None
        if response.status_code == 429:
            retry_after = reset_wait(response.headers.get("x-ratelimit-reset"))
        return self.error_from_response(
            response,
            method,
            url,
            error_class=error_class,
            retryable=retryable,
            code=code,
            message=message,
            retry_after=retry_after,
        )

    # ---- streams --------------------------------------------------------------------------------
    def iter_pages(
        self,
        stream: str,
        *,
        window_start: int | None = None,
        window_end: int | None = None,
        page_size: int = 500,
        cursor: str | None = None,
    ) -> Iterator[Page]:
        """Suppressions: offset pages newest first, `cursor` the next offset. Contacts: one export,
        handed out `page_size` at a time; a run resumed there starts a new export (`cursor` unused)."""
        spec = self.stream(stream)
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        size = min(page_size, spec.max_page_size)
        if stream == "contacts":
            return self._contacts(window_start, window_end, size)
        return self._suppressions(stream, window_start, window_end, size, cursor)

    def _suppressions(
        self, name: str, start: int | None, end: int | None, limit: int, cursor: str | None
    ) -> Iterator[Page]:
        path = f"/v3/suppression/{name}"
        params: dict[str, str | int] = {"limit": limit}
        if start is not None:
            params["start_time"] = int(start)
        if end is not None:
            params["end_time"] = int(end) - 1  # SendGrid's end_time is inclusive
        guard = CursorGuard(self.name, name)
        previous: tuple[Any, ...] | None = None
        offset = 0
        if cursor is not None:
            if not cursor.isdigit():
                raise ValueError(f"a {name} cursor is an offset, not {cursor!r}")
            guard.check(cursor)
            offset = int(cursor)
        while True:
            result = self.request("GET", path, params={**params, "offset": offset})
            rows = result.body
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise self.protocol_error(
                    f"{path} did not answer a JSON array of objects",
                    "unexpected_response",
                    url=self.url_for(path),
                )
            signature = _page_signature(rows)
            if rows and signature == previous:
                raise ProviderError(
                    f"the {name} list answered offset {offset} with the same page as the offset before; "
                    "stopping instead of looping",
                    provider=self.name,
                    error_class="server",
                    code="repeated_page",
                    method="GET",
                    url=self.url_for(path),
                )
            previous = signature
            has_more = len(rows) == limit  # a short page is the last one
            next_cursor = None
            if has_more:
                offset += len(rows)
                next_cursor = str(offset)
                guard.check(next_cursor)
            yield Page(
                records=rows, has_more=has_more, next_cursor=next_cursor, request_seconds=result.seconds
            )
            if not has_more:
                return

    def _contacts(self, start: int | None, end: int | None, size: int) -> Iterator[Page]:
        started = time.perf_counter()
        urls = self.export_urls()
        seconds = time.perf_counter() - started
        contacts = (c for c in self.export_rows(urls) if _in_window(c.get("updated_at"), start, end))
        for records, final in batches(contacts, size):
            yield Page(records=records, has_more=not final, next_cursor=None, request_seconds=seconds)
            seconds = 0.0

    def export_contacts(self) -> Iterator[dict[str, Any]]:
        """Every contact, through an export job, streamed from its files."""
        return self.export_rows(self.export_urls())

    def export_urls(self) -> list[str]:
        """Start a JSON export of all contacts and poll it until SendGrid hands out its file URLs."""
        path = "/v3/marketing/contacts/exports"
        answer = self.request("POST", path, json={"file_type": "json"}, ok=(200, 202)).body
        export_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(export_id, str) or not export_id:
            raise self.protocol_error(
                "the export answer has no id", "unexpected_response", "POST", self.url_for(path)
            )
        status_path = f"{path}/{export_id}"
        deadline = time.monotonic() + self.export_timeout_seconds
        attempt = 0
        while True:
            status = self.request("GET", status_path).body
            state = status.get("status") if isinstance(status, dict) else None
            if state == "ready":
                urls = status.get("urls")
                if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
                    raise self.protocol_error(
                        "a ready export has no urls", "unexpected_response", url=self.url_for(status_path)
                    )
                return urls
            if state == "failure":
                raise ProviderError(
                    "SendGrid could not export the contacts",
                    provider=self.name,
                    error_class="server",
                    code="export_failed",
                    provider_message=str(status.get("message") or ""),
                    retryable=True,
                    method="GET",
                    url=self.url_for(status_path),
                )
            if state != "pending":
                raise self.protocol_error(
                    f"unknown export status {state!r}", "unexpected_response", url=self.url_for(status_path)
                )
            if time.monotonic() >= deadline:
                raise ProviderError(
                    f"the contacts export {export_id} was not ready after {self.export_timeout_seconds:g} s",
                    provider=self.name,
                    error_class="timeout",
                    code="export_timeout",
                    retryable=True,
                    method="GET",
                    url=self.url_for(status_path),
                )
            time.sleep(EXPORT_POLL_SECONDS[min(attempt, len(EXPORT_POLL_SECONDS) - 1)])
            attempt += 1

    def export_rows(self, urls: Sequence[str]) -> Iterator[dict[str, Any]]:
        """The rows of each export file: presigned links, fetched without the API key."""
        for url in urls:
            try:
                target = normalise_base_url(url.split("?", 1)[0], label="SendGrid export URL")
            except ValueError as exc:
                raise ProviderError(
                    f"SendGrid handed back an export URL this client will not fetch: {exc}",
                    provider=self.name,
                    error_class="server",
                    code="bad_export_url",
                    url=url,
                ) from None
            query = url.split("?", 1)[1] if "?" in url else ""
            rows, _ = self.stream_json_lines(
                target + ("?" + query if query else ""), authenticated=False, what="GET export file"
            )
            yield from rows

    def http_error(self, response: httpx.Response, method: str, url: str) -> ProviderError:
        if urlsplit(url).path.startswith("/v3"):
            return self._api_error(response, method, url)
        # An export file (S3): a 403 is an expired link, not a bad API key.
        error_class, retryable = default_classification(response.status_code)
        return ProviderError(
            f"the export file answered HTTP {response.status_code}",
            provider=self.name,
            error_class="server" if error_class == "auth" else error_class,
            status=response.status_code,
            retryable=retryable,
            method=method,
            url=url,
        )

    def probe(self) -> float:
        return self.request("GET", "/v3/marketing/contacts/count").seconds

    # ---- writes ---------------------------------------------------------------------------------
    def write(
        self, name: str, records: Sequence[dict[str, Any]], *, idempotency_keys: Sequence[str]
    ) -> list[dict[str, Any]]:
        spec = self.write_spec(name)
        if len(records) != len(idempotency_keys):
            raise ValueError("one idempotency key per record")
        if len(records) > spec.max_batch:
            raise ValueError(f"{name} takes at most {spec.max_batch} records per call")
        if name == "mail_send":
            return [
                self._send_mail(record, key) for record, key in zip(records, idempotency_keys, strict=True)
            ]
        if not records:
            return []
        answer = self._upsert_contacts(records)
        return [dict(answer) for _ in records]

    def _send_mail(self, record: dict[str, Any], key: str) -> dict[str, Any]:
        """One send; the marker goes into every personalization's `custom_args` (an object there; the
        top-level `custom_args` is typed a string in SendGrid's spec, so it is left as given)."""
        marker = write_marker(key)
        personalizations = record.get("personalizations")
        if not isinstance(personalizations, list) or not all(isinstance(p, dict) for p in personalizations):
            raise ValueError("a mail_send record needs `personalizations`, a list of objects")
        body = dict(record)
        body["personalizations"] = [
            {**item, "custom_args": {**(item.get("custom_args") or {}), MARKER_ARG: marker}}
            for item in personalizations
        ]
        result = self.request("POST", "/v3/mail/send", json=body, ok=(202,), parse="none", retry=False)
        return {"status": result.status, "message_id": result.headers.get("x-message-id"), MARKER_ARG: marker}

    def _upsert_contacts(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        body = {"contacts": [dict(r) for r in records]}
        size = len(orjson.dumps(body))
        if size > MAX_UPSERT_BYTES:
            raise ProviderError(
                f"a contacts upsert of {size} bytes is over SendGrid's 6 MB limit; send fewer contacts",
                provider=self.name,
                error_class="validation",
                code="payload_too_large",
            )
        result = self.request("PUT", "/v3/marketing/contacts", json=body, ok=(202,))
        job_id = result.body.get("job_id") if isinstance(result.body, dict) else None
        return {"status": result.status, "job_id": job_id}

    def find_written(self, name: str, record: dict[str, Any], idempotency_key: str) -> dict[str, Any] | None:
        spec = self.write_spec(name)
        if spec.idempotency != "none":
            return None
        marker = write_marker(idempotency_key)
        raise ProviderError(
            f"SendGrid may have sent this message already and offers no read this client trusts to tell: "
            f"check Email Activity for custom_args {MARKER_ARG}={marker} before resending it by hand",
            provider=self.name,
            error_class="client",
            code="needs_a_person",
            retryable=False,
            method="POST",
            url=self.url_for("/v3/mail/send"),
        )


def reset_wait(value: str | None, now: float | None = None) -> float | None:
    """`X-RateLimit-Reset` (unix seconds) as seconds to wait from now; None when absent or unreadable."""
    if not value:
        return None
    try:
        reset = float(value.strip())
    except ValueError:
        return None
    return max(0.0, reset - (time.time() if now is None else now))


def _page_signature(rows: list[dict[str, Any]]) -> tuple[Any, ...]:
    """What tells two pages apart: (email, created) of every row."""
    return tuple((r.get("email"), r.get("created")) for r in rows)


def _json(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        return None


def _seconds(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _in_window(value: Any, start: int | None, end: int | None) -> bool:
    if start is None and end is None:
        return True
    seconds = _seconds(value)
    if seconds is None:
        return True  # no usable updated_at: keep it rather than lose it
    return (start is None or seconds >= start) and (end is None or seconds < end)
