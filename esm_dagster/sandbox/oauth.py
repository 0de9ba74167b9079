"""An OAuth2 token endpoint the provider emulators embed (PayPal, Salesforce, ...).

It issues access tokens that expire, refresh tokens that rotate on use (the old one is then
`invalid_grant`, as providers with rotation answer), verifies RS256 JWT-bearer assertions against a
configured public key, revokes tokens, and counts what it issued per grant, so a test can assert
"exactly one refresh" from what really reached the server. Tokens are kept only in memory and
never in the request log (which holds no bodies or headers).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import jwt
import orjson

from esm_dagster.sandbox._http import Request, Response

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclass(slots=True)
class IssuedToken:
    client_id: str
    subject: str
    expires_at: float
    revoked: bool = False


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _json(status: int, body: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, orjson.dumps(body), headers or [("Cache-Control", "no-store")])


def oauth_error(status: int, error: str, description: str) -> Response:
    """RFC 6749 §5.2 error answer."""
    return _json(status, {"error": error, "error_description": description})


class OAuthTokenServer:
    """Grants: client_credentials, refresh_token (rotating), jwt-bearer; plus revocation.

    `clients` maps client id to client secret. `jwt_public_key` (PEM) enables jwt-bearer for
    assertions whose `iss` is a known client id and whose `aud` is `jwt_audience`.
    `answer` adds provider-specific fields to each token answer (PayPal `app_id`, Salesforce
    `instance_url`); `expires_in=False` leaves `expires_in` out, as Salesforce does.
    """

    def __init__(
        self,
        *,
        clients: Mapping[str, str],
        access_lifetime: float = 3600.0,
        rotate_refresh_tokens: bool = True,
        echo_refresh_token: bool = False,
        jwt_public_key: str | None = None,
        jwt_audience: str | None = None,
        expires_in: bool = True,
        token_prefix: str = "at",  # noqa: S107 - a label in front of random tokens, not a password
        answer: Callable[[IssuedToken], Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clients = dict(clients)
        self.access_lifetime = access_lifetime
        self.rotate_refresh_tokens = rotate_refresh_tokens
        # Without rotation, answer a refresh with the same refresh token (HubSpot) instead of none.
        self.echo_refresh_token = echo_refresh_token
        self.jwt_public_key = jwt_public_key
        self.jwt_audience = jwt_audience
        self.expires_in = expires_in
        self.token_prefix = token_prefix
        self._answer = answer
        self.clock = clock
        self._lock = threading.Lock()
        self._access: dict[str, IssuedToken] = {}  # by digest
        self._refresh: dict[str, IssuedToken] = {}  # by digest; rotated or revoked ones are removed
        self.issued: Counter[str] = Counter()  # successful token answers per grant type
        self.refused: Counter[str] = Counter()  # error answers per error code

    # ---- counts tests read --------------------------------------------------------------------
    @property
    def refreshes(self) -> int:
        """Successful `grant_type=refresh_token` answers."""
        return self.issued["refresh_token"]

    @property
    def tokens_issued(self) -> int:
        return sum(self.issued.values())

    # ---- set-up and control ---------------------------------------------------------------------
    def issue_refresh_token(self, client_id: str, subject: str = "user") -> str:
        """A refresh token as an authorization-code exchange would have given (test set-up)."""
        token = f"rt_{secrets.token_urlsafe(24)}"
        with self._lock:
            self._refresh[_digest(token)] = IssuedToken(client_id, subject, float("inf"))
        return token

    def issue_access_token(self, client_id: str, subject: str = "user", lifetime: float | None = None) -> str:
        """An access token issued out of band (e.g. one that is already expired: `lifetime=-1`)."""
        with self._lock:
            return self._new_access(client_id, subject, lifetime)

    def revoke(self, token: str) -> bool:
        """Revoke an access or refresh token; True if it was known."""
        key = _digest(token)
        with self._lock:
            found = self._refresh.pop(key, None)
            access = self._access.get(key)
            if access is not None:
                access.revoked = True
            return found is not None or access is not None

    def revoke_all(self) -> None:
        with self._lock:
            self._refresh.clear()
            for token in self._access.values():
                token.revoked = True

    def expire_access_tokens(self) -> None:
        """Every access token issued so far expires now (the session timeout passed)."""
        with self._lock:
            for token in self._access.values():
                token.expires_at = min(token.expires_at, self.clock() - 1)

    def authenticate(self, access_token: str | None) -> IssuedToken | None:
        """The live token behind `Authorization: Bearer <access_token>`, or None."""
        if not access_token:
            return None
        with self._lock:
            token = self._access.get(_digest(access_token))
            if token is None or token.revoked or token.expires_at <= self.clock():
                return None
            return token

    # ---- HTTP -----------------------------------------------------------------------------------
    def handle_revoke(self, request: Request) -> Response:
        """`POST token=<token>` (RFC 7009): 200 whether or not the token was known."""
        form = dict(parse_qsl(request.body.decode("utf-8", "replace")))
        if form.get("token"):
            self.revoke(form["token"])
        return Response(200, b"", [("Cache-Control", "no-store")])

    def handle_token(self, request: Request) -> Response:
        if request.method != "POST":
            return oauth_error(405, "invalid_request", "the token endpoint takes POST")
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        grant = form.get("grant_type", "")
        if grant == "client_credentials":
            return self._count(grant, self._client_credentials(request, form))
        if grant == "refresh_token":
            return self._count(grant, self._refresh_token(request, form))
        if grant == JWT_BEARER:
            return self._count("jwt_bearer", self._jwt_bearer(form))
        return self._count(
            grant, oauth_error(400, "unsupported_grant_type", f"grant_type {grant!r} is not supported")
        )

    def _count(self, grant: str, response: Response) -> Response:
        with self._lock:
            if response.status == 200:
                self.issued[grant] += 1
            else:
                self.refused[orjson.loads(response.body).get("error", "?")] += 1
        return response

    def _client(self, request: Request, form: Mapping[str, str]) -> str | None:
        """The authenticated client id (HTTP Basic or form fields), or None."""
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = request.header("authorization") or ""
        if header.lower().startswith("basic "):
            try:
                pair = base64.b64decode(header[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            client_id, _, secret = pair.partition(":")
        if not client_id or client_id not in self.clients:
            return None
        expected = self.clients[client_id]
        if expected and not secrets.compare_digest((secret or "").encode(), expected.encode()):
            return None
        return client_id

    def _client_credentials(self, request: Request, form: Mapping[str, str]) -> Response:
        client_id = self._client(request, form)
        if client_id is None:
            return oauth_error(401, "invalid_client", "Client Authentication failed")
        with self._lock:
            access = self._new_access(client_id, client_id)
            return self._token_answer(access, None)

    def _refresh_token(self, request: Request, form: Mapping[str, str]) -> Response:
        client_id = self._client(request, form)
        if client_id is None:
            return oauth_error(400, "invalid_client", "invalid client credentials")
        presented = form.get("refresh_token", "")
        with self._lock:
            known = self._refresh.get(_digest(presented))
            if known is None or known.client_id != client_id:
                return oauth_error(400, "invalid_grant", "expired access/refresh token")
            refresh: str | None = None
            if self.rotate_refresh_tokens:
                del self._refresh[_digest(presented)]
                refresh = f"rt_{secrets.token_urlsafe(24)}"
                self._refresh[_digest(refresh)] = IssuedToken(client_id, known.subject, float("inf"))
            elif self.echo_refresh_token:
                refresh = presented
            access = self._new_access(client_id, known.subject)
            return self._token_answer(access, refresh)

    def _jwt_bearer(self, form: Mapping[str, str]) -> Response:
        if self.jwt_public_key is None:
            return oauth_error(400, "unsupported_grant_type", "jwt-bearer is not enabled")
        assertion = form.get("assertion", "")
        try:
            claims = jwt.decode(
                assertion,
                self.jwt_public_key,
                algorithms=["RS256"],
                audience=self.jwt_audience,
                options={"require": ["iss", "sub", "aud", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            return oauth_error(400, "invalid_grant", "expired authorization code")
        except jwt.InvalidAudienceError:
            return oauth_error(400, "invalid_grant", "audience is invalid")
        except jwt.PyJWTError:
            return oauth_error(400, "invalid_grant", "invalid assertion")
        issuer = str(claims["iss"])
        if issuer not in self.clients:
            return oauth_error(400, "invalid_client_id", "client identifier invalid")
        with self._lock:
            access = self._new_access(issuer, str(claims["sub"]))
            return self._token_answer(access, None)

    def _new_access(self, client_id: str, subject: str, lifetime: float | None = None) -> str:
        token = f"{self.token_prefix}_{secrets.token_urlsafe(24)}"
        life = self.access_lifetime if lifetime is None else lifetime
        self._access[_digest(token)] = IssuedToken(client_id, subject, self.clock() + life)
        return token

    def _token_answer(self, access: str, refresh: str | None) -> Response:
        issued = self._access[_digest(access)]
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer"}
        if self.expires_in:
            body["expires_in"] = int(self.access_lifetime)
        if refresh is not None:
            body["refresh_token"] = refresh
        if self._answer is not None:
            body.update(self._answer(issued))
        return _json(200, body)
