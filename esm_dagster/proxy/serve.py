"""Running the proxy under uvicorn: in the foreground (`python -m esm_dagster.proxy serve`) or on a
thread on a loopback port (tests)."""

from __future__ import annotations

import logging

import uvicorn

from esm_dagster.asgi_thread import LOOPBACK, LoopbackAsgiServer
from esm_dagster.proxy.app import ProxyConfig, build_app


def serve(config: ProxyConfig, *, host: str = LOOPBACK, port: int = 8080) -> None:
    """Serve until interrupted. Meant to listen on loopback too, behind the TLS terminator (or on
    a private interface with TLS handled by uvicorn's --ssl options in a fork of this function):
    Basic credentials must never cross a network in clear."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(build_app(config), host=host, port=port, proxy_headers=True, log_level="info")


class BackgroundProxy(LoopbackAsgiServer):
    """The proxy served by a real uvicorn on a loopback socket, on a daemon thread."""

    def __init__(self, config: ProxyConfig) -> None:
        super().__init__(build_app(config), name="the UI proxy", lifespan="on")
