"""A stateful Salesforce REST emulator on loopback: OAuth2 token endpoint, SOQL query, upsert by external id.

What it implements (PROVIDERS.md §5):

- `POST /services/oauth2/token` with `grant_type=refresh_token` (client id and secret in the form;
  refresh tokens rotate when `rotate_refresh_tokens`) or the JWT bearer grant (an RS256 assertion
  verified against `jwt_public_key`, `aud` the login host). The answer has `instance_url`, `id`,
  `issued_at` (ms), `signature` and no `expires_in`: the session lasts `session_seconds` and then
  answers 401 `INVALID_SESSION_ID`. `POST /services/oauth2/revoke` revokes a token.
- `GET /services/data/vNN.N/query?q=<SOQL>`: `{totalSize, done, nextRecordsUrl?, records}` with
  `attributes {type, url}` per record; batches of `Sforce-Query-Options: batchSize=N` (200..2000,
  as Salesforce allows) capped at `max_batch`; follow-ups at the `nextRecordsUrl` locator.
- `PATCH /services/data/vNN.N/sobjects/Contact/<ExternalIdField>/<value>`: 201
  `{id, success, errors, created: true}` for a new record, 200 `{..., created: false}` for an update
  (API v46 and later; 204 before), `SystemModstamp` moved, so the incremental query sees the write.
- Errors as Salesforce writes them, a JSON array `[{message, errorCode, fields}]`; the API limit as
  403 `REQUEST_LIMIT_EXCEEDED`; `Sforce-Limit-Info: api-usage=N/LIMIT` on every answer.
- `faults`: 5xx `UNKNOWN_EXCEPTION` / `SERVER_UNAVAILABLE`, the rate-limit fault as 403
  `REQUEST_LIMIT_EXCEEDED`, delays, disconnects, lost answers, sessions that expire after N requests,
  follow-up batches moved back by `duplicate_next(items=)` (a locator that repeats itself), and
  `mutate_next(backdate=)`: between two batches a served contact changes and a backdated one appears.

Not implemented: other sObjects, relationship queries, `queryAll`, composite, the updated/deleted
resources.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

from esm_dagster.sandbox._http import Fault, LoopbackEmulator, Request, Response
from esm_dagster.sandbox.oauth import IssuedToken, OAuthTokenServer
from esm_dagster.sandbox.salesforce import soql
from esm_dagster.sandbox.salesforce.data import (
    CONTACT_FIELDS,
    DATETIME_FIELDS,
    DEFAULT_END,
    DEFAULT_START,
    EXTERNAL_ID_FIELDS,
    record_id,
    seed_contacts,
    sf_time,
)

DEFAULT_BATCH = 2000
MIN_BATCH = 200
_VERSION = re.compile(r"^/services/data/v(\d+)\.(\d)(/.*)?$")
_BATCH = re.compile(r"batchSize\s*=\s*(\d+)", re.IGNORECASE)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_WRITABLE = frozenset({"FirstName", "LastName", "Email", "Phone", "External_Id__c"})
API_LIMIT = 15000


class SalesforceError(Exception):
    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields or []


class SalesforceEmulator(LoopbackEmulator):
    def __init__(
        self,
        *,
        clients: dict[str, str],
        contacts: int = 60,
        seed: int = 5,
        start: int = DEFAULT_START,
        end: int = DEFAULT_END,
        max_batch: int = DEFAULT_BATCH,
        session_seconds: float = 7200.0,
        rotate_refresh_tokens: bool = True,
        jwt_public_key: str | None = None,
        login_audience: str = "https://login.salesforce.com",
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.clock = clock
        self.max_batch = max_batch
        self.oauth = OAuthTokenServer(
            clients=clients,
            access_lifetime=session_seconds,
            rotate_refresh_tokens=rotate_refresh_tokens,
            jwt_public_key=jwt_public_key,
            jwt_audience=login_audience,
            expires_in=False,
            token_prefix="00DESM!",  # noqa: S106 - Salesforce session ids start with the org id; the rest is random
            answer=self._token_extra,
            clock=clock,
        )
        self._lock = threading.Lock()
        self._rng = random.Random(seed * 7919)
        self.contacts: list[dict[str, Any]] = seed_contacts(contacts, seed, start, end)
        self._locators: dict[str, tuple[list[dict[str, Any]], int]] = {}  # locator -> (rows, batch)
        self.api_usage = 0
        self.mutations: list[tuple[str, str]] = []  # (changed id, created id) per mutate fault

    def _token_extra(self, issued: IssuedToken) -> dict[str, Any]:
        issued_at = str(int(self.clock() * 1000))
        identity = f"{self.url}/id/00DESM0000000001AAA/005ESM0000000001AAA"
        # Salesforce signs `id + issued_at` with the consumer secret (HMAC-SHA256, base64).
        key = self.oauth.clients.get(issued.client_id, "").encode()
        digest = hmac.new(key, f"{identity}{issued_at}".encode(), hashlib.sha256).digest()
        signature = base64.b64encode(digest).decode()
        return {
            "instance_url": self.url,
            "id": identity,
            "issued_at": issued_at,
            "signature": signature,
            "scope": "api refresh_token",
        }

    # ---- Python API -----------------------------------------------------------------------------
    def touch(self, contact_id: str, **fields: Any) -> None:
        """Change a contact as a Salesforce user would; `SystemModstamp` moves to now."""
        with self._lock:
            for contact in self.contacts:
                if contact["Id"] == contact_id:
                    contact.update(fields)
                    contact["LastModifiedDate"] = contact["SystemModstamp"] = sf_time(self.clock())
                    return
        raise KeyError(contact_id)

    # ---- HTTP -----------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        path = request.path
        if path == "/services/oauth2/token":
            return self.oauth.handle_token(request)
        if path == "/services/oauth2/revoke":
            return self.oauth.handle_revoke(request)
        header = request.header("authorization") or ""
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        if self.oauth.authenticate(token) is None or (token and self.faults.credential_expired(token)):
            return self._errors(SalesforceError(401, "INVALID_SESSION_ID", "Session expired or invalid"))
        with self._lock:
            self.api_usage += 1
        try:
            version = _VERSION.match(path)
            if version is None:
                raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
            major, rest = int(version[1]), version[3] or ""
            if rest == "/query" and request.method == "GET":
                return self._json(200, self._query(request, path[: -len(rest)]))
            if rest.startswith("/query/") and request.method == "GET":
                return self._json(200, self._more(rest[len("/query/") :], path[: -len(rest)]))
            parts = rest.strip("/").split("/")
            if len(parts) == 4 and parts[:2] == ["sobjects", "Contact"] and request.method == "PATCH":
                return self._upsert(unquote(parts[2]), unquote(parts[3]), request.body, major, path)
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        except SalesforceError as error:
            return self._errors(error)

    def render_fault(self, request: Request, fault: Fault) -> Response:
        if fault.kind == "rate_limit":
            return self._errors(
                SalesforceError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            )
        if fault.status == 503:
            return self._errors(SalesforceError(503, "SERVER_UNAVAILABLE", "Server temporarily unavailable."))
        if fault.status >= 500:
            return self.internal_error(request)
        return self._errors(
            SalesforceError(fault.status, "INVALID_OPERATION", f"Injected client error {fault.status}.")
        )

    def internal_error(self, request: Request) -> Response:
        error_id = f"{self._rng.randrange(10**9)}-{self._rng.randrange(10**5)}"
        return self._errors(
            SalesforceError(
                500,
                "UNKNOWN_EXCEPTION",
                f"An unexpected error occurred. Please include this ErrorId if you contact support: {error_id}",
            )
        )

    # ---- query ----------------------------------------------------------------------------------
    def _query(self, request: Request, base: str) -> dict[str, Any]:
        params = dict(parse_qsl(request.query, keep_blank_values=True))
        try:
            query = soql.parse(params.get("q", ""), {"Contact": CONTACT_FIELDS})
        except soql.SoqlError as exc:
            raise SalesforceError(400, exc.code, str(exc)) from None
        batch = DEFAULT_BATCH
        option = _BATCH.search(request.header("sforce-query-options") or "")
        if option:
            batch = max(MIN_BATCH, min(DEFAULT_BATCH, int(option[1])))
        batch = min(batch, self.max_batch)
        with self._lock:
            rows = [c for c in self.contacts if query.matches(c, DATETIME_FIELDS)]
            for name in reversed(query.order):
                rows.sort(key=_sort_key(name))
            if query.limit is not None:
                rows = rows[: query.limit]
            selected = [self._select(r, query.fields, base) for r in rows]
        return self._batch(selected, 0, batch, base, None)

    def _more(self, tail: str, base: str) -> dict[str, Any]:
        locator, _, offset = tail.rpartition("-")
        with self._lock:
            found = self._locators.get(locator)
        if found is None or not offset.isdigit():
            raise SalesforceError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        rows, batch = found
        start = int(offset)
        shifted = self.faults.take_handler_fault("duplicate", base + "/query")
        if shifted is not None:  # the locator moved back: the batch repeats records already served
            start = max(0, start - shifted.items)
        changed = self.faults.take_handler_fault("mutate", base + "/query")
        if changed is not None and start > 0:
            self._mutate(rows[start - 1]["Id"], changed.seconds)
        return self._batch(rows, start, batch, base, locator)

    def _mutate(self, served_id: str, backdate: float) -> None:
        """Between two batches: a served contact changes and a new one appears, `backdate` s in the past.

        The query's batches are a snapshot (as Salesforce's cursors are), so neither shows in this
        query; an incremental query that starts before them must.
        """
        now = self.clock()
        with self._lock:
            for contact in self.contacts:
                if contact["Id"] == served_id:
                    contact["Phone"] = "+14155550000"
                    contact["LastModifiedDate"] = contact["SystemModstamp"] = sf_time(now)
            stamp = sf_time(now - backdate)
            new: dict[str, Any] = {name: None for name in CONTACT_FIELDS}
            new.update(
                Id=record_id(self._rng),
                LastName="Late",
                Email=f"late{len(self.contacts)}@example.com",
                CreatedDate=stamp,
                LastModifiedDate=stamp,
                SystemModstamp=stamp,
            )
            self.contacts.append(new)
            self.mutations.append((served_id, new["Id"]))

    def _batch(
        self, rows: list[dict[str, Any]], offset: int, batch: int, base: str, locator: str | None
    ) -> dict[str, Any]:
        chunk = rows[offset : offset + batch]
        body: dict[str, Any] = {"totalSize": len(rows), "done": offset + batch >= len(rows), "records": chunk}
        if not body["done"]:
            if locator is None:
                locator = "01g" + secrets.token_hex(8).upper()
                with self._lock:
                    self._locators[locator] = (rows, batch)
            body["nextRecordsUrl"] = f"{base}/query/{locator}-{offset + batch}"
        return body

    def _select(self, row: dict[str, Any], fields: Iterable[str], version: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "attributes": {"type": "Contact", "url": f"{version}/sobjects/Contact/{row['Id']}"}
        }
        for name in fields:
            out[name] = row.get(name)
        return out

    # ---- upsert ---------------------------------------------------------------------------------
    def _upsert(self, field: str, value: str, raw: bytes, major: int, path: str) -> Response:
        if field not in EXTERNAL_ID_FIELDS:
            raise SalesforceError(
                404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {field}"
            )
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise SalesforceError(
                400, "JSON_PARSER_ERROR", "Unexpected character: the body is not JSON"
            ) from None
        if not isinstance(body, dict):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "the body must be a JSON object")
        unknown = sorted(set(body) - _WRITABLE)
        if unknown:
            raise SalesforceError(
                400, "INVALID_FIELD", f"No such column '{unknown[0]}' on sobject of type Contact", unknown[:1]
            )
        if field in body and body[field] != value:
            raise SalesforceError(400, "INVALID_FIELD", f"{field} in the body differs from the URL", [field])
        email = body.get("Email")
        if email is not None and not _EMAIL.match(str(email)):
            raise SalesforceError(
                400, "INVALID_EMAIL_ADDRESS", f"Email: invalid email address: {email}", ["Email"]
            )
        now = sf_time(self.clock())
        with self._lock:
            matches = [c for c in self.contacts if c.get(field) == value]
            if len(matches) > 1:
                raise SalesforceError(300, "MULTIPLE_CHOICES", "more than one record matches the external id")
            if matches:
                contact = matches[0]
                contact.update(body)
                contact["LastModifiedDate"] = contact["SystemModstamp"] = now
                created = False
            else:
                if not body.get("LastName"):
                    raise SalesforceError(
                        400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]", ["LastName"]
                    )
                contact = {name: None for name in CONTACT_FIELDS}
                contact.update(body)
                contact.update(
                    Id=record_id(self._rng), CreatedDate=now, LastModifiedDate=now, SystemModstamp=now
                )
                contact[field] = value
                self.contacts.append(contact)
                created = True
            contact_id = contact["Id"]
        if not created and major < 46:
            return Response(204, b"", self._limit_header())
        answer = {"id": contact_id, "success": True, "errors": [], "created": created}
        return self._json(201 if created else 200, answer)

    # ---- answers --------------------------------------------------------------------------------
    def _limit_header(self) -> list[tuple[str, str]]:
        return [("Sforce-Limit-Info", f"api-usage={self.api_usage}/{API_LIMIT}")]

    def _json(self, status: int, body: Any) -> Response:
        return Response(status, orjson.dumps(body), self._limit_header())

    def _errors(self, error: SalesforceError) -> Response:
        item: dict[str, Any] = {"message": error.message, "errorCode": error.code}
        if error.fields:
            item["fields"] = error.fields
        return Response(error.status, orjson.dumps([item]), self._limit_header())

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self.contacts)


def _sort_key(name: str) -> Callable[[dict[str, Any]], tuple[bool, Any]]:
    """SOQL's ascending order on one field, nulls last."""

    def key(row: dict[str, Any]) -> tuple[bool, Any]:
        value = row.get(name)
        if value is None:
            return (True, "")
        return (False, soql.parse_time(value) if name in DATETIME_FIELDS else value)

    return key


__all__ = ["SalesforceEmulator"]
