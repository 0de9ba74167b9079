"""HubSpot CRM v3 contacts: list, incremental search on `lastmodifieddate`, batch upsert (PROVIDERS.md §4).

Auth is `Authorization: Bearer`, with one of two credentials:

- `private_app_token` (or a fixed `access_token`): `authentication_type: api_key`;
- OAuth2 (`authentication_type: oauth2`): `client_id`, `client_secret` and `refresh_token` select
  it. The access token comes from `POST /oauth/v1/token` (form: `grant_type=refresh_token`,
  `client_id`, `client_secret`, `refresh_token`) and is renewed by `expires_in` a minute before it
  runs out, as HubSpot asks (a 401 is not its refresh signal, though one 401 still renews once);
  `esm_dagster.auth.OAuth2Auth` keeps it in the mapping's encrypted credentials, one refresh per
  credential however many runs find it expired. HubSpot's refresh token does not rotate; the
  answer's `refresh_token` is stored anyway, so a rotation would not be lost either.

Streams:

- `contacts`: without a window start (the first run, a full refresh) the list endpoint
  `GET /crm/v3/objects/contacts` pages by `after` <- `paging.next.after`, filtered here on
  `lastmodifieddate` < window end. With a window start it searches
  `POST /crm/v3/objects/contacts/search` with `lastmodifieddate GTE start AND LT end` (epoch ms),
  sorted ascending by `lastmodifieddate`.

  The search is read as keyset pages: each page after the first asks again from the last record's
  `lastmodifieddate` (GTE, so records sharing that millisecond are read again and upserted, never
  lost) instead of following `after` through one long result. Two reasons. Search paging stops at
  10,000 results, so a window holding more must be narrowed rather than paged; and `after` through
  a result whose members leave it (a contact modified mid-read moves past the window's end) would
  skip the record that slides into the vacated place. Only a page whose records all share the
  window's first millisecond follows the server's `after` (a tie cannot be narrowed); a tie of more
  than 10,000 contacts is raised, not truncated.
- `contacts_archived`: `GET ...?archived=true`, filtered here on `archivedAt` in the window; the
  deletes of issue 7 read it.

Writes: `contacts_upsert` is `POST .../batch/upsert` by `idProperty: email`, at most 100 per call:
an upsert by natural key, so a retry after a lost answer writes nothing twice.

Errors are `{status,message,correlationId,category,errors}`; 429s carry `policyName` (`SECONDLY`,
`TEN_SECONDLY_ROLLING`, `DAILY`) and `X-HubSpot-RateLimit-*` headers, read into `retry_after`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Self

import httpx

from esm_dagster.auth import OAuth2Auth, RefreshTokenGrant, TokenEndpoint, store_for
from esm_dagster.providers.auth import BearerAuth
from esm_dagster.providers.base import CursorGuard, Page, ProviderError, StreamSpec, WriteSpec
from esm_dagster.providers.context import ProviderConfigError, ProviderContext
from esm_dagster.providers.http import _json_or_none, default_classification, normalise_base_url
from esm_dagster.providers.oauth_http import OAuthHttpProvider
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy

DEFAULT_BASE_URL = "https://api.hubapi.com"
CONTACTS = "/crm/v3/objects/contacts"
TOKEN_PATH = "/oauth/v1/token"  # noqa: S105 - a URL path
OAUTH_FIELDS = ("client_id", "client_secret", "refresh_token")
MAX_PAGE_SIZE = 100  # list limit; the search's 200 is unconfirmed, so 100 there too
MAX_BATCH = 100
SEARCH_CAP = 10_000
CURSOR_PROPERTY = "lastmodifieddate"
# Always requested: the keyset needs the modification time, the upsert the email.
BASE_PROPERTIES = ("email", "firstname", "lastname", "createdate", "lastmodifieddate", "hs_object_id")
SUPPORTED_VERSIONS = (None, "v3")


def to_ms(value: Any) -> int | None:
    """HubSpot's ISO-8601 text (`2026-10-01T12:00:00.123Z`) or epoch-ms text as epoch milliseconds."""
    if not isinstance(value, str) or not value:
        return None
    if value.isdigit():
        return int(value)
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


def mapped_properties(mapping_rules: Any) -> tuple[str, ...]:
    """The `properties.<name>` sources a mapping's rules read: HubSpot only returns requested ones."""
    from esm_dagster.rules.schema import RulesError, parse_rules

    try:
        rules = parse_rules(mapping_rules or {})
    except RulesError:
        return ()  # the engine reports invalid rules itself
    paths = [f.source for f in rules.fields] + list(rules.required_sources)
    return tuple(
        sorted({p.split(".")[1] for p in paths if p.startswith("properties.") and p.count(".") >= 1})
    )


class HubSpotProvider(OAuthHttpProvider):
    name: ClassVar[str] = "hubspot"
    label: ClassVar[str] = "HubSpot"
    BASE_SUFFIX: ClassVar[str] = "/crm/v3"
    STREAMS: ClassVar[tuple[StreamSpec, ...]] = (
        StreamSpec(
            name="contacts",
            default_target="user",
            supports_created_window=True,
            primary_key="id",
            cursor_field="properties.lastmodifieddate",
            max_page_size=MAX_PAGE_SIZE,
            description="contacts by lastmodifieddate: list for a full read, search for a window",
        ),
        StreamSpec(
            name="contacts_archived",
            default_target=None,
            supports_created_window=False,
            primary_key="id",
            cursor_field="archivedAt",
            max_page_size=MAX_PAGE_SIZE,
            description="GET /crm/v3/objects/contacts?archived=true, window filtered on archivedAt",
        ),
    )
    WRITES: ClassVar[tuple[WriteSpec, ...]] = (
        WriteSpec(
            name="contacts_upsert",
            operation="upsert",
            idempotency="natural",
            max_batch=MAX_BATCH,
            description="POST /crm/v3/objects/contacts/batch/upsert by idProperty email",
        ),
    )
    IDENTITY_FIELDS: ClassVar[tuple[str, ...]] = ("private_app_token", "access_token")
    AUTH_TYPES: ClassVar[frozenset[str]] = frozenset({"api_key", "oauth2", "webhook"})
    CREDENTIAL_SHAPES: ClassVar[Mapping[str, tuple[tuple[str, ...], ...]]] = {
        "api_key": (("private_app_token|access_token",),),
        "oauth2": (("client_id", "client_secret", "refresh_token"),),
        "webhook": (("client_secret|webhook_secret",),),
    }

    @classmethod
    def from_context(cls, ctx: ProviderContext) -> Self:
        if ctx.api_version not in SUPPORTED_VERSIONS:
            raise ProviderConfigError(
                f"mapping {ctx.mapping!r}: api_version {ctx.api_version!r} is not supported for HubSpot "
                "(use v3 or leave it empty; the date-versioned paths are not implemented)"
            )
        properties = mapped_properties(ctx.row.mapping_rules)
        if not uses_oauth(ctx.credentials):
            token = ctx.secret("access_token", "private_app_token")
            return cls(ctx.base_url, token=token, policy=ctx.policy, properties=properties)
        client_id = ctx.required_value("client_id")
        client_secret = ctx.secret("client_secret")
        base = normalise_base_url(ctx.base_url, label=cls.label, strip_suffix=cls.BASE_SUFFIX)
        endpoint = TokenEndpoint(
            base + TOKEN_PATH,
            provider=cls.name,
            timeout_seconds=ctx.policy.timeout_seconds,
            endpoints=ctx.policy.endpoints,
        )
        auth = OAuth2Auth(RefreshTokenGrant(client_id, client_secret), endpoint, store_for(ctx))
        return cls(ctx.base_url, oauth=auth, policy=ctx.policy, properties=properties)

    @classmethod
    def identity_fields(cls, credentials: Mapping[str, Any]) -> tuple[str, ...]:
        """An OAuth credential is its app and its grant, never the access token of the moment:
        a refresh must not move the mapping to another rate-limit bucket."""
        if uses_oauth(credentials):
            return ("client_id", "refresh_token")
        return cls.IDENTITY_FIELDS

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        token: Secret | None = None,
        oauth: OAuth2Auth | None = None,
        policy: TransportPolicy,
        properties: Sequence[str] = (),
        client: httpx.Client | None = None,
    ) -> None:
        """`token` (a private-app token) or `oauth` (renewed access tokens), not both."""
        auth: httpx.Auth
        if oauth is not None and token is None:
            auth = oauth
        elif oauth is None and isinstance(token, Secret):
            auth = BearerAuth(token)
        else:
            raise TypeError("give token (a Secret) or oauth, not both")
        super().__init__(base_url, auth=auth, policy=policy, client=client)
        self.properties = tuple(dict.fromkeys((*BASE_PROPERTIES, *properties)))

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
        """Pages of `stream`; `cursor` is an earlier `Page.next_cursor` of the same stream and window."""
        spec = self.stream(stream)
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        limit = min(page_size, spec.max_page_size)
        start_ms = None if window_start is None else int(window_start) * 1000
        end_ms = None if window_end is None else int(window_end) * 1000
        if stream == "contacts_archived":
            return self._list_pages(
                stream, limit, cursor, archived=True, field="archivedAt", lo=start_ms, hi=end_ms
            )
        if start_ms is None:
            return self._list_pages(stream, limit, cursor, archived=False, field=None, lo=None, hi=end_ms)
        return self._search_pages(limit, start_ms, end_ms, cursor)

    def _list_pages(
        self,
        stream: str,
        limit: int,
        cursor: str | None,
        *,
        archived: bool,
        field: str | None,
        lo: int | None,
        hi: int | None,
    ) -> Iterator[Page]:
        guard = CursorGuard(self.name, stream)
        after = self._decode_cursor(cursor, "list")[1] if cursor else None
        if cursor:
            guard.check(cursor)
        while True:
            params: dict[str, str] = {"limit": str(limit), "properties": ",".join(self.properties)}
            if archived:
                params["archived"] = "true"
            if after:
                params["after"] = after
            result = self.request("GET", CONTACTS, params=params)
            records, next_after = self._results(result.body, CONTACTS)
            kept = [r for r in records if self._in_window(r, field, lo, hi)]
            next_cursor = None
            if next_after is not None:
                if not records:
                    raise self.protocol_error(
                        "paging.next on an empty page", "empty_page_with_next", url=CONTACTS
                    )
                next_cursor = f"list:{next_after}"
                guard.check(next_cursor)
            yield Page(kept, next_cursor is not None, next_cursor, result.seconds)
            if next_after is None:
                return
            after = next_after

    def _in_window(self, record: dict[str, Any], field: str | None, lo: int | None, hi: int | None) -> bool:
        if lo is None and hi is None:
            return True
        stamp = to_ms(record.get(field)) if field else self._modified_ms(record)
        if stamp is None:
            raise self.protocol_error(
                f"contact {record.get('id')!r} has no readable {field or CURSOR_PROPERTY}",
                "missing_cursor_field",
            )
        return (lo is None or stamp >= lo) and (hi is None or stamp < hi)

    def _modified_ms(self, record: dict[str, Any]) -> int | None:
        props = record.get("properties")
        return to_ms(props.get(CURSOR_PROPERTY)) if isinstance(props, dict) else None

    def _search_pages(
        self, limit: int, start_ms: int, end_ms: int | None, cursor: str | None
    ) -> Iterator[Page]:
        path = f"{CONTACTS}/search"
        guard = CursorGuard(self.name, "contacts")
        gte, after = start_ms, None
        if cursor:
            guard.check(cursor)
            gte_text, _, after_text = self._decode_cursor(cursor, "search")[1].partition(":")
            gte, after = int(gte_text), after_text or None
        read_in_query = 0  # records read since the query's gte last moved (for the cap check)
        while True:
            filters: list[dict[str, str]] = [
                {"propertyName": CURSOR_PROPERTY, "operator": "GTE", "value": str(gte)}
            ]
            if end_ms is not None:
                filters.append({"propertyName": CURSOR_PROPERTY, "operator": "LT", "value": str(end_ms)})
            body: dict[str, Any] = {
                "filterGroups": [{"filters": filters}],
                "sorts": [{"propertyName": CURSOR_PROPERTY, "direction": "ASCENDING"}],
                "properties": list(self.properties),
                "limit": limit,
            }
            if after:
                body["after"] = after
            result = self.request("POST", path, json=body)
            records, next_after = self._results(result.body, path)
            total = result.body.get("total")
            read_in_query += len(records)
            # No next page although the query matched more than was read: the paging cap.
            capped = next_after is None and isinstance(total, int) and total > read_in_query
            if next_after is None and not capped:
                yield Page(records, False, None, result.seconds)
                return
            if not records:
                raise self.protocol_error(
                    "no records on a page that is not the last", "empty_page_with_next", "POST", path
                )
            stamps = [self._modified_ms(r) for r in records]
            if any(s is None for s in stamps):
                raise self.protocol_error(
                    f"a contact has no readable {CURSOR_PROPERTY}", "missing_cursor_field", "POST", path
                )
            last = max(s for s in stamps if s is not None)
            if last > gte:  # narrow the window to start at the last record's millisecond
                gte, after, read_in_query = last, None, 0
            elif next_after is not None:  # the page is one tie at gte: only the server's cursor moves
                after = next_after
            else:
                raise self.protocol_error(
                    f"more than {SEARCH_CAP} contacts share lastmodifieddate {gte} ms; HubSpot's search "
                    "cannot page past that many and a tie cannot be narrowed",
                    "search_cap",
                    "POST",
                    path,
                )
            next_cursor = f"search:{gte}:{after or ''}"
            guard.check(next_cursor)
            yield Page(records, True, next_cursor, result.seconds)

    def _decode_cursor(self, cursor: str, kind: str) -> tuple[str, str]:
        prefix, sep, rest = cursor.partition(":")
        if (
            prefix != kind
            or not sep
            or not rest
            or (kind == "search" and not rest.split(":", 1)[0].isdigit())
        ):
            raise ProviderError(
                f"cursor {cursor!r} is not a HubSpot {kind} cursor of this stream and window",
                provider=self.name,
                error_class="client",
                code="bad_cursor",
            )
        return prefix, rest

    def _results(self, body: Any, path: str) -> tuple[list[dict[str, Any]], str | None]:
        if not isinstance(body, dict) or not isinstance(body.get("results"), list):
            raise self.protocol_error("the answer has no results list", "unexpected_response", url=path)
        records = body["results"]
        if not all(isinstance(r, dict) and isinstance(r.get("id"), str) for r in records):
            raise self.protocol_error("a result is not an object with an id", "unexpected_response", url=path)
        paging = body.get("paging")
        after = None
        if isinstance(paging, dict) and isinstance(paging.get("next"), dict):
            value = paging["next"].get("after")
            if not isinstance(value, str) or not value:
                raise self.protocol_error("paging.next has no after", "unexpected_response", url=path)
            after = value
        return records, after

    def probe(self) -> float:
        return self.request("GET", CONTACTS, params={"limit": "1"}).seconds

    # ---- writes ---------------------------------------------------------------------------------
    def write(
        self, name: str, records: Sequence[dict[str, Any]], *, idempotency_keys: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Upsert contacts given as `{property: value}` (with `email`); HubSpot's object per record.

        The idempotency keys travel as `objectWriteTraceId` (they tie an error to its record); the
        upsert by email is what makes a repeat harmless.
        """
        spec = self.write_spec(name)
        if len(idempotency_keys) != len(records):
            raise ValueError("one idempotency key per record")
        if not 1 <= len(records) <= spec.max_batch:
            raise ValueError(f"{name} takes 1 to {spec.max_batch} records per call, got {len(records)}")
        inputs: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for index, (record, key) in enumerate(zip(records, idempotency_keys, strict=True)):
            email = record.get("email")
            if not isinstance(email, str) or not email.strip():
                raise ValueError(f"{name}: record {index} has no email (the upsert key)")
            lowered = email.strip().lower()
            if lowered in seen:
                raise ValueError(f"{name}: records {seen[lowered]} and {index} have the same email")
            seen[lowered] = index
            properties = {k: _property_text(v) for k, v in record.items() if k != "email"}
            inputs.append(
                {
                    "idProperty": "email",
                    "id": email.strip(),
                    "properties": properties,
                    "objectWriteTraceId": key,
                }
            )
        result = self.request("POST", f"{CONTACTS}/batch/upsert", json={"inputs": inputs})
        body = result.body
        if not isinstance(body, dict) or not isinstance(body.get("results"), list):
            raise self.protocol_error("the upsert answer has no results", "unexpected_response", "POST")
        by_email: dict[str, dict[str, Any]] = {}
        for item in body["results"]:
            props = item.get("properties") if isinstance(item, dict) else None
            email = props.get("email") if isinstance(props, dict) else None
            if isinstance(email, str):
                by_email[email.lower()] = item
        out = []
        for record in records:  # HubSpot does not promise the input order
            found = by_email.get(str(record["email"]).strip().lower())
            if found is None:
                raise self.protocol_error(
                    "the upsert answer lacks a record that was sent", "missing_result", "POST"
                )
            out.append(found)
        return out

    # ---- errors ---------------------------------------------------------------------------------
    def error_details(self, body: Any) -> tuple[str | None, str | None]:
        if not isinstance(body, dict):
            return None, None
        code = body.get("category") or body.get("errorType")
        message = body.get("message")
        details = [
            e.get("message") for e in body.get("errors") or [] if isinstance(e, dict) and e.get("message")
        ]
        if details:
            message = f"{message}: {'; '.join(str(d) for d in details[:5])}"
        return (str(code) if code else None, str(message) if message else None)

    def http_error(self, response: httpx.Response, method: str, url: str) -> ProviderError:
        status = response.status_code
        body = _json_or_none(response)
        error_class, retryable = default_classification(status)
        code, message = self.error_details(body)
        retry_after: float | None = None
        if status == 429:
            policy = body.get("policyName") if isinstance(body, dict) else None
            code = str(policy) if policy else code
            retry_after = rate_limit_wait(str(policy or ""), response.headers)
        elif status == 409:
            error_class = "validation"
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


def uses_oauth(credentials: Mapping[str, Any]) -> bool:
    """`client_id` + `client_secret` + `refresh_token` select OAuth; a private-app token, when
    also set, wins (a private-app mapping may hold the app's client secret to verify webhooks)."""
    return all(credentials.get(name) for name in OAUTH_FIELDS) and not credentials.get("private_app_token")


def rate_limit_wait(policy: str, headers: httpx.Headers, now: dt.datetime | None = None) -> float | None:
    """Seconds until HubSpot takes requests again after a 429 of `policy`.

    A `Retry-After` wins when sent. `SECONDLY`: one second. `TEN_SECONDLY_ROLLING`: the rolling
    window the `X-HubSpot-RateLimit-Interval-Milliseconds` header names (10 s when absent). `DAILY`:
    until the next UTC midnight (when the account's day ends is unconfirmed): longer than any
    policy sleeps, so the run stops, checkpointed, and a later one resumes.
    """
    from esm_dagster.providers.http import retry_after_seconds

    explicit = retry_after_seconds(headers.get("retry-after"))
    if explicit is not None:
        return explicit
    policy = policy.upper()
    if policy == "SECONDLY":
        return 1.0
    if policy == "TEN_SECONDLY_ROLLING":
        interval = headers.get("x-hubspot-ratelimit-interval-milliseconds") or ""
        return int(interval) / 1000 if interval.isdigit() else 10.0
    if policy == "DAILY":
        now = now or dt.datetime.now(dt.UTC)
        midnight = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return (midnight - now).total_seconds()
    return None


def _property_text(value: Any) -> str:
    """HubSpot property values are strings: booleans as `true`/`false`, None as empty (clears it)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
