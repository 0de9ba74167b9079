"""The `x-rest` block of a mapping's rules: everything the declarative REST provider knows of an API.

A booking platform or an ERP without a provider module is described here instead of in code: where
its API lives, how it authenticates, where each stream's records sit in the answer, how it pages,
which field is the cursor and in what format, and which endpoints take writes. The block lives
under the `x-rest` extension key of `mapping_rules` (the rules schema keeps `x-` keys untouched),
so the rules schema itself is unchanged and other providers never see it.

It is validated when the mapping is written (`esm mapping add` -> `resolve_stream` ->
`RestProvider.stream_names`) and again when a client is built; every problem names its field:
`x-rest.streams.bookings.paginator.cursor_path: required for a cursor paginator`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from esm_dagster.providers.context import ProviderConfigError

CONFIG_KEY = "x-rest"
TimeFormat = Literal["iso", "unix_s", "unix_ms"]
_PATH_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_DOTTED = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")
# Headers a mapping may not set by hand: the auth and the transport own them.
_RESERVED_HEADERS = frozenset({"authorization", "host", "content-length", "content-type", "cookie"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _relative_path(value: str) -> str:
    if not value.startswith("/") or "://" in value or "?" in value or "#" in value:
        raise ValueError(f"{value!r} must be a path starting with '/' (no scheme, query or fragment)")
    return value


def _dotted(value: str) -> str:
    if not _DOTTED.fullmatch(value):
        raise ValueError(f"{value!r} is not a dotted path like 'data.items'")
    return value


def _optional_dotted(value: str | None) -> str | None:
    return None if value is None else _dotted(value)


def _header(value: str) -> str:
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not an HTTP header name")
    return value


class ApiKeyAuth(_Model):
    """A key in a header (`X-Api-Key: <key>`) or in the query (`?api_key=<key>`)."""

    type: Literal["api_key"]
    # `in_` because `in` is a keyword; written `in:` in the rules.
    in_: Literal["header", "query"] = Field(alias="in")
    name: str = Field(min_length=1, max_length=100)  # the header or query parameter
    credential: str = "api_key"  # the credentials field holding the key
    prefix: str = ""  # e.g. "Token " for `Authorization`-style key headers

    @model_validator(mode="after")
    def _header_name(self) -> ApiKeyAuth:
        if self.in_ == "header":
            _header(self.name)
            if self.name.lower() in _RESERVED_HEADERS - {"authorization"}:
                raise ValueError(f"name: {self.name!r} cannot carry a key")
        return self


class BearerTokenAuth(_Model):
    type: Literal["bearer"]
    credential: str = "token"


class BasicCredentialsAuth(_Model):
    type: Literal["basic"]
    username: str = "username"  # credentials field names, not values
    password: str = "password"  # noqa: S105 - the name of the credentials field, not a password


class NoAuth(_Model):
    type: Literal["none"]


Auth = Annotated[ApiKeyAuth | BearerTokenAuth | BasicCredentialsAuth | NoAuth, Field(discriminator="type")]


class Window(_Model):
    """Server-side filter on the cursor field: `start_param` inclusive, `end_param` exclusive."""

    start_param: str = Field(min_length=1)
    end_param: str | None = None
    format: TimeFormat = "iso"


class CursorPaginator(_Model):
    """The next page's token is in the body (`cursor_path`) and goes back as `cursor_param`."""

    type: Literal["cursor"]
    cursor_path: str
    cursor_param: str = "cursor"
    size_param: str | None = "limit"

    @field_validator("cursor_path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _dotted(value)


class OffsetPaginator(_Model):
    type: Literal["offset"]
    offset_param: str = "offset"
    size_param: str = "limit"
    total_path: str | None = None  # the body's total count, when the API gives one

    @field_validator("total_path")
    @classmethod
    def _total(cls, value: str | None) -> str | None:
        return _optional_dotted(value)


class PagePaginator(_Model):
    type: Literal["page"]
    page_param: str = "page"
    size_param: str | None = "per_page"
    first_page: int = Field(default=1, ge=0)
    total_pages_path: str | None = None

    @field_validator("total_pages_path")
    @classmethod
    def _total(cls, value: str | None) -> str | None:
        return _optional_dotted(value)


class LinkHeaderPaginator(_Model):
    """RFC 8288 `Link: <url>; rel="next"` (GitHub, Shopify); the URL must stay on the mapping's origin."""

    type: Literal["link_header"]
    size_param: str | None = "limit"


class NextUrlPaginator(_Model):
    """The next page's URL is in the body (`next_path`, e.g. `links.next`)."""

    type: Literal["next_url"]
    next_path: str
    size_param: str | None = "limit"

    @field_validator("next_path")
    @classmethod
    def _next(cls, value: str) -> str:
        return _dotted(value)


class SinglePage(_Model):
    type: Literal["none"]
    size_param: str | None = None


Paginator = Annotated[
    CursorPaginator | OffsetPaginator | PagePaginator | LinkHeaderPaginator | NextUrlPaginator | SinglePage,
    Field(discriminator="type"),
]


class StreamConfig(_Model):
    path: str
    record_path: str | None = None  # None: the body is the list itself
    primary_key: str = "id"
    cursor_field: str | None = None
    cursor_format: TimeFormat = "iso"
    window: Window | None = None
    params: dict[str, str] = Field(default_factory=dict)  # constant query parameters
    max_page_size: int = Field(default=100, ge=1, le=10_000)
    paginator: Paginator
    description: str = ""

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _relative_path(value)

    @field_validator("record_path")
    @classmethod
    def _record(cls, value: str | None) -> str | None:
        return _optional_dotted(value)

    @model_validator(mode="after")
    def _window_needs_cursor(self) -> StreamConfig:
        if self.window is not None and self.cursor_field is None:
            raise ValueError("window: needs cursor_field (the field the server filters on)")
        return self


class FindConfig(_Model):
    """How a write without idempotency is looked up after a lost answer: GET `path`?`param`=<key>."""

    path: str
    param: str
    record_path: str | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _relative_path(value)

    @field_validator("record_path")
    @classmethod
    def _record(cls, value: str | None) -> str | None:
        return _optional_dotted(value)


class WriteConfig(_Model):
    method: Literal["POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: str  # may name record fields: /members/{id}
    operation: Literal["create", "update", "upsert", "send", "delete"] = "create"
    body: Literal["json", "form", "none"] = "json"
    envelope: str | None = None  # wrap the record: {"booking": {...}}
    response_path: str | None = None  # where the written record is in the answer
    idempotency: Literal["key", "natural", "none"]
    idempotency_header: str | None = None
    marker_field: str | None = None  # body field set to the idempotency key (for `find`)
    find: FindConfig | None = None
    description: str = ""

    @field_validator("idempotency_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        return None if value is None else _header(value)

    @field_validator("response_path")
    @classmethod
    def _response(cls, value: str | None) -> str | None:
        return _optional_dotted(value)

    @field_validator("path")
    @classmethod
    def _template(cls, value: str) -> str:
        _relative_path(value)
        rest = _PATH_FIELD.sub("", value)
        if "{" in rest or "}" in rest:
            raise ValueError(f"{value!r}: placeholders are {{field}} with a plain field name")
        return value

    @model_validator(mode="after")
    def _idempotency_is_usable(self) -> WriteConfig:
        if self.idempotency == "key" and self.idempotency_header is None:
            raise ValueError(
                "idempotency_header: required when idempotency is 'key' (the header the API dedupes on)"
            )
        if self.idempotency != "key" and self.idempotency_header is not None:
            raise ValueError("idempotency_header: only for idempotency 'key'")
        if self.idempotency == "none" and (self.find is None or self.marker_field is None):
            raise ValueError(
                "find and marker_field: required when idempotency is 'none' (how a write whose answer "
                "was lost is found again instead of being sent twice)"
            )
        if self.body == "none" and (self.envelope or self.marker_field):
            raise ValueError("body: 'none' sends no body, so envelope and marker_field cannot apply")
        return self

    @property
    def path_fields(self) -> tuple[str, ...]:
        return tuple(_PATH_FIELD.findall(self.path))


_UNION_TAGS = frozenset(
    {"api_key", "bearer", "basic", "none", "cursor", "offset", "page", "link_header", "next_url"}
)


class ErrorBody(_Model):
    """Where the API's error body keeps its code and message."""

    code_path: str = "error.code"
    message_path: str = "error.message"


class RestConfig(_Model):
    base_path: str = ""
    auth: Auth
    headers: dict[str, str] = Field(default_factory=dict)
    streams: dict[str, StreamConfig] = Field(min_length=1)
    writes: dict[str, WriteConfig] = Field(default_factory=dict)
    errors: ErrorBody = Field(default_factory=ErrorBody)

    @field_validator("base_path")
    @classmethod
    def _base(cls, value: str) -> str:
        return "" if value in ("", "/") else _relative_path(value).rstrip("/")

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            _header(name)
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"{name!r} is set by the auth or the transport, not by headers")
        return value

    @field_validator("streams", "writes")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name):
                raise ValueError(f"{name!r}: names are lower case letters, digits and '_'")
        return value

    def credential_fields(self) -> tuple[str, ...]:
        auth = self.auth
        if isinstance(auth, ApiKeyAuth):
            return (auth.credential,)
        if isinstance(auth, BearerTokenAuth):
            return (auth.credential,)
        if isinstance(auth, BasicCredentialsAuth):
            return (auth.username, auth.password)
        return ()


def _where(loc: tuple[int | str, ...]) -> str:
    out = CONFIG_KEY
    previous = ""
    for part in loc:
        text = str(part)
        if previous in ("auth", "paginator") and text in _UNION_TAGS:
            previous = text
            continue  # the discriminated union's tag, not a field of the document
        out += f".{'in' if text == 'in_' else text}"
        previous = text
    return out


def parse_rest_config(raw: Any) -> RestConfig:
    """The validated block, or a `ProviderConfigError` naming every wrong field under `x-rest`."""
    if raw is None:
        raise ProviderConfigError(f"{CONFIG_KEY}: required for provider 'rest' (base path, auth, streams)")
    if not isinstance(raw, dict):
        raise ProviderConfigError(f"{CONFIG_KEY}: expected an object, got {type(raw).__name__}")
    try:
        return RestConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            where = _where(tuple(err["loc"]))
            message = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "missing":
                message = "required"
            elif err["type"] == "extra_forbidden":
                message = "unknown option"
            elif err["type"] in ("literal_error", "union_tag_invalid"):
                got = err.get("input")
                message += f" (got {got!r})" if isinstance(got, str | int) else ""
            problems.append(f"{where}: {message}")
        raise ProviderConfigError("; ".join(problems)) from None


def rest_config_of(rules: Any) -> RestConfig:
    """The `x-rest` block of parsed `MappingRules`."""
    extra = getattr(rules, "model_extra", None) or {}
    return parse_rest_config(extra.get(CONFIG_KEY))
