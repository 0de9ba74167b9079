"""The proxy as an ASGI app: HTTP Basic against the password file, the catalog role, the GraphQL
policy, then a plain forward to the loopback webserver (HTTP and the /graphql websocket).

The client's own `Authorization`, `X-Forwarded-User` and `X-Esm-Operator` headers are dropped:
upstream sees only what the proxy vouches for.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect as ws_connect

from esm_dagster.catalog.audit import Actor, record_now
from esm_dagster.proxy.graphql_policy import GraphQLRefused, authorize
from esm_dagster.proxy.passwords import PasswordHash, load_password_file
from esm_dagster.security.access import AccessDenied, identify
from esm_dagster.security.redact import redact_text
from esm_dagster.security.secret import Secret

log = logging.getLogger("esm_dagster.proxy")

SOURCE = "ui-proxy"
USER_HEADER = "x-forwarded-user"
ROLE_HEADER = "x-esm-operator-role"
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
DROPPED_FROM_CLIENT = HOP_BY_HOP | {"authorization", USER_HEADER, ROLE_HEADER, "x-esm-operator", "cookie"}
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_GRAPHQL_BODY = 8 * 1024 * 1024
WS_REFUSED = 4403  # websocket close code: a message the role may not send


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    upstream: str  # the loopback webserver, e.g. http://127.0.0.1:3000
    password_file: Path
    database_url: str
    realm: str = "esm dagster"
    cache_seconds: float = 30.0  # how long a verified password and a looked-up role are trusted


@dataclass(slots=True)
class _Identity:
    email: str
    role: str


@dataclass(slots=True)
class Authenticator:
    """Basic credentials -> operator. Successful password checks are cached by a digest of the
    header (scrypt on every UI request would cost more than the UI), roles for `cache_seconds`."""

    config: ProxyConfig
    _passwords: dict[str, PasswordHash] = field(default_factory=dict)
    _passwords_mtime: float = -1.0
    _verified: dict[str, tuple[str, float]] = field(default_factory=dict)
    _roles: dict[str, tuple[str | None, float]] = field(default_factory=dict)

    def password_table(self) -> dict[str, PasswordHash]:
        mtime = self.config.password_file.stat().st_mtime
        if mtime != self._passwords_mtime:  # edits take effect without a restart
            self._passwords = load_password_file(self.config.password_file)
            self._passwords_mtime = mtime
            self._verified.clear()
        return self._passwords

    def _verify(self, header: str) -> str | None:
        now = time.monotonic()
        key = hashlib.sha256(header.encode("utf-8", "replace")).hexdigest()
        table = self.password_table()
        cached = self._verified.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded.strip():
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        email, sep, password_text = decoded.partition(":")
        password = Secret(password_text)
        email = email.strip().lower()
        entry = table.get(email)
        if not sep or entry is None or not entry.matches(password):
            return None
        self._verified[key] = (email, now + self.config.cache_seconds)
        return email

    def _role(self, email: str) -> str | None:
        now = time.monotonic()
        cached = self._roles.get(email)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            operator = identify(self.config.database_url, email)
            role = None if operator.single_operator_mode else operator.role
        except AccessDenied:
            role = None
        self._roles[email] = (role, now + self.config.cache_seconds)
        return role

    def identify(self, headers: Mapping[str, str]) -> _Identity | str | None:
        """The identity, None (no or wrong credentials: 401) or the email of someone who knows a
        password but is not an active operator of the catalog (403)."""
        header = headers.get("authorization")
        if not header:
            return None
        email = self._verify(header)
        if email is None:
            return None
        role = self._role(email)
        return _Identity(email, role) if role is not None else email


def _unauthorized(realm: str) -> Response:
    return PlainTextResponse(
        "authentication required", status_code=401, headers={"WWW-Authenticate": f'Basic realm="{realm}"'}
    )


def _bad_request(message: str) -> Response:
    return JSONResponse({"errors": [{"message": message}]}, status_code=400)


def _forward_headers(headers: Mapping[str, str], identity: _Identity, client: str | None) -> dict[str, str]:
    out = {k: v for k, v in headers.items() if k.lower() not in DROPPED_FROM_CLIENT}
    out[USER_HEADER] = identity.email
    out[ROLE_HEADER] = identity.role
    if client:
        out["x-forwarded-for"] = client
    return out


def build_app(config: ProxyConfig) -> Starlette:
    auth = Authenticator(config)
    auth.password_table()  # a missing or broken password file stops the start, naming the line
    upstream = config.upstream.rstrip("/")
    client = httpx.AsyncClient(base_url=upstream, timeout=httpx.Timeout(60.0, connect=5.0))

    async def who(connection: HTTPConnection) -> _Identity | Response:
        found = await run_in_threadpool(auth.identify, connection.headers)
        if found is None:
            return _unauthorized(config.realm)
        if isinstance(found, str):
            return PlainTextResponse(
                f"{found} is not an active operator of this catalog (an admin adds them with "
                "`esm operators add EMAIL --role viewer|engineer|admin`)",
                status_code=403,
            )
        return found

    async def refuse(identity: _Identity, refusal: GraphQLRefused) -> Response:
        if refusal.status == 403:
            await run_in_threadpool(
                record_now,
                config.database_url,
                "access.denied",
                actor=Actor(identity.email, identity.role, SOURCE),
                outcome="denied",
                details={
                    "permission": "dagster.ui",
                    "command": f"graphql mutation {refusal.mutation}" if refusal.mutation else str(refusal),
                },
            )
        log.warning("refused %s (%s): %s", identity.email, identity.role, refusal)
        return JSONResponse({"errors": [{"message": str(refusal)}]}, status_code=refusal.status)

    async def checked_graphql_body(request: Request, identity: _Identity) -> bytes | Response:
        """The body to forward for a /graphql request, or the refusal."""
        if request.method == "GET":
            names = ("query", "variables", "operationName")
            repeated = [k for k in names if len(request.query_params.getlist(k)) > 1]
            if repeated:
                return _bad_request(f"repeated parameter {repeated[0]}")
            params: dict[str, Any] = dict(request.query_params)
            if "variables" in params:
                try:
                    params["variables"] = json.loads(params["variables"])
                except ValueError:
                    return _bad_request("`variables` is not JSON")
            if "query" in params:
                # Dagster answers GET queries; a mutation is refused here whatever the role.
                try:
                    authorize(params, email=identity.email, role=identity.role, allow_mutations=False)
                except GraphQLRefused as refusal:
                    return await refuse(identity, refusal)
            return b""
        body = await request.body()
        if len(body) > MAX_GRAPHQL_BODY:
            return JSONResponse({"errors": [{"message": "GraphQL request too large"}]}, status_code=413)
        # Dagster reads the query string, not the body, of a POST that is not application/json:
        # only JSON bodies are checked, and they are forwarded as application/json.
        if "application/json" not in request.headers.get("content-type", ""):
            return JSONResponse(
                {"errors": [{"message": "POST /graphql must be application/json"}]}, status_code=415
            )
        try:
            payload = json.loads(body)
        except ValueError:
            return _bad_request("the body is not JSON")
        if not isinstance(payload, dict):  # Dagster takes no batches
            return _bad_request("the body must be one JSON object")
        try:
            decision = authorize(payload, email=identity.email, role=identity.role)
        except GraphQLRefused as refusal:
            return await refuse(identity, refusal)
        if decision.stamped:
            log.info("%s (%s) sends %s", identity.email, identity.role, ", ".join(decision.stamped))
        return json.dumps({**payload, "variables": decision.variables}).encode()

    async def http_endpoint(request: Request) -> Response:
        identity = await who(request)
        if isinstance(identity, Response):
            return identity
        path = request.url.path
        content: bytes | None = None
        is_graphql = path.rstrip("/").endswith("/graphql")
        if is_graphql:
            checked = await checked_graphql_body(request, identity)
            if isinstance(checked, Response):
                return checked
            content = checked or None
        elif request.method not in READ_ONLY_METHODS:
            # /report_asset_materialization/... and the like write events: admins only.
            if identity.role != "admin":
                refusal = GraphQLRefused(
                    403, f"{identity.email} ({identity.role}) may not {request.method} {path}"
                )
                return await refuse(identity, refusal)
            content = await request.body()
        headers = _forward_headers(request.headers, identity, request.client.host if request.client else None)
        if is_graphql and content is not None:
            headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            headers["content-type"] = "application/json"
        target = httpx.URL(path=path, query=request.url.query.encode())
        outgoing = client.build_request(request.method, target, headers=headers, content=content)
        try:
            answer = await client.send(outgoing, stream=True)
        except httpx.TransportError as exc:
            log.error("upstream %s unreachable: %s", upstream, redact_text(str(exc)))
            return PlainTextResponse("the Dagster webserver is not answering", status_code=502)
        response_headers = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        if "content-length" in answer.headers:
            response_headers["content-length"] = answer.headers["content-length"]
        return StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            headers=response_headers,
            background=BackgroundTask(answer.aclose),
        )

    async def websocket_endpoint(websocket: WebSocket) -> None:
        identity = await who(websocket)
        if isinstance(identity, Response):
            with contextlib.suppress(RuntimeError):
                await websocket.send_denial_response(identity)
                return
            await websocket.close(code=1008)
            return
        ws_url = "ws" + upstream[len("http") :] + websocket.url.path
        if websocket.url.query:
            ws_url += "?" + websocket.url.query
        protocols = [
            p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()
        ]
        extra = {USER_HEADER: identity.email, ROLE_HEADER: identity.role}
        try:
            remote = await ws_connect(
                ws_url,
                subprotocols=[websockets.Subprotocol(p) for p in protocols] or None,
                additional_headers=extra,
                max_size=MAX_GRAPHQL_BODY,
            )
        except (OSError, websockets.WebSocketException) as exc:
            log.error("upstream websocket %s unreachable: %s", ws_url, redact_text(str(exc)))
            await websocket.close(code=1011)
            return
        await websocket.accept(subprotocol=remote.subprotocol)

        async def client_to_upstream() -> None:
            while True:
                try:
                    text = await websocket.receive_text()
                except WebSocketDisconnect:
                    return
                refusal = _check_ws_message(text, identity)
                if refusal is not None:
                    await refuse(identity, refusal)
                    await websocket.close(code=WS_REFUSED, reason=str(refusal)[:120])
                    return
                await remote.send(text)

        async def upstream_to_client() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for message in remote:
                    if isinstance(message, bytes):
                        await websocket.send_bytes(message)
                    else:
                        await websocket.send_text(message)
            with contextlib.suppress(RuntimeError):
                await websocket.close()

        tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await remote.close()

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    return Starlette(
        routes=[
            WebSocketRoute("/{path:path}", websocket_endpoint),
            Route(
                "/{path:path}",
                http_endpoint,
                methods=["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"],
            ),
        ],
        lifespan=lifespan,
    )


def _check_ws_message(text: str, identity: _Identity) -> GraphQLRefused | None:
    """Subscriptions (and queries) pass; a mutation over the websocket is refused for every role:
    launches go over HTTP, where they are stamped and audited."""
    try:
        message: Any = json.loads(text)
    except ValueError:
        return GraphQLRefused(400, "websocket message is not JSON")
    if not isinstance(message, dict):
        return GraphQLRefused(400, "websocket message is not an object")
    if message.get("type") not in ("start", "subscribe"):
        return None
    payload = message.get("payload")
    if not isinstance(payload, dict):
        return GraphQLRefused(400, "websocket start message has no payload")
    try:
        authorize(payload, email=identity.email, role=identity.role, allow_mutations=False)
    except GraphQLRefused as refusal:
        return refusal
    return None
