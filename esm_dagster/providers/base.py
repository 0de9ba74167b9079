"""What every provider module shares: streams, pages, the provider contract and its one error type.

A provider turns one external API into named streams of records, read page by page. It does no
retrying of its own (the transport policy decides that from `ProviderError.retryable` and
`retry_after`), holds its credential as a `Secret`, and raises only `ProviderError`, whose text is
built from parts that cannot hold a credential: provider name, method, URL path without query,
status, error class, provider code and the provider's message with known secrets masked.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, get_args
from urllib.parse import urlsplit

from esm_dagster.security.redact import redact_text
from esm_dagster.security.secret import Secret

if TYPE_CHECKING:
    from esm_dagster.providers.context import ProviderContext
    from esm_dagster.rules.schema import MappingRules

ErrorClass = Literal["timeout", "auth", "rate_limit", "validation", "server", "client", "network"]
ERROR_CLASSES: tuple[str, ...] = get_args(ErrorClass)
# The code of a failure before any byte of the request left (no connection was made): unlike
# other timeouts and network errors it proves the provider did not act, so a write needs no lookup.
NOT_SENT_CODE = "not_sent"

_URL_TAIL = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^\s?#'\"<>]*)[?#][^\s'\"<>]*", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.\-]*://)[^\s/@'\"<>]*@", re.IGNORECASE)
_MAX_MESSAGE = 500


def scrub(text: str, secrets: Iterable[Secret] = ()) -> str:
    """`text` without the given secrets, credential-shaped tokens, URL queries or URL user info."""
    text = redact_text(text, [secret.reveal() for secret in secrets])
    text = _URL_TAIL.sub(r"\1", text)
    return _URL_USERINFO.sub(r"\1", text)


def safe_url(url: object) -> str:
    """Scheme, host, port and path only: no user info, query string or fragment."""
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return "<unparseable url>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    if not parts.scheme and not host:
        return parts.path
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a stream: records in the provider's order and where to continue."""

    records: list[dict[str, Any]]
    has_more: bool
    next_cursor: str | None  # the cursor to resume after this page; None once the stream is done
    request_seconds: float


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str
    default_target: str | None  # hint for the loader, e.g. the internal table a stream usually fills
    supports_created_window: bool  # whether window_start / window_end filter server-side
    primary_key: str = "id"
    cursor_field: str | None = "created"
    max_page_size: int = 100
    description: str = ""


Idempotency = Literal["key", "natural", "none"]


@dataclass(frozen=True, slots=True)
class WriteSpec:
    """One kind of write a provider makes, and what makes repeating it safe.

    `idempotency`:
    - `key`: the provider replays its first answer to a repeat carrying the same idempotency key
      (Stripe `Idempotency-Key`, PayPal `PayPal-Request-Id`), so a retry after a lost answer is safe;
    - `natural`: an upsert by a natural key (email, external id); repeating it changes nothing;
    - `none`: a resend may write twice (Twilio messages, Telegram sendMessage); the transport does
      not retry it blindly: after a lost answer `find_written` looks for the first attempt's result
      before anything is sent again (`sync.outbound.write_records`).
    """

    name: str
    operation: Literal["create", "update", "upsert", "send", "delete"]
    idempotency: Idempotency
    max_batch: int = 1
    description: str = ""


class ProviderError(Exception):
    """A failed provider call, classified for the transport policy; safe to log, print and pickle."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        error_class: ErrorClass,
        status: int | None = None,
        code: str | None = None,
        provider_message: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        request_id: str | None = None,
        method: str | None = None,
        url: str | None = None,
        secrets: Iterable[Secret] = (),
    ) -> None:
        if error_class not in ERROR_CLASSES:
            raise ValueError(f"unknown error class {error_class!r}")
        secrets = tuple(secrets)
        self.provider = provider
        self.error_class: ErrorClass = error_class
        self.status = status
        self.code = scrub(code, secrets)[:100] if code else None
        self.provider_message = scrub(provider_message, secrets)[:_MAX_MESSAGE] if provider_message else None
        self.retryable = retryable
        self.retry_after = retry_after
        self.request_id = scrub(request_id, secrets)[:100] if request_id else None
        self.method = method
        self.url = scrub(safe_url(url), secrets) if url else None
        self.summary = scrub(message, secrets)[:_MAX_MESSAGE]
        super().__init__(self._render())

    def _render(self) -> str:
        where = " ".join(p for p in (self.method, self.url) if p)
        head = f"{self.provider} {where}".strip()
        status = f"HTTP {self.status} " if self.status is not None else ""
        details = [f"{status}{self.error_class}"]
        if self.code:
            details.append(f"code={self.code}")
        if self.request_id:
            details.append(f"request_id={self.request_id}")
        details.append("retryable" if self.retryable else "not retryable")
        text = f"{head}: {self.summary} ({', '.join(details)})"
        if self.provider_message and self.provider_message not in self.summary:
            text += f": {self.provider_message}"
        return text

    def __repr__(self) -> str:
        return (
            f"ProviderError(provider={self.provider!r}, error_class={self.error_class!r}, "
            f"status={self.status!r}, code={self.code!r}, retryable={self.retryable!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # The default pickling calls cls(*args) and would lose the keyword-only fields; Dagster
        # and multiprocess executors pickle exceptions across process boundaries.
        return (_restore_provider_error, (self._state(),))

    def _state(self) -> dict[str, Any]:
        return {
            "message": self.summary,
            "provider": self.provider,
            "error_class": self.error_class,
            "status": self.status,
            "code": self.code,
            "provider_message": self.provider_message,
            "retryable": self.retryable,
            "retry_after": self.retry_after,
            "request_id": self.request_id,
            "method": self.method,
            "url": self.url,
        }


def _restore_provider_error(state: dict[str, Any]) -> ProviderError:
    return ProviderError(**state)


class Provider(abc.ABC):
    """One external API seen as named streams of records.

    `iter_pages` yields pages in the provider's own order; `window_start` (inclusive) and
    `window_end` (exclusive) are unix seconds on the stream's cursor field when the stream
    `supports_created_window`; `cursor` resumes after the `Page.next_cursor` of an earlier run.
    """

    name: ClassVar[str]
    # The streams, first one the default when a mapping names none; known before any instance
    # exists, so the catalog can validate `sync_config.stream` when a row is written.
    STREAMS: ClassVar[tuple[StreamSpec, ...]] = ()
    # Whether `latest_event` / `events_after` read a real change feed; without one, the real-time
    # sensor polls the streams instead.
    supports_events: ClassVar[bool] = False
    # The writes, by name; outbound sync and `esm` pushes go through `write`.
    WRITES: ClassVar[tuple[WriteSpec, ...]] = ()
    # Credential fields that identify the account (not the tokens it is given): the rate-limit
    # bucket key is built from these, so a refreshed access token keeps the same bucket.
    IDENTITY_FIELDS: ClassVar[tuple[str, ...]] = ()
    # Whether reading a page consumes what came before it (Telegram `getUpdates` confirms, and the
    # server drops, every update below the offset it is asked for): the engine then stores each page
    # before it asks for the next one and does not read ahead.
    consuming_reads: ClassVar[bool] = False
    # The `authentication_type` values a mapping of this provider may declare, and for each the
    # credential shapes it accepts: one shape is a tuple of fields that must all be set, a field
    # written `a|b` is satisfied by either name. Checked when a row is written
    # (`providers.auth_types.check_authentication`), so a mismatch is refused before any sync.
    AUTH_TYPES: ClassVar[frozenset[str]] = frozenset()
    CREDENTIAL_SHAPES: ClassVar[Mapping[str, tuple[tuple[str, ...], ...]]] = {}

    @classmethod
    def auth_types(cls, rules: MappingRules | None = None) -> frozenset[str]:
        """The auth types a mapping with these rules may declare (`rest` reads its `x-rest.auth`)."""
        return cls.AUTH_TYPES

    @classmethod
    def credential_shapes(
        cls, auth_type: str, rules: MappingRules | None = None
    ) -> tuple[tuple[str, ...], ...]:
        """The credential shapes `auth_type` accepts; empty: it needs no field."""
        return cls.CREDENTIAL_SHAPES.get(auth_type, ())

    @classmethod
    def identity_fields(cls, credentials: Mapping[str, Any]) -> tuple[str, ...]:
        """The `IDENTITY_FIELDS` that name this credential's account (a provider with two kinds of
        credential picks the fields of the kind it holds)."""
        return cls.IDENTITY_FIELDS

    @classmethod
    def from_context(cls, ctx: ProviderContext) -> Self:
        """The client for a mapping row; every registered provider implements it."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from a mapping")

    @classmethod
    def stream_names(cls, rules: MappingRules | None = None) -> list[str]:
        """The stream names a mapping with these rules may name, default first.

        Known from the class for a provider module; a provider configured by the rules themselves
        (`rest`) reads them from `rules` and raises a `ValueError` naming the wrong field there.
        """
        return [spec.name for spec in cls.STREAMS]

    def streams(self) -> Sequence[StreamSpec]:
        return self.STREAMS

    def stream(self, name: str) -> StreamSpec:
        for spec in self.streams():
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in self.streams())
        raise ValueError(f"{self.name} has no stream {name!r} (streams: {known})")

    @abc.abstractmethod
    def iter_pages(
        self,
        stream: str,
        *,
        window_start: int | None = None,
        window_end: int | None = None,
        page_size: int = 100,
        cursor: str | None = None,
    ) -> Iterator[Page]: ...

    @abc.abstractmethod
    def probe(self) -> float:
        """One cheap authenticated call; returns its duration in seconds or raises ProviderError."""

    def latest_event(self, types: Sequence[str] | None = None) -> tuple[str, int] | None:
        """`(id, created)` of the provider's newest change event (of `types`), or None if there is none.

        The real-time sensor launches a sync when the newest event changes: one cheap call per tick
        instead of reading a stream. Providers without an event feed return None here and leave
        `supports_events` False.
        """
        return None

    def events_after(self, event_id: str, types: Sequence[str] | None = None) -> list[str]:
        """Ids of the change events newer than `event_id` (of `types`), newest first.

        The real-time sensor launches a sync when the newest event changes; this tells it what
        changed since the event it last saw. Providers without an event feed raise a client error.
        """
        raise ProviderError(
            f"{self.name} has no event feed",
            provider=self.name,
            error_class="client",
            code="events_not_supported",
            retryable=False,
        )

    # ---- writes ---------------------------------------------------------------------------------
    def write_spec(self, name: str) -> WriteSpec:
        for spec in self.WRITES:
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in self.WRITES) or "none"
        raise ValueError(f"{self.name} has no write {name!r} (writes: {known})")

    def write(
        self, name: str, records: Sequence[dict[str, Any]], *, idempotency_keys: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Write one batch (at most `write_spec(name).max_batch` records); the provider's answer per record.

        `idempotency_keys[i]` is deterministic for `records[i]` (mapping, record, version): the same
        record written again carries the same key, on every retry and every re-run.
        """
        raise ProviderError(
            f"{self.name} has no writes",
            provider=self.name,
            error_class="client",
            code="writes_not_supported",
            retryable=False,
        )

    def find_written(self, name: str, record: dict[str, Any], idempotency_key: str) -> dict[str, Any] | None:
        """For a write with `idempotency="none"`: what an earlier attempt wrote for this record, or None.

        Called after an attempt whose answer was lost (timeout, dropped connection, 5xx after the
        provider may have acted), before any resend.
        """
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(slots=True)
class CursorGuard:
    """Stops a paginator that the server sends around in circles (same cursor twice)."""

    provider: str
    stream: str
    seen: set[str] = field(default_factory=set)

    def check(self, cursor: str) -> None:
        if cursor in self.seen:
            raise ProviderError(
                f"the {self.stream} stream returned cursor {cursor!r} twice; stopping instead of looping",
                provider=self.provider,
                error_class="server",
                code="repeated_cursor",
                retryable=False,
            )
        self.seen.add(cursor)
