"""A stateful SendGrid v3 emulator on loopback (PROVIDERS.md §3; shapes checked against SendGrid's
OpenAPI documents by `esm_dagster_tests/sandbox/test_sendgrid_contract.py`).

What it implements:

- `POST /v3/mail/send`: the body is checked (personalizations with valid `to` addresses, a valid
  `from.email`, a subject and content unless a `template_id` is given); the answer is 202 with an
  empty body and an `X-Message-Id` header (that header is [U] in PROVIDERS.md). There is no
  idempotency key: the same body sent twice is two messages, as on SendGrid.
- `PUT /v3/marketing/contacts`: an upsert keyed on the lower-cased email, answered 202 `{job_id}`.
  SendGrid applies it asynchronously; the emulator applies it before answering (a read right after a
  write sees it, which SendGrid does not promise).
- `POST /v3/marketing/contacts/exports` -> 202 `{id}`; `GET /v3/marketing/contacts/exports/{id}` is
  `pending` for the first `export_polls` polls, then `ready` with `urls`; each URL serves the export
  (a snapshot taken when it was requested) as JSON lines, without the API key, like the presigned S3
  links SendGrid hands out (the file format is [U]: SendGrid documents `file_type: json` only).
- `POST /v3/marketing/contacts/search` (SGQL `email = '...'` and `email LIKE '...%'` only, the first
  50 matches) and `GET /v3/marketing/contacts/count`.
- `GET /v3/suppression/{bounces,blocks,spam_reports,unsubscribes}`: `start_time` / `end_time` (unix
  seconds, both inclusive, as the spec says), `limit` 1..500, `offset`; newest first.
- `Authorization: Bearer <key>`; a missing or unknown key is a 401 with SendGrid's error body, which
  never echoes the key. Every answer carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
  `X-RateLimit-Reset` (unix seconds) from a per-minute window; over it, and on an injected rate
  limit, 429 `{"errors":[{"field":null,"message":"too many requests"}]}`.
- `faults` (`esm_dagster.sandbox._http.FaultSwitch`) with SendGrid's own bodies and headers; on
  suppression pages that continue an offset, `duplicate` starts the page early and `mutate` adds an
  address to the list (created `backdate` seconds ago) before the page is served.
- Event Webhook (`send_event_webhook(url)`): each accepted mail send posts `processed` and
  `delivered` events, ECDSA-signed, from a background thread, retried on a non-2xx
  (`esm_dagster.sandbox.sendgrid.webhooks`); `verification_key` is what the mapping stores.
"""

from __future__ import annotations

import base64
import gzip
import math
import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from esm_dagster.sandbox._http import Fault, Request, Response
from esm_dagster.sandbox.sendgrid.data import (
    DEFAULT_END,
    DEFAULT_START,
    SUPPRESSION_LISTS,
    iso,
    seed_contacts,
    seed_suppressions,
)
from esm_dagster.sandbox.sendgrid.webhooks import (
    SENDGRID_RETRY,
    SendGridWebhookConfig,
    mail_events,
)
from esm_dagster.sandbox.sendgrid.webhooks import encode as webhook_body
from esm_dagster.sandbox.webhook_sender import PushingEmulator, RetryPolicy, WebhookSender
from esm_dagster.sandbox.webhook_signers import sendgrid_keypair
from esm_dagster.security.redact import redact_text

MAX_LIMIT = 500
MAX_CONTACTS = 30_000
MAX_UPSERT_BYTES = 6 * 1024 * 1024
SEARCH_RESULTS = 50
BAD_KEY = "The provided authorization grant is invalid, expired, or revoked"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_SIGNATURE = re.compile(r"(X-Amz-Signature=)[^&]*")
_SGQL_EQUALS = re.compile(r"^\s*email\s*=\s*'([^']*)'\s*$", re.IGNORECASE)
_SGQL_LIKE = re.compile(r"^\s*email\s+LIKE\s+'([^'%]*)%'\s*$", re.IGNORECASE)


class SendGridError(Exception):
    """An error answer: `{"errors":[{"field","message"}]}` with the given status."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.errors = [{"field": field, "message": message}]


def valid_email(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 254 and bool(_EMAIL.match(value))


class SendGridEmulator(PushingEmulator):
    def __init__(
        self,
        *,
        api_keys: Sequence[str],
        contacts: int = 40,
        suppressions: int = 30,
        seed: int = 5,
        start: int = DEFAULT_START,
        end: int = DEFAULT_END,
        rate_limit: int = 600,
        export_polls: int = 1,
        gzip_files: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        keys = [k for k in api_keys if k]
        if not keys:
            raise ValueError("give at least one accepted API key")
        self._keys = [k.encode("utf-8") for k in keys]
        self._key_texts = keys
        rng = random.Random(seed)
        self._lock = threading.Lock()
        self.contacts: dict[str, dict[str, Any]] = {
            c["email"]: c for c in seed_contacts(rng, contacts, start, end)
        }
        self.suppressions = seed_suppressions(rng, suppressions, start, end)
        self.messages: list[dict[str, Any]] = []  # every accepted mail send: message_id and body
        self.jobs: dict[str, dict[str, Any]] = {}
        self.mutations: list[tuple[str, str]] = []  # (list, email) added by `mutate` faults
        self._exports: dict[str, dict[str, Any]] = {}
        self.export_polls = export_polls
        self.gzip_files = gzip_files  # export files gzipped (as stored objects, no Content-Encoding)
        self.rate_limit = rate_limit
        self._window = (0, 0)  # (minute start, requests in it)
        self._hooks: SendGridWebhookConfig | None = None
        self.verification_key: str | None = None  # the public key SendGrid shows, once webhooks are on

    # ---- Event Webhook ------------------------------------------------------------------------
    def send_event_webhook(
        self,
        url: str,
        *,
        private_key: ec.EllipticCurvePrivateKey | None = None,
        retry: RetryPolicy | None = None,
    ) -> WebhookSender:
        """Post delivery events to `url` (loopback), signed with a P-256 key made here unless
        given; the verification key (base64 DER) is then in `verification_key`."""
        if private_key is None:
            private_key, public = sendgrid_keypair()
        else:
            der = private_key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            public = base64.b64encode(der).decode()
        self._hooks = SendGridWebhookConfig(url, private_key)
        self.verification_key = public
        return self._open_sender(url, retry or SENDGRID_RETRY)

    # ---- Python API (tests, demo) -------------------------------------------------------------
    def add_suppression(self, name: str, email: str, created: int, **fields: Any) -> None:
        with self._lock:
            self.suppressions[name].append({"created": created, "email": email, **fields})

    def expire_export_links(self) -> None:
        """Every export link handed out so far stops working (403), as presigned links expire."""
        with self._lock:
            for export in self._exports.values():
                export["signature"] = secrets.token_hex(16)

    def sent_to(self, email: str) -> list[dict[str, Any]]:
        """The accepted messages with `email` among their `to` recipients."""
        with self._lock:
            return [
                m
                for m in self.messages
                if any(t.get("email") == email for p in m["body"]["personalizations"] for t in p["to"])
            ]

    # ---- LoopbackEmulator hooks ---------------------------------------------------------------
    def redact_query(self, query: str) -> str:
        return _SIGNATURE.sub(r"\1***", redact_text(query, self._key_texts))

    def handle(self, request: Request) -> Response:
        try:
            if request.path.startswith("/_downloads/"):
                return self._download(request)
            self._authenticate(request)
            limited = self._count_request()
            if limited is not None:
                return limited
            status, payload, headers = self._route(request)
            body = b"" if payload is None else orjson.dumps(payload)
            return Response(status, body, headers + self._rate_headers())
        except SendGridError as error:
            return self._error(error)

    def render_fault(self, request: Request, fault: Fault) -> Response:
        if fault.kind == "rate_limit":
            wait = 1.0 if fault.retry_after is None else fault.retry_after
            reset = math.ceil(time.time() + wait)
            headers = [
                ("X-RateLimit-Limit", str(self.rate_limit)),
                ("X-RateLimit-Remaining", "0"),
                ("X-RateLimit-Reset", str(reset)),
            ]
            return self._error(SendGridError(429, "too many requests"), headers)
        if fault.status >= 500:
            return self._error(SendGridError(fault.status, "internal server error"))
        return self._error(SendGridError(fault.status, f"injected client error {fault.status}"))

    def internal_error(self, request: Request) -> Response:
        return self._error(SendGridError(500, "internal server error"))

    # ---- plumbing -----------------------------------------------------------------------------
    def _error(self, error: SendGridError, headers: list[tuple[str, str]] | None = None) -> Response:
        body = orjson.dumps({"errors": error.errors})
        return Response(error.status, body, headers if headers is not None else self._rate_headers())

    def _rate_headers(self) -> list[tuple[str, str]]:
        with self._lock:
            minute, used = self._window
        return [
            ("X-RateLimit-Limit", str(self.rate_limit)),
            ("X-RateLimit-Remaining", str(max(0, self.rate_limit - used))),
            ("X-RateLimit-Reset", str(minute + 60 if minute else int(time.time()) + 60)),
        ]

    def _count_request(self) -> Response | None:
        now = int(time.time())
        minute = now - now % 60
        with self._lock:
            start, used = self._window
            used = used + 1 if start == minute else 1
            self._window = (minute, used)
        if used > self.rate_limit:
            headers = [
                ("X-RateLimit-Limit", str(self.rate_limit)),
                ("X-RateLimit-Remaining", "0"),
                ("X-RateLimit-Reset", str(minute + 60)),
            ]
            return self._error(SendGridError(429, "too many requests"), headers)
        return None

    def _authenticate(self, request: Request) -> None:
        header = (request.header("authorization") or "").strip()
        if not header:
            raise SendGridError(401, "authorization required")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise SendGridError(401, BAD_KEY)
        encoded = key.strip().encode("utf-8")
        matched = False
        for accepted in self._keys:  # no early exit
            matched |= secrets.compare_digest(encoded, accepted)
        if not matched or self.faults.credential_expired(key.strip()):
            raise SendGridError(401, BAD_KEY)

    def _json_body(self, request: Request) -> Any:
        try:
            return orjson.loads(request.body) if request.body else None
        except orjson.JSONDecodeError:
            raise SendGridError(400, "Bad Request") from None

    def _route(self, request: Request) -> tuple[int, Any, list[tuple[str, str]]]:
        method, path = request.method, request.path.rstrip("/")
        if method == "POST" and path == "/v3/mail/send":
            return self._mail_send(self._json_body(request))
        if path == "/v3/marketing/contacts" and method == "PUT":
            return 202, self._upsert(request), []
        if path == "/v3/marketing/contacts/count" and method == "GET":
            with self._lock:
                return 200, {"contact_count": len(self.contacts), "billable_count": len(self.contacts)}, []
        if path == "/v3/marketing/contacts/search" and method == "POST":
            return 200, self._search(self._json_body(request)), []
        if path == "/v3/marketing/contacts/exports" and method == "POST":
            return 202, self._start_export(request), []
        if path.startswith("/v3/marketing/contacts/exports/") and method == "GET":
            return 200, self._export_status(path.rsplit("/", 1)[1]), []
        if path.startswith("/v3/suppression/") and method == "GET":
            name = path.removeprefix("/v3/suppression/")
            if name in SUPPRESSION_LISTS:
                return 200, self._suppressions(name, request.query), []
        raise SendGridError(404, "resource not found")

    # ---- mail ---------------------------------------------------------------------------------
    def _mail_send(self, body: Any) -> tuple[int, Any, list[tuple[str, str]]]:
        if not isinstance(body, dict):
            raise SendGridError(400, "Bad Request")
        personalizations = body.get("personalizations")
        if not isinstance(personalizations, list) or not 1 <= len(personalizations) <= 1000:
            raise SendGridError(
                400,
                "The personalizations field is required and must have at least one personalization.",
                "personalizations",
            )
        template = body.get("template_id")
        for i, item in enumerate(personalizations):
            to = item.get("to") if isinstance(item, dict) else None
            if not isinstance(to, list) or not to:
                raise SendGridError(
                    400,
                    "The to array is required for all personalization objects, "
                    "and must have at least one email object with a valid email address.",
                    f"personalizations.{i}.to",
                )
            for j, recipient in enumerate(to):
                if not isinstance(recipient, dict) or not valid_email(recipient.get("email")):
                    raise SendGridError(
                        400, "Does not contain a valid address.", f"personalizations.{i}.to.{j}.email"
                    )
            if not template and not body.get("subject") and not item.get("subject"):
                raise SendGridError(
                    400,
                    "The subject is required. You can get around this requirement if you "
                    "use a template with a subject defined or if every personalization has a "
                    "subject defined.",
                    "subject",
                )
        sender = body.get("from")
        if not isinstance(sender, dict) or not valid_email(sender.get("email")):
            raise SendGridError(
                400,
                "The from object must be provided for every email send. It is an object "
                "that requires an email parameter, but may also contain a name parameter.",
                "from.email",
            )
        content = body.get("content")
        if not template and (not isinstance(content, list) or not content):
            raise SendGridError(
                400,
                "Unless a valid template_id is provided, the content parameter is required. "
                "There must be at least one defined content block.",
                "content",
            )
        for i, item in enumerate(personalizations):
            custom_args = item.get("custom_args", {})
            if not isinstance(custom_args, dict) or not all(isinstance(v, str) for v in custom_args.values()):
                raise SendGridError(
                    400,
                    "Invalid type. Expected: object of strings, given: " + type(custom_args).__name__,
                    f"personalizations.{i}.custom_args",
                )
        message_id = secrets.token_urlsafe(16)[:22]
        now = int(time.time())
        with self._lock:
            self.messages.append({"message_id": message_id, "received_at": now, "body": body})
        hooks = self._hooks
        if hooks is not None and self.webhooks is not None:  # queued: the 202 does not wait for it
            self._push(f"sendgrid:{message_id}", webhook_body(mail_events(message_id, body, now)), hooks.sign)
        return 202, None, [("X-Message-Id", message_id)]

    # ---- contacts -----------------------------------------------------------------------------
    def _upsert(self, request: Request) -> dict[str, Any]:
        if len(request.body) > MAX_UPSERT_BYTES:
            raise SendGridError(400, "request body is larger than 6 MB", "contacts")
        body = self._json_body(request)
        contacts = body.get("contacts") if isinstance(body, dict) else None
        if not isinstance(contacts, list) or not 1 <= len(contacts) <= MAX_CONTACTS:
            raise SendGridError(400, f"contacts must hold 1 to {MAX_CONTACTS} contacts", "contacts")
        list_ids = body.get("list_ids") or []
        for i, contact in enumerate(contacts):
            if not isinstance(contact, dict) or not valid_email(contact.get("email")):
                raise SendGridError(400, "email is required to be a valid email", f"contacts[{i}].email")
        now = iso(time.time())
        job_id = str(uuid.uuid4())
        created = updated = 0
        with self._lock:
            for contact in contacts:
                email = contact["email"].lower()
                fields = {k: v for k, v in contact.items() if k != "email"}
                current = self.contacts.get(email)
                if current is None:
                    created += 1
                    current = {
                        "id": str(uuid.uuid4()),
                        "email": email,
                        "list_ids": [],
                        "segment_ids": [],
                        "custom_fields": {},
                        "created_at": now,
                    }
                    self.contacts[email] = current
                else:
                    updated += 1
                custom = fields.pop("custom_fields", None)
                current.update(fields)
                if isinstance(custom, dict):
                    current["custom_fields"] = {**current["custom_fields"], **custom}
                current["list_ids"] = sorted(set(current["list_ids"]) | set(list_ids))
                current["updated_at"] = now
            self.jobs[job_id] = {"created_count": created, "updated_count": updated}
        return {"job_id": job_id}

    def _search(self, body: Any) -> dict[str, Any]:
        query = body.get("query") if isinstance(body, dict) else None
        if not isinstance(query, str):
            raise SendGridError(400, "query is required", "query")
        equals, like = _SGQL_EQUALS.match(query), _SGQL_LIKE.match(query)
        if equals is None and like is None:
            raise SendGridError(
                400, "the emulator supports only email = '...' and email LIKE '...%'", "query"
            )
        with self._lock:
            if equals is not None:
                found = [c for e, c in self.contacts.items() if e == equals.group(1)]
            else:
                assert like is not None
                found = [c for e, c in sorted(self.contacts.items()) if e.startswith(like.group(1))]
            return {"result": [dict(c) for c in found[:SEARCH_RESULTS]], "contact_count": len(found)}

    def _start_export(self, request: Request) -> dict[str, Any]:
        body = self._json_body(request) or {}
        if not isinstance(body, dict):
            raise SendGridError(400, "Bad Request")
        if body.get("file_type", "csv") != "json":
            raise SendGridError(400, "the emulator writes json exports only", "file_type")
        export_id = str(uuid.uuid4())
        now = time.time()
        with self._lock:
            snapshot = [dict(c) for _, c in sorted(self.contacts.items())]
            self._exports[export_id] = {
                "polls": self.export_polls,
                "created_at": iso(now),
                "contacts": snapshot,
                "signature": secrets.token_hex(16),
            }
        return {
            "id": export_id,
            "_metadata": {"self": f"{self.url}/v3/marketing/contacts/exports/{export_id}"},
        }

    def _export_status(self, export_id: str) -> dict[str, Any]:
        with self._lock:
            export = self._exports.get(export_id)
            if export is None:
                raise SendGridError(404, "export not found", "id")
            pending = export["polls"] > 0
            export["polls"] -= 1
        status: dict[str, Any] = {
            "id": export_id,
            "status": "pending" if pending else "ready",
            "created_at": export["created_at"],
            "updated_at": iso(time.time()),
            "expires_at": iso(time.time() + 72 * 3600),
            "_metadata": {"self": f"{self.url}/v3/marketing/contacts/exports/{export_id}"},
        }
        if not pending:
            status["completed_at"] = status["updated_at"]
            status["contact_count"] = len(export["contacts"])
            status["urls"] = [f"{self.url}/_downloads/{export_id}.json?X-Amz-Signature={export['signature']}"]
        return status

    def _download(self, request: Request) -> Response:
        export_id = request.path.removeprefix("/_downloads/").removesuffix(".json")
        signature = (parse_qs(request.query).get("X-Amz-Signature") or [""])[0]
        with self._lock:
            export = self._exports.get(export_id)
        if export is None or not secrets.compare_digest(signature, export["signature"]):
            return Response(403, b"<Error><Code>AccessDenied</Code></Error>", content_type="application/xml")
        lines = b"".join(orjson.dumps(c) + b"\n" for c in export["contacts"])
        if self.gzip_files:
            return Response(200, gzip.compress(lines), content_type="application/gzip")
        return Response(200, lines, content_type="application/json")

    # ---- suppressions -------------------------------------------------------------------------
    def _suppressions(self, name: str, query: str) -> list[dict[str, Any]]:
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        start = self._integer(params, "start_time", 0)
        end = self._integer(params, "end_time", None)
        limit = self._integer(params, "limit", MAX_LIMIT)
        offset = self._integer(params, "offset", 0)
        if limit is None or not 1 <= limit <= MAX_LIMIT:
            raise SendGridError(400, f"limit must be between 1 and {MAX_LIMIT}", "limit")
        if offset is None or offset < 0:
            raise SendGridError(400, "offset must be >= 0", "offset")
        if offset > 0:  # a page that continues an earlier one: where the handler faults apply
            path = f"/v3/suppression/{name}"
            fault = self.faults.take_handler_fault("duplicate", path)
            if fault is not None:  # the page starts early, as if offsets had shifted
                offset = max(0, offset - fault.items)
            mutation = self.faults.take_handler_fault("mutate", path)
            if mutation is not None:
                self._mutate(name, mutation.seconds)
        with self._lock:
            rows = [
                dict(r)
                for r in self.suppressions[name]
                if (start is None or r["created"] >= start) and (end is None or r["created"] <= end)
            ]
        rows.sort(key=lambda r: (-r["created"], r["email"]))
        return rows[offset : offset + limit]

    def _mutate(self, name: str, backdate: float) -> None:
        """Between two pages: an address joins the list `backdate` seconds ago (`mutations` says which)."""
        with self._lock:
            email = f"late.{len(self.mutations)}.{name}@mail.example"
            entry: dict[str, Any] = {"created": int(time.time() - backdate), "email": email}
            if name in ("bounces", "blocks"):
                entry.update(reason="550 5.1.1 user unknown", status="5.1.1")
            elif name == "spam_reports":
                entry["ip"] = "10.0.0.1"
            self.suppressions[name].append(entry)
            self.mutations.append((name, email))

    @staticmethod
    def _integer(params: dict[str, str], name: str, default: int | None) -> int | None:
        value = params.get(name)
        if value is None or value == "":
            return default
        if not re.fullmatch(r"\d{1,12}", value):
            raise SendGridError(400, f"{name} must be an integer", name)
        return int(value)
