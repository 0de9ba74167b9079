"""Running the proxy under uvicorn: in the foreground (`python -m esm_dagster.proxy serve`) or on a
thread on a loopback port (tests)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType
from typing import Self

import uvicorn

from esm_dagster.proxy.app import ProxyConfig, build_app

LOOPBACK = "127.0.0.1"


def serve(config: ProxyConfig, *, host: str = LOOPBACK, port: int = 8080) -> None:
    """Serve until interrupted. Meant to listen on loopback too, behind the TLS terminator (or on
    a private interface with TLS handled by uvicorn's --ssl options in a fork of this function):
    Basic credentials must never cross a network in clear."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(build_app(config), host=host, port=port, proxy_headers=True, log_level="info")


class BackgroundProxy:
    """The proxy served by a real uvicorn on a loopback socket, on a daemon thread."""

    def __init__(self, config: ProxyConfig) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((LOOPBACK, 0))
        self.port = int(self._sock.getsockname()[1])
        server_config = uvicorn.Config(build_app(config), log_level="warning", lifespan="on")
        self._server = uvicorn.Server(server_config)
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
                raise RuntimeError("the UI proxy did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
