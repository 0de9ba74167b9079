"""Real receivers on loopback: an HTTP server for Slack and generic webhooks, an SMTP server.

The channels are tested against what actually arrives on a socket, not against mocks of our own
code; everything listens on 127.0.0.1 and nothing leaves the machine.
"""

from __future__ import annotations

import json
import socket
import threading
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

SLACK_TOKEN = "xQ7pLm2RtZ9vWc4Kd8NbHs3F"  # the secret part of the Slack webhook URL
SLACK_PATH = f"/services/T0ESMTEST/B0ESMTEST/{SLACK_TOKEN}"
HOOK_PATH = "/esm-alerts"
HOOK_AUTH = "Bearer hook-header-secret-9f8e7d6c"
SMTP_USER = "esm-alerts"
SMTP_PASSWORD = "smtp-pa55word-Zx81Qa"


class HttpReceiver:
    """Records every POST; `status[path]` makes a path answer with an error."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.status: dict[str, int] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.status.get(self.path, 200)
                with receiver.lock:
                    receiver.posts.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "json": json.loads(body),
                            "status": status,
                        }
                    )
                payload = b"ok" if status == 200 else b"internal_error"
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self, path: str) -> list[dict[str, Any]]:
        """Posts to `path` that were accepted (2xx)."""
        with self.lock:
            return [p for p in self.posts if p["path"] == path and p["status"] == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Collect:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=default)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 OK"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = (
        isinstance(data, LoginPassword)
        and data.login == SMTP_USER.encode()
        and data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


class SmtpReceiver:
    """An aiosmtpd server on loopback; `start()` may be called later to test a refused connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.handler = _Collect()
        self.controller: Controller | None = None

    @property
    def messages(self) -> list[tuple[list[str], EmailMessage]]:
        return self.handler.messages

    def start(self) -> SmtpReceiver:
        # Login over plain SMTP is allowed here because it never leaves loopback.
        self.controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=_authenticator,
            auth_require_tls=False,
        )
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


def free_port() -> int:
    """A loopback port nobody listens on (connecting to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
