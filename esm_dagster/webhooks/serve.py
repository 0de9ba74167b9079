"""Running the receiver under uvicorn: in the foreground for `esm webhooks serve`, or on a thread
(loopback, an ephemeral port) for tests and the demo."""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from esm_dagster.asgi_thread import LOOPBACK, LoopbackAsgiServer
from esm_dagster.webhooks.app import build_app


def serve(database_url: str, *, host: str = LOOPBACK, port: int = 8787) -> None:
    """Serve until interrupted. Proxy headers (`X-Forwarded-Proto/For`) are trusted from loopback
    only, uvicorn's default, so a TLS-terminating proxy on the same host keeps the signed URL right.
    Each delivery logs one line (mapping, provider, events stored, or why it was refused)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(build_app(database_url), host=host, port=port, proxy_headers=True, log_level="info")


class BackgroundServer(LoopbackAsgiServer):
    """The receiver served by a real uvicorn on a loopback socket, on a daemon thread."""

    def __init__(self, database_url: str, **app_options: Any) -> None:
        super().__init__(build_app(database_url, **app_options), name="the webhook server", lifespan="off")
