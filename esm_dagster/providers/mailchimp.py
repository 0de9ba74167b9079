"""Mailchimp Marketing API v3: one audience's members, incremental by `last_changed` (PROVIDERS.md §7).

Auth is HTTP Basic `anystring:<api key>`; the key's `-usX` suffix names the data centre, so the base
URL is `https://usX.api.mailchimp.com/3.0`. An `api_endpoint` naming another data centre would send
every request to an account the key does not belong to, so it is refused as a configuration error
(a loopback emulator excepted). The audience is `credentials.list_id`.

Or OAuth (`authentication_type: oauth2`, `credentials.access_token`): the token from Mailchimp's
OAuth flow, sent as `Authorization: Bearer`. It does not expire, so there is nothing to renew
(PROVIDERS.md §7). It carries no data centre: `credentials.dc` names it, else one call to the
OAuth metadata endpoint (`https://login.mailchimp.com/oauth2/metadata`, `Authorization: OAuth
<token>`, answer `{dc, api_endpoint, ...}`; URL and shape [U], so `credentials.metadata_url` can
point elsewhere) tells it when the client is built, and the endpoint check above applies to it.

Streams: `members` and `members_archived` (`status=archived`), both
`GET /3.0/lists/{list_id}/members` paged by `count` / `offset` until `offset >= total_items`. A window
is sent as `since_last_changed` (one second early: whether Mailchimp's bound is exclusive is
unconfirmed) and `before_last_changed`, and applied here exactly on `last_changed`, start inclusive,
end exclusive.

Offset paging skips records when members before the offset leave the result while it is read (a
member changed mid-read moves past `before_last_changed`): each page's `total_items` is compared
with the page before, and when it fell by `d` the next page starts `d` before this page's offset.
Re-read members are upserts; the engine drops unchanged repeats of the page before.

Writes: `members_upsert` is `PUT /3.0/lists/{list_id}/members/{md5(lowercase(email))}`, an upsert by
natural key ("natural"): repeating it after a lost answer writes nothing twice.

Errors are problem+json `{type,title,status,detail,instance,errors}`; a 429 (more than 10
connections at once) has no rate-limit headers, and a bare 403 without a body is Mailchimp's
high-volume throttle [3P], so both are retryable rate limits.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Self
from urllib.parse import quote, urlsplit

import httpx

from esm_dagster.providers.auth import BasicAuth, BearerAuth
from esm_dagster.providers.base import CursorGuard, Page, ProviderError, StreamSpec, WriteSpec
from esm_dagster.providers.context import ProviderConfigError, ProviderContext
from esm_dagster.providers.http import JsonHttpProvider, _json_or_none, default_classification
from esm_dagster.security.endpoints import EndpointPolicy, is_loopback
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy
from esm_dagster.transport.client import GuardedTransport

MAX_COUNT = 1000
BASIC_USER = "anystring"  # Mailchimp ignores the user name
_DC_RE = re.compile(r"-([a-z]+[0-9]+)$")
_DC_NAME = re.compile(r"^[a-z]+[0-9]+$")
METADATA_URL = "https://login.mailchimp.com/oauth2/metadata"  # [U]
_LIST_ID_RE = re.compile(r"^[A-Za-z0-9]{1,64}$")
WRITABLE = ("email_address", "status_if_new", "status", "merge_fields", "language", "vip", "email_type")


def subscriber_hash(email: str) -> str:
    """The member id Mailchimp derives from an address: md5 of its lower-cased form."""
    return hashlib.md5(email.strip().lower().encode("utf-8"), usedforsecurity=False).hexdigest()


def data_centre(api_key: Secret) -> str:
    """The `usX` suffix of a Mailchimp API key (never the key itself in an error)."""
    match = _DC_RE.search(api_key.reveal())
    if match is None:
        raise ProviderConfigError(
            "the Mailchimp API key has no data-centre suffix (it ends in -usX, e.g. -us6); check credentials.api_key"
        )
    return match.group(1)


def checked_dc(dc: str, source: str) -> str:
    if not _DC_NAME.match(dc):
        raise ProviderConfigError(f"{source} {dc!r} is not a Mailchimp data centre (like us6)")
    return dc


def oauth_data_centre(url: str, token: Secret, policy: TransportPolicy, mapping: str = "?") -> str:
    """The data centre of an OAuth token, from the metadata endpoint (one GET, retried as any call)."""
    client = httpx.Client(
        transport=GuardedTransport(
            policy.endpoints or EndpointPolicy.from_env(), provider="mailchimp", secrets=(token,)
        ),
        timeout=httpx.Timeout(policy.timeout_seconds),
        follow_redirects=False,
        trust_env=False,
    )

    def ask() -> str:
        failure: ProviderError | None = None
        try:
            response = client.get(url, headers={"Authorization": f"OAuth {token.reveal()}"})
        except httpx.TimeoutException:
            failure = _metadata_error("gave no answer in time", "timeout", True, url, token)
        except httpx.TransportError as exc:
            failure = _metadata_error(f"unreachable ({type(exc).__name__})", "network", True, url, token)
        if failure is not None:
            raise failure  # outside the except block: no chained httpx error holding the header
        status = response.status_code
        body = _json_or_none(response)
        dc = body.get("dc") if isinstance(body, dict) else None
        if status == 200 and isinstance(dc, str):
            return checked_dc(dc, f"mapping {mapping!r}: the OAuth metadata's dc")
        error_class, retryable = default_classification(status)
        raise _metadata_error(
            f"answered HTTP {status} without a dc", error_class, retryable, url, token, status=status
        )

    try:
        return policy.call(ask, what="GET oauth2/metadata")
    finally:
        client.close()


def _metadata_error(
    text: str, error_class: Any, retryable: bool, url: str, token: Secret, *, status: int | None = None
) -> ProviderError:
    return ProviderError(
        f"the OAuth metadata endpoint {text}",
        provider="mailchimp",
        error_class=error_class,
        status=status,
        code="oauth_metadata",
        retryable=retryable,
        method="GET",
        url=url,
        secrets=(token,),
    )


def base_url_for(dc: str) -> str:
    return f"https://{dc}.api.mailchimp.com/3.0"


def check_endpoint_matches_key(base_url: str, dc: str, mapping: str = "") -> None:
    """A non-loopback endpoint must be the key's own data centre."""
    host = (urlsplit(base_url).hostname or "").lower()
    if is_loopback(host):
        return
    expected = f"{dc}.api.mailchimp.com"
    if host != expected:
        where = f"mapping {mapping!r}: " if mapping else ""
        raise ProviderConfigError(
            f"{where}api_endpoint host {host!r} disagrees with the API key's data centre {dc!r}; "
            f"use {base_url_for(dc)}"
        )


def uses_oauth(credentials: Mapping[str, Any], auth_type: str | None = None) -> bool:
    """An OAuth access token and no API key (or the row says `oauth2`)."""
    if auth_type == "oauth2":
        return True
    return bool(credentials.get("access_token")) and not credentials.get("api_key")


def to_seconds(text: Any) -> int | None:
    """Mailchimp's ISO-8601 `last_changed` as unix seconds (None when absent or unreadable)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp())


def iso(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()


class MailchimpProvider(JsonHttpProvider):
    name: ClassVar[str] = "mailchimp"
    label: ClassVar[str] = "Mailchimp"
    BASE_SUFFIX: ClassVar[str] = "/3.0"
    STREAMS: ClassVar[tuple[StreamSpec, ...]] = (
        StreamSpec(
            name="members",
            default_target="user",
            supports_created_window=True,
            primary_key="id",
            cursor_field="last_changed",
            max_page_size=MAX_COUNT,
            description="GET /3.0/lists/{list_id}/members, windowed by since/before_last_changed",
        ),
        StreamSpec(
            name="members_archived",
            default_target=None,
            supports_created_window=True,
            primary_key="id",
            cursor_field="last_changed",
            max_page_size=MAX_COUNT,
            description="GET /3.0/lists/{list_id}/members?status=archived",
        ),
    )
    WRITES: ClassVar[tuple[WriteSpec, ...]] = (
        WriteSpec(
            name="members_upsert",
            operation="upsert",
            idempotency="natural",
            max_batch=1,
            description="PUT /3.0/lists/{list_id}/members/{subscriber_hash}",
        ),
    )
    IDENTITY_FIELDS: ClassVar[tuple[str, ...]] = ("api_key",)
    # api_key and basic_auth are the same credential (`anystring:<key>` as HTTP Basic).
    AUTH_TYPES: ClassVar[frozenset[str]] = frozenset({"api_key", "basic_auth", "oauth2"})
    CREDENTIAL_SHAPES: ClassVar[Mapping[str, tuple[tuple[str, ...], ...]]] = {
        "api_key": (("api_key", "list_id|audience_id"),),
        "basic_auth": (("api_key", "list_id|audience_id"),),
        "oauth2": (("access_token", "list_id|audience_id"),),
    }

    @classmethod
    def from_context(cls, ctx: ProviderContext) -> Self:
        list_id = ctx.required_value("list_id", "audience_id")
        if uses_oauth(ctx.credentials, str(ctx.row.authentication_type)):
            token = ctx.secret("access_token")
            given = ctx.value("dc")
            if given is not None:
                dc = checked_dc(given, f"mapping {ctx.mapping!r}: credentials.dc")
            else:
                url = ctx.value("metadata_url", default=METADATA_URL) or METADATA_URL
                dc = oauth_data_centre(url, token, ctx.policy, ctx.mapping)
            check_endpoint_matches_key(ctx.base_url, dc, ctx.mapping)
            return cls(ctx.base_url, access_token=token, dc=dc, list_id=list_id, policy=ctx.policy)
        api_key = ctx.secret("api_key")
        try:
            dc = data_centre(api_key)
        except ProviderConfigError as exc:
            raise ProviderConfigError(f"mapping {ctx.mapping!r}: {exc}") from None
        check_endpoint_matches_key(ctx.base_url, dc, ctx.mapping)
        return cls(ctx.base_url, api_key=api_key, list_id=list_id, policy=ctx.policy)

    @classmethod
    def identity_fields(cls, credentials: Mapping[str, Any]) -> tuple[str, ...]:
        return ("access_token",) if uses_oauth(credentials) else cls.IDENTITY_FIELDS

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: Secret | None = None,
        access_token: Secret | None = None,
        dc: str | None = None,
        list_id: str,
        policy: TransportPolicy,
        client: httpx.Client | None = None,
    ) -> None:
        """`api_key` (its suffix names the data centre), or an OAuth `access_token` with its `dc`."""
        if not isinstance(list_id, str) or not _LIST_ID_RE.match(list_id):
            raise ValueError(f"list_id {list_id!r} is not a Mailchimp list id")
        auth: httpx.Auth
        if isinstance(api_key, Secret) and access_token is None:
            self.dc = data_centre(api_key)
            auth = BasicAuth(BASIC_USER, api_key)
        elif isinstance(access_token, Secret) and api_key is None and dc:
            self.dc = checked_dc(dc, "dc")
            auth = BearerAuth(access_token)
        else:
            raise TypeError("give api_key (a Secret), or access_token (a Secret) with its dc")
        base_url = base_url or base_url_for(self.dc)
        check_endpoint_matches_key(base_url, self.dc)
        super().__init__(base_url, auth=auth, policy=policy, client=client)
        self.list_id = list_id
        self._members_path = f"/3.0/lists/{quote(list_id)}/members"

    def __repr__(self) -> str:
        return f"MailchimpProvider(base_url={self.base_url!r}, list_id={self.list_id!r}, credentials=***)"

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
        """Pages in Mailchimp's order; `cursor` (`<offset>:<total_items>`) resumes an earlier run."""
        spec = self.stream(stream)
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        params: dict[str, str] = {"count": str(min(page_size, spec.max_page_size))}
        if stream == "members_archived":
            params["status"] = "archived"
        if window_start is not None:
            params["since_last_changed"] = iso(int(window_start) - 1)
        if window_end is not None:
            params["before_last_changed"] = iso(int(window_end))
        return self._pages(stream, params, window_start, window_end, cursor)

    def _pages(
        self, stream: str, params: dict[str, str], lo: int | None, hi: int | None, cursor: str | None
    ) -> Iterator[Page]:
        guard = CursorGuard(self.name, stream)
        offset, previous_total = 0, None
        if cursor is not None:
            offset, previous_total = self._decode(cursor)
            guard.check(cursor)
        while True:
            result = self.request("GET", self._members_path, params={**params, "offset": str(offset)})
            members, total = self._members(result.body)
            kept = [m for m in members if self._in_window(m, lo, hi)]
            left = previous_total - total if previous_total is not None and total < previous_total else 0
            next_offset = max(0, offset - left) if left else offset + len(members)
            if next_offset >= total:
                yield Page(kept, False, None, result.seconds)
                return
            if not members and not left:
                raise self.protocol_error(
                    f"an empty page at offset {offset} of {total} members",
                    "empty_page_with_more",
                    url=self._members_path,
                )
            next_cursor = f"{next_offset}:{total}"
            guard.check(next_cursor)
            yield Page(kept, True, next_cursor, result.seconds)
            offset, previous_total = next_offset, total

    @staticmethod
    def _decode(cursor: str) -> tuple[int, int | None]:
        offset, sep, total = cursor.partition(":")
        if not offset.isdigit() or (sep and not total.isdigit()):
            raise ProviderError(
                f"cursor {cursor!r} is not a Mailchimp offset cursor",
                provider="mailchimp",
                error_class="client",
                code="bad_cursor",
            )
        return int(offset), int(total) if sep else None

    def _members(self, body: Any) -> tuple[list[dict[str, Any]], int]:
        if not isinstance(body, dict) or not isinstance(body.get("members"), list):
            raise self.protocol_error(
                "the answer has no members list", "unexpected_response", url=self._members_path
            )
        total = body.get("total_items")
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            raise self.protocol_error(
                "the answer has no total_items", "unexpected_response", url=self._members_path
            )
        members = body["members"]
        if not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in members):
            raise self.protocol_error(
                "a member is not an object with an id", "unexpected_response", url=self._members_path
            )
        return members, total

    def _in_window(self, member: dict[str, Any], lo: int | None, hi: int | None) -> bool:
        if lo is None and hi is None:
            return True
        changed = to_seconds(member.get("last_changed"))
        if changed is None:
            raise self.protocol_error(
                f"member {member.get('id')!r} has no readable last_changed",
                "missing_cursor_field",
                url=self._members_path,
            )
        return (lo is None or changed >= lo) and (hi is None or changed < hi)

    def probe(self) -> float:
        params = {"count": "1", "fields": "total_items"}
        return self.request("GET", self._members_path, params=params).seconds

    # ---- writes ---------------------------------------------------------------------------------
    def write(
        self, name: str, records: Sequence[dict[str, Any]], *, idempotency_keys: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Upsert one member: `{email_address, status_if_new (or status), merge_fields?, ...}`.

        The keys are not sent: the PUT by subscriber hash is what makes a repeat harmless.
        """
        spec = self.write_spec(name)
        if len(records) != 1 or len(idempotency_keys) != 1:
            raise ValueError(f"{name} writes {spec.max_batch} record per call, with one idempotency key")
        record = records[0]
        email = record.get("email_address")
        if not isinstance(email, str) or not email.strip():
            raise ValueError(f"{name}: the record has no email_address (the upsert key)")
        if not record.get("status_if_new") and not record.get("status"):
            raise ValueError(f"{name}: the record needs status_if_new (or status) for a member that is new")
        unknown = sorted(set(record) - set(WRITABLE))
        if unknown:
            raise ValueError(f"{name}: fields {unknown} are not member fields ({', '.join(WRITABLE)})")
        body = {k: v for k, v in record.items() if v is not None}
        body["email_address"] = email.strip()
        result = self.request("PUT", f"{self._members_path}/{subscriber_hash(email)}", json=body)
        if not isinstance(result.body, dict) or not isinstance(result.body.get("id"), str):
            raise self.protocol_error("the upsert answer is not a member", "unexpected_response", "PUT")
        return [result.body]

    # ---- errors ---------------------------------------------------------------------------------
    def error_details(self, body: Any) -> tuple[str | None, str | None]:
        if not isinstance(body, dict):
            return None, None
        title, detail = body.get("title"), body.get("detail")
        fields = [
            f"{e.get('field')}: {e.get('message')}" for e in body.get("errors") or [] if isinstance(e, dict)
        ]
        message = "; ".join(str(p) for p in (detail, *fields[:5]) if p)
        return (str(title) if title else None, message or None)

    def http_error(self, response: httpx.Response, method: str, url: str) -> ProviderError:
        status = response.status_code
        body = _json_or_none(response)
        error_class, retryable = default_classification(status)
        if status == 403 and not isinstance(body, dict):  # the bare 403 of the high-volume throttle [3P]
            error_class, retryable = "rate_limit", True
        code, message = self.error_details(body)
        return self.error_from_response(
            response, method, url, error_class=error_class, retryable=retryable, code=code, message=message
        )
