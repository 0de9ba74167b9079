"""Salesforce REST: the `contacts` stream (SOQL) and the `contacts` upsert by external id (PROVIDERS.md §5).

Auth: a bearer session from `POST <login host>/services/oauth2/token`, by the JWT bearer grant
(`credentials.private_key` + `username`, signed RS256) or by `grant_type=refresh_token`
(`credentials.refresh_token` + `client_secret`); `client_id` is the connected app's consumer key.
The answer names the org's `instance_url`, where every API call then goes (checked like an
`api_endpoint`). The answer has no `expires_in`: the session is used until Salesforce answers 401
`INVALID_SESSION_ID`, then renewed once (`esm_dagster.auth.OAuth2Auth`).

Reads are `GET /services/data/vNN.N/query?q=SELECT ... FROM Contact WHERE SystemModstamp >= <start>
AND SystemModstamp < <end> ORDER BY SystemModstamp, Id`, following `nextRecordsUrl` until `done`;
the resume cursor is that `nextRecordsUrl`. Writes are `PATCH /sobjects/Contact/<field>/<value>`:
an upsert by external id, idempotent by nature (201 created, 200/204 updated). The API limit is a
403 `REQUEST_LIMIT_EXCEEDED`: a rate limit, retried after backoff, not an auth failure.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Self
from urllib.parse import quote, urlsplit

import httpx

from esm_dagster.auth import JwtBearerGrant, OAuth2Auth, RefreshTokenGrant, TokenEndpoint, store_for
from esm_dagster.auth.grants import Grant
from esm_dagster.providers.base import CursorGuard, Page, ProviderError, StreamSpec, WriteSpec
from esm_dagster.providers.context import ProviderConfigError, ProviderContext
from esm_dagster.providers.http import default_classification, normalise_base_url
from esm_dagster.providers.oauth_http import OAuthHttpProvider
from esm_dagster.security.endpoints import check_endpoint
from esm_dagster.transport import TransportPolicy

DEFAULT_API_VERSION = "62.0"
MAX_BATCH = 2000
MIN_BATCH = 200  # Sforce-Query-Options batchSize takes 200..2000
CONTACT_FIELDS = (
    "Id",
    "FirstName",
    "LastName",
    "Email",
    "Phone",
    "External_Id__c",
    "CreatedDate",
    "SystemModstamp",
)
DEFAULT_EXTERNAL_ID_FIELD = "External_Id__c"
_VERSION = re.compile(r"^\d{2,3}\.\d$")
_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def soql_datetime(seconds: int) -> str:
    """A SOQL datetime literal (unquoted, UTC)."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SalesforceProvider(OAuthHttpProvider):
    name: ClassVar[str] = "salesforce"
    label: ClassVar[str] = "Salesforce"
    STREAMS: ClassVar[tuple[StreamSpec, ...]] = (
        StreamSpec(
            name="contacts",
            default_target="user",
            supports_created_window=True,
            primary_key="Id",
            cursor_field="SystemModstamp",
            max_page_size=MAX_BATCH,
            description="SOQL on Contact by SystemModstamp, following nextRecordsUrl",
        ),
    )
    WRITES: ClassVar[tuple[WriteSpec, ...]] = (
        WriteSpec(
            name="contacts",
            operation="upsert",
            idempotency="natural",
            description="PATCH /sobjects/Contact/<external id field>/<value>",
        ),
    )
    IDENTITY_FIELDS: ClassVar[tuple[str, ...]] = ("client_id", "username")
    # The JWT bearer grant (RFC 7523) is an OAuth2 grant too: `oauth2` takes either shape.
    AUTH_TYPES: ClassVar[frozenset[str]] = frozenset({"oauth2", "jwt"})
    CREDENTIAL_SHAPES: ClassVar[Mapping[str, tuple[tuple[str, ...], ...]]] = {
        "oauth2": (
            ("client_id|consumer_key", "refresh_token"),
            ("client_id|consumer_key", "username", "private_key"),
        ),
        "jwt": (("client_id|consumer_key", "username", "private_key"),),
    }

    @classmethod
    def from_context(cls, ctx: ProviderContext) -> Self:
        login_url = normalise_base_url(ctx.base_url, label=cls.label)
        client_id = ctx.required_value("client_id", "consumer_key")
        grant: Grant
        private_key = ctx.optional_secret("private_key")
        if private_key is not None:
            grant = JwtBearerGrant(
                issuer=client_id,
                subject=ctx.required_value("username"),
                audience=ctx.value("audience", default=login_url) or login_url,  # the login host by default
                private_key=private_key,
            )
        elif ctx.optional_secret("refresh_token") is not None:
            grant = RefreshTokenGrant(client_id, ctx.optional_secret("client_secret"))
        else:
            raise ProviderConfigError(
                f"mapping {ctx.mapping!r}: credentials need private_key + username (JWT bearer) "
                "or refresh_token (+ client_secret)"
            )
        endpoint = TokenEndpoint(
            login_url + "/services/oauth2/token",
            provider=cls.name,
            timeout_seconds=ctx.policy.timeout_seconds,
            endpoints=ctx.policy.endpoints,
        )
        auth = OAuth2Auth(grant, endpoint, store_for(ctx))
        return cls(
            login_url,
            auth=auth,
            policy=ctx.policy,
            api_version=ctx.api_version,
            external_id_field=ctx.value("external_id_field", default=DEFAULT_EXTERNAL_ID_FIELD),
            mapping=ctx.mapping,
        )

    def __init__(
        self,
        login_url: str,
        *,
        auth: OAuth2Auth,
        policy: TransportPolicy,
        api_version: str | None = None,
        external_id_field: str | None = None,
        mapping: str = "?",
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__(login_url, auth=auth, policy=policy, client=client)
        version = (api_version or DEFAULT_API_VERSION).lstrip("vV")
        if not _VERSION.match(version):
            raise ValueError(f"Salesforce api_version must look like 62.0, got {api_version!r}")
        field = external_id_field or DEFAULT_EXTERNAL_ID_FIELD
        if not _FIELD.match(field):
            raise ValueError(f"external_id_field {field!r} is not a Salesforce field name")
        self.api_version = version
        self.external_id_field = field
        self.mapping = mapping
        self._instance: str | None = None

    # ---- where calls go -------------------------------------------------------------------------
    @property
    def data_path(self) -> str:
        return f"/services/data/v{self.api_version}"

    def url_for(self, path: str) -> str:
        self._ensure_instance()
        return super().url_for(path)

    def _ensure_instance(self) -> None:
        """Point the client at the org's `instance_url` (from the token answer) before the first call."""
        if self._instance is not None:
            return
        state = self.policy.call(self.oauth.token, what="POST /services/oauth2/token")
        instance = state.instance_url or self.base_url
        try:
            checked = check_endpoint(instance, mapping=repr(self.mapping))
            self.base_url = normalise_base_url(checked, label=self.label)
        except ValueError as exc:
            raise ProviderError(
                f"the token answer's instance_url is refused: {exc}",
                provider=self.name,
                error_class="auth",
                code="bad_instance_url",
            ) from None
        parts = urlsplit(self.base_url)
        self._origin = (parts.scheme, parts.netloc)
        self._instance = self.base_url

    # ---- errors ---------------------------------------------------------------------------------
    def error_details(self, body: Any) -> tuple[str | None, str | None]:
        """Salesforce's `[{message, errorCode, fields}]` (first item), or OAuth's `{error, ...}`."""
        if isinstance(body, list) and body and isinstance(body[0], dict):
            first = body[0]
            message = str(first.get("message") or "")
            fields = first.get("fields")
            if isinstance(fields, list) and fields:
                message += f" (fields: {', '.join(str(f) for f in fields)})"
            code = first.get("errorCode")
            return (str(code) if code else None), message or None
        return super().error_details(body)

    def http_error(self, response: httpx.Response, method: str, url: str) -> ProviderError:
        error_class, retryable = default_classification(response.status_code)
        code, message = self.error_details(_json(response))
        if code == "REQUEST_LIMIT_EXCEEDED":
            error_class, retryable = "rate_limit", True
        elif response.status_code == 300:
            error_class, retryable = "validation", False
        return self.error_from_response(
            response, method, url, error_class=error_class, retryable=retryable, code=code, message=message
        )

    # ---- reads ----------------------------------------------------------------------------------
    def soql(self, window_start: int | None, window_end: int | None) -> str:
        where = []
        if window_start is not None:
            where.append(f"SystemModstamp >= {soql_datetime(int(window_start))}")
        if window_end is not None:
            where.append(f"SystemModstamp < {soql_datetime(int(window_end))}")
        text = f"SELECT {', '.join(CONTACT_FIELDS)} FROM Contact"
        if where:
            text += " WHERE " + " AND ".join(where)
        return text + " ORDER BY SystemModstamp, Id"

    def iter_pages(
        self,
        stream: str,
        *,
        window_start: int | None = None,
        window_end: int | None = None,
        page_size: int = 100,
        cursor: str | None = None,
    ) -> Iterator[Page]:
        spec = self.stream(stream)
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        batch = max(MIN_BATCH, min(page_size, spec.max_page_size))
        return self._pages(spec, self.soql(window_start, window_end), batch, cursor)

    def _pages(self, spec: StreamSpec, query: str, batch: int, cursor: str | None) -> Iterator[Page]:
        guard = CursorGuard(self.name, spec.name)
        headers = {"Sforce-Query-Options": f"batchSize={batch}"}
        if cursor is not None:
            guard.check(cursor)
        while True:
            if cursor is None:
                result = self.request("GET", f"{self.data_path}/query", params={"q": query}, headers=headers)
            else:
                result = self.request("GET", cursor, headers=headers)
            body = result.body
            records, done = (body or {}).get("records"), (body or {}).get("done")
            if not isinstance(records, list) or not isinstance(done, bool):
                raise self.protocol_error("a query answer without records / done", "unexpected_response")
            next_url = None if done else body.get("nextRecordsUrl")
            if not done and not isinstance(next_url, str):
                raise self.protocol_error("done is false but there is no nextRecordsUrl", "missing_next_url")
            if next_url is not None:
                guard.check(next_url)
            cleaned = [
                {k: v for k, v in r.items() if k != "attributes"} for r in records if isinstance(r, dict)
            ]
            yield Page(
                records=cleaned,
                has_more=next_url is not None,
                next_cursor=next_url,
                request_seconds=result.seconds,
            )
            if next_url is None:
                return
            cursor = next_url

    def probe(self) -> float:
        return self.request(
            "GET", f"{self.data_path}/query", params={"q": "SELECT Id FROM Contact LIMIT 1"}
        ).seconds

    # ---- writes ---------------------------------------------------------------------------------
    def write(
        self, name: str, records: Sequence[dict[str, Any]], *, idempotency_keys: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Upsert each record by its external id; the answer per record (`created` says which)."""
        self.write_spec(name)
        field = self.external_id_field
        out = []
        for record in records:
            value = record.get(field)
            if value in (None, ""):
                raise ProviderError(
                    f"a {name} record without {field}: an upsert needs the external id",
                    provider=self.name,
                    error_class="validation",
                    code="missing_external_id",
                )
            body = {k: v for k, v in record.items() if k not in (field, "Id")}
            path = f"{self.data_path}/sobjects/Contact/{field}/{quote(str(value), safe='')}"
            result = self.request("PATCH", path, json=body, ok=(200, 201, 204))
            answer = dict(result.body) if isinstance(result.body, dict) else {}
            answer.setdefault("created", result.status == 201)
            answer.setdefault(field, value)
            out.append(answer)
        return out


def _json(response: httpx.Response) -> Any:
    try:
        return response.json() if response.content else None
    except ValueError:
        return None
