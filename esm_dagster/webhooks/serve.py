"""Running the receiver under uvicorn: in the foreground for `esm webhooks serve`, or on a thread
(loopback, an ephemeral port) for tests and the demo."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any, Self

import uvicorn

from esm_dagster.webhooks.app import build_app

LOOPBACK = "127.0.0.1"


def serve(database_url: str, *, host: str = LOOPBACK, port: int = 8787) -> None:
    """Serve until interrupted. Proxy headers (`X-Forwarded-Proto/For`) are trusted from loopback
    only, uvicorn's default, so a TLS-terminating proxy on the same host keeps the signed URL right.
    Each delivery logs one line (mapping, provider, events stored, or why it was refused)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(build_app(database_url), host=host, port=port, proxy_headers=True, log_level="info")


class BackgroundServer:
    """The ASGI app served by a real uvicorn on a loopback socket, on a daemon thread."""

    def __init__(self, database_url: str, **app_options: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((LOOPBACK, 0))
        self.port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(build_app(database_url, **app_options), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the webhook server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
