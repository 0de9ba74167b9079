"""The `esm webhooks serve` ASGI application: `POST /webhooks/<mapping id | slug | slug/stream>`.

Per request: find the mapping, bound the body, decrypt the mapping's credentials for this one
verification, verify as its provider signs, refuse a replay, and store the events in the inbox.
The answers, chosen for how providers react to them:

- 200 `accepted`: stored. 200 `duplicate`: every event id is stored already; a provider retry
  (re-signed, so a new signature) of a delivery whose answer it never got must stop retrying.
- 401: missing or wrong signature, or a timestamp outside the provider's window (stale).
- 400: a malformed signature header or a body that is not the provider's shape.
- 409: the same signed request again (same signature): a replay; nothing is stored.
- 413: a body over the limit (`ESM_WEBHOOK_MAX_BODY_BYTES`, default 1 MiB).
- 404: no such mapping, or its provider sends no signed webhooks.
- 503: the mapping's key is not configured or cannot be decrypted: our problem, so the provider
  keeps the event and retries. 500: the catalog failed; nothing stored, the provider retries.

Reasons name the header, the mapping and the rule; never a secret, a signature or the body.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.mappings import MappingError, slugify, spec_from_row
from esm_dagster.catalog.models import ExternalSystemMapping
from esm_dagster.catalog.types import utcnow
from esm_dagster.security.redact import redact_text
from esm_dagster.security.vault import Vault, VaultError
from esm_dagster.webhooks.errors import WebhookRejected
from esm_dagster.webhooks.events import slack_challenge, split_events
from esm_dagster.webhooks.inbox import signature_digest, signature_seen, store
from esm_dagster.webhooks.schemes import scheme_for
from esm_dagster.webhooks.verifiers import SignedRequest

log = logging.getLogger("esm_dagster.webhooks")

DEFAULT_MAX_BODY = 1024 * 1024
MAX_BODY_ENV = "ESM_WEBHOOK_MAX_BODY_BYTES"
PUBLIC_URL_ENV = "ESM_WEBHOOK_PUBLIC_URL"


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    body: dict[str, Any]


def find_receiver(session: Session, ref: str) -> ExternalSystemMapping:
    """The mapping a webhook path names: its id, its system slug (or name), or `slug/stream`."""
    try:
        row = session.get(ExternalSystemMapping, uuid.UUID(ref))
    except ValueError:
        row = None
    if row is not None:
        return row
    name, _, stream = ref.strip().lower().partition("/")
    matches = []
    for candidate in session.scalars(sa.select(ExternalSystemMapping)):
        try:
            slug = slugify(candidate.system_name)
        except MappingError:
            continue
        if name not in (slug, candidate.system_name.strip().lower()):
            continue
        if stream and spec_from_row(candidate).stream != stream:
            continue
        matches.append(candidate)
    if not matches:
        raise WebhookRejected(404, f"no mapping {ref!r}: use the mapping id, its system slug or slug/stream")
    if len(matches) > 1:
        raise WebhookRejected(
            404, f"{ref!r} names {len(matches)} mappings: use /webhooks/<mapping id> or <slug>/<stream>"
        )
    return matches[0]


class WebhookReceiver:
    """Verifies and stores one delivery; the HTTP layer around it only reads the body."""

    def __init__(self, database_url: str, vault: Vault, *, clock: Callable[[], float] = time.time) -> None:
        self.database_url = database_url
        self.vault = vault
        self.clock = clock
        self.sessions = session_factory(database_url)

    def receive(self, ref: str, request: SignedRequest) -> Outcome:
        try:
            return self._receive(ref, request)
        except WebhookRejected as rejected:
            log.warning(f"webhook {ref!r} refused ({rejected.status}): {rejected.reason}")
            return Outcome(rejected.status, {"error": rejected.reason})
        except Exception as exc:  # the catalog is down, ...: a 500 makes the provider retry later
            log.error(f"webhook {ref!r} not stored: {type(exc).__name__}: {redact_text(str(exc))[:300]}")
            return Outcome(500, {"error": "the delivery could not be stored; retry later"})

    def _receive(self, ref: str, request: SignedRequest) -> Outcome:
        with self.sessions.begin() as session:
            row = find_receiver(session, ref)
            mapping = repr(row.system_name)
            scheme = scheme_for(row.provider_name)
            if scheme is None:
                raise WebhookRejected(
                    404, f"mapping {mapping}: provider {row.provider_name!r} sends no signed webhooks"
                )
            try:
                credentials = self.vault.decrypt(row.credentials, mapping=mapping)
            except VaultError as exc:
                raise WebhookRejected(503, redact_text(str(exc))) from None
            token = scheme.verify(request, credentials, now=self.clock(), mapping=mapping)
            provider = row.provider_name.strip().lower()
            if provider == "slack" and (challenge := slack_challenge(request)) is not None:
                return Outcome(200, {"challenge": challenge})
            digest = signature_digest(token)
            if signature_seen(session, row.id, digest):
                raise WebhookRejected(
                    409,
                    f"mapping {mapping}: this signed request was received before (replay); nothing stored",
                )
            events = split_events(provider, request)
            secrets = [value.reveal() for value in credentials.values()]
            result = store(session, row.id, provider, events, digest, secrets=secrets, now=utcnow())
            del credentials, secrets
        status = "accepted" if result.stored else "duplicate"
        log.info(
            f"webhook {provider} for mapping {mapping}: {len(result.stored)} event(s) stored, "
            f"{len(result.duplicates)} already in the inbox"
        )
        return Outcome(
            200, {"status": status, "stored": len(result.stored), "duplicates": len(result.duplicates)}
        )


class BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _signed_url(request: Request, public_url: str | None) -> str:
    """The URL the provider addressed (Twilio and HubSpot sign it): behind a proxy that rewrites the
    host or terminates TLS, `ESM_WEBHOOK_PUBLIC_URL` gives the scheme and host it was sent to."""
    if not public_url:
        return str(request.url)
    query = request.url.query
    return public_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")


def build_app(
    database_url: str,
    *,
    vault: Vault | None = None,
    max_body_bytes: int | None = None,
    public_url: str | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    receiver = WebhookReceiver(database_url, vault or Vault.from_env(), clock=clock)
    limit = max_body_bytes or int(os.environ.get(MAX_BODY_ENV) or DEFAULT_MAX_BODY)
    public = public_url if public_url is not None else os.environ.get(PUBLIC_URL_ENV)

    async def webhook(request: Request) -> JSONResponse:
        ref = request.path_params["ref"]
        try:
            body = await _read_body(request, limit)
        except BodyTooLarge:
            log.warning(f"webhook {ref!r} refused (413): body over {limit} bytes")
            return JSONResponse({"error": f"body is larger than {limit} bytes"}, status_code=413)
        signed = SignedRequest(
            method=request.method,
            url=_signed_url(request, public),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        outcome = await run_in_threadpool(receiver.receive, ref, signed)
        return JSONResponse(outcome.body, status_code=outcome.status)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/webhooks/{ref:path}", webhook, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )
