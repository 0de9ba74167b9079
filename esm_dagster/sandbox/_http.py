"""Shared machinery of the loopback emulators: a threaded HTTP/1.1 server, a request log and faults.

Each provider emulator subclasses `LoopbackEmulator` and implements `handle(request) -> Response`;
this module owns the socket, keep-alive, the request log (method, path, query and arrival time
only: never headers, never bodies) and the fault switches that tests and the demo use to simulate outages.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, NamedTuple, Self

LOOPBACK = "127.0.0.1"


class RecordedRequest(NamedTuple):
    """One served request as the log keeps it: no headers, no body, credentials masked."""

    method: str
    path: str
    query: str


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"


FaultKind = Literal["fail", "rate_limit", "delay", "disconnect", "lose_response", "duplicate", "mutate"]
# Kinds the provider emulator applies itself, at the point of its protocol they are about (a page
# that continues a cursor); the HTTP layer leaves them in the queue for it.
HANDLER_KINDS: frozenset[str] = frozenset({"duplicate", "mutate"})


@dataclass(slots=True)
class Fault:
    """One pending fault, consumed by the next request whose path starts with `path` (any if None).

    `skip` is how many matching requests are still served normally before it applies (`after=`).
    """

    kind: FaultKind
    status: int = 500
    retry_after: float | None = None
    should_retry: bool | None = None
    seconds: float = 0.0
    path: str | None = None
    items: int = 0
    skip: int = 0


def _digest(credential: str) -> bytes:
    """What the switch keeps of a credential it expires: a digest, so no key sits in its state."""
    return hashlib.sha256(credential.encode("utf-8")).digest()


class FaultSwitch:
    """Faults the emulator applies to the next requests, first in, first out.

    - `fail_next(n, status=500)`: answer with the provider's server-error body.
    - `rate_limit_next(n, retry_after=1)`: answer 429 with the provider's rate-limit body.
    - `delay_next(n, seconds)`: wait, then answer normally (client timeouts).
    - `disconnect_next(n)`: close the connection without answering (network errors).
    - `lose_response_next(n)`: handle the request (a write commits), then close the connection
      without answering: the client cannot tell whether it happened (the case idempotency keys are for).
    - `duplicate_next(n, items=3)`: the next n pages that continue a cursor start with the last
      `items` objects of the page before, as offset paging does when new records shift the offsets.
    - `mutate_next(n, backdate=0)`: before the next n pages that continue a cursor are served, the
      object the cursor names (already served) changes and a new object is created, `backdate`
      seconds before the emulator's clock (an object that becomes visible after its `created`).
    - `expire_credentials_after(n, credential=None)`: after n more requests authenticated with it
      (with any credential if None), the credential answers the provider's "expired key" error.
    - `limit_rate(per_second, burst)`: a token bucket; requests over it get the rate-limit answer.
    Each queued fault takes `path=` to target only requests whose path starts with it, and
    `after=` to let that many matching requests through first (a fault in the middle of a sync).
    Duplicate and mutate faults are applied by the provider emulator (`take_handler_fault`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: collections.deque[Fault] = collections.deque()
        self._bucket: tuple[float, float] | None = None  # (rate per second, burst)
        self._tokens = 0.0
        self._last = 0.0
        self._expiries: list[list[Any]] = []  # [credential digest or None, requests left]
        self.injected = 0  # faults served so far (pending ones, bucket rejections, expired answers)

    def _add(self, n: int, fault: Fault, after: int = 0) -> None:
        if n < 0 or after < 0:
            raise ValueError("n and after must be >= 0")
        with self._lock:
            for i in range(n):
                self._pending.append(dataclasses.replace(fault, skip=after if i == 0 else 0))

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        *,
        should_retry: bool | None = None,
        path: str | None = None,
        after: int = 0,
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400..599)")
        self._add(n, Fault("fail", status=status, should_retry=should_retry, path=path), after)

    def rate_limit_next(
        self, n: int = 1, retry_after: float | None = 1, *, path: str | None = None, after: int = 0
    ) -> None:
        self._add(n, Fault("rate_limit", status=429, retry_after=retry_after, path=path), after)

    def delay_next(
        self, n: int = 1, seconds: float = 1.0, *, path: str | None = None, after: int = 0
    ) -> None:
        self._add(n, Fault("delay", seconds=seconds, path=path), after)

    def disconnect_next(self, n: int = 1, *, path: str | None = None, after: int = 0) -> None:
        self._add(n, Fault("disconnect", path=path), after)

    def lose_response_next(self, n: int = 1, *, path: str | None = None, after: int = 0) -> None:
        self._add(n, Fault("lose_response", path=path), after)

    def duplicate_next(self, n: int = 1, items: int = 3, *, path: str | None = None, after: int = 0) -> None:
        if items < 1:
            raise ValueError("items must be >= 1")
        self._add(n, Fault("duplicate", items=items, path=path), after)

    def mutate_next(
        self, n: int = 1, backdate: float = 0.0, *, path: str | None = None, after: int = 0
    ) -> None:
        if backdate < 0:
            raise ValueError("backdate must be >= 0 seconds")
        self._add(n, Fault("mutate", seconds=backdate, path=path), after)

    def expire_credentials_after(self, n: int = 0, credential: str | None = None) -> None:
        """After `n` more requests with `credential` (any if None) succeed, it answers "expired"."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self._expiries.append([None if credential is None else _digest(credential), n])

    def credential_expired(self, credential: str) -> bool:
        """Called by the emulator once `credential` authenticated: whether it has expired by now."""
        digest = _digest(credential)
        with self._lock:
            expired = False
            for entry in self._expiries:
                if entry[0] is not None and entry[0] != digest:
                    continue
                if entry[1] > 0:
                    entry[1] -= 1
                else:
                    expired = True
            if expired:
                self.injected += 1
            return expired

    def limit_rate(self, per_second: float | None, burst: int = 1) -> None:
        """Token bucket over all requests; `None` turns it off."""
        with self._lock:
            if per_second is None:
                self._bucket = None
                return
            if per_second <= 0 or burst < 1:
                raise ValueError("per_second must be > 0 and burst >= 1")
            self._bucket = (float(per_second), float(burst))
            self._tokens = float(burst)
            self._last = time.monotonic()

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
            self._bucket = None
            self._expiries.clear()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _pop(self, path: str, handler: bool, kind: str | None = None) -> Fault | None:
        """The first queued fault of the family for `path`, if it applies now; call under the lock."""
        for i, fault in enumerate(self._pending):
            if (fault.kind in HANDLER_KINDS) != handler or (kind is not None and fault.kind != kind):
                continue
            if fault.path is None or path.startswith(fault.path):
                if fault.skip > 0:  # this request passes; the fault waits for a later one
                    fault.skip -= 1
                    return None
                del self._pending[i]
                self.injected += 1
                return fault
        return None

    def take_handler_fault(self, kind: str, path: str) -> Fault | None:
        """The queued `duplicate` / `mutate` fault for this request, if it applies now; None otherwise.

        The emulator calls it only for requests the fault is about (a page continuing a cursor), so
        `after=` counts those requests.
        """
        if kind not in HANDLER_KINDS:
            raise ValueError(f"{kind!r} is not applied by the emulator's handler")
        with self._lock:
            return self._pop(path, handler=True, kind=kind)

    def take(self, path: str) -> Fault | None:
        """The fault for a request to `path`, removing it from the queue; None to serve normally."""
        with self._lock:
            fault = self._pop(path, handler=False)
            if fault is not None:
                return fault
            if self._bucket is not None:
                rate, burst = self._bucket
                now = time.monotonic()
                self._tokens = min(burst, self._tokens + (now - self._last) * rate)
                self._last = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                else:
                    self.injected += 1
                    wait = (1.0 - self._tokens) / rate
                    return Fault("rate_limit", status=429, retry_after=max(1.0, round(wait, 3)))
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver listens with a backlog of 5: a burst of new connections (concurrent runs, 30
    # partitions) would stall about a second each beyond that, which no real API does.
    request_queue_size = 128
    emulator: LoopbackEmulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (timeout, disconnect fault, stop()) is normal here, not worth a traceback.
        return


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True
    timeout = 60  # an idle keep-alive connection is dropped after this many seconds
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.emulator._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.emulator._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr logging
        return

    def _dispatch(self) -> None:
        emulator = self.server.emulator
        target = self.path
        path, _, query = target.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request(self.command, path, query, headers, body)
        emulator._record(request)
        fault = emulator.faults.take(path)
        if fault is not None and fault.kind in ("disconnect", "lose_response"):
            if fault.kind == "lose_response":  # the work is done (and committed), the answer is lost
                with contextlib.suppress(Exception):
                    emulator.handle(request)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
            fault = None
        try:
            response = (
                emulator.render_fault(request, fault) if fault is not None else emulator.handle(request)
            )
        except Exception:  # an emulator bug must still answer like a server would
            response = emulator.internal_error(request)
        self._write(response)

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = _dispatch


class LoopbackEmulator:
    """Base of the provider emulators: binds 127.0.0.1, serves in a daemon thread, logs requests."""

    request_log_limit = 100_000

    def __init__(self, *, host: str = LOOPBACK, port: int = 0) -> None:
        if host not in (LOOPBACK, "localhost", "::1"):
            raise ValueError("emulators only bind to loopback")
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._log_lock = threading.Lock()
        self._log: collections.deque[RecordedRequest] = collections.deque(maxlen=self.request_log_limit)
        self._times: collections.deque[float] = collections.deque(maxlen=self.request_log_limit)
        self._count = 0
        self.faults = FaultSwitch()
        self._tls = False

    # ---- to implement -------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def render_fault(self, request: Request, fault: Fault) -> Response:
        raise NotImplementedError

    def internal_error(self, request: Request) -> Response:
        return Response(500, b'{"error":"internal"}')

    def redact_query(self, query: str) -> str:
        """What the request log keeps of a query string; subclasses mask credentials."""
        return query

    def redact_path(self, path: str) -> str:
        """What the request log keeps of a path; subclasses mask tokens carried in it (Telegram)."""
        return path

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Self:
        if self._server is not None:
            return self
        server = _Server((self._host, self._port), _Handler)
        server.emulator = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=type(self).__name__, daemon=True
        )
        self._thread.start()
        return self

    def serve_tls(self, context: ssl.SSLContext) -> Self:
        """Answer over TLS from now on (call after `start()`; `url` becomes https).

        For tests of certificate validation: the emulator behind the certificate a test made.
        A client that rejects the certificate only fails its own handshake.
        """
        if self._server is None:
            raise RuntimeError("emulator is not running; call start()")
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._tls = True
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._log_lock:
            open_connections = list(self._connections)
        for conn in open_connections:  # keep-alive connections would otherwise outlive the server
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator is not running; call start()")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    # ---- request log --------------------------------------------------------------------------
    @property
    def request_count(self) -> int:
        with self._log_lock:
            return self._count

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._log_lock:
            return list(self._log)

    @property
    def request_times(self) -> list[float]:
        """When each logged request arrived (`time.monotonic()`), in the order of `requests`.

        What a rate-limit test measures: the requests the provider really received, per window.
        """
        with self._log_lock:
            return list(self._times)

    def reset_request_log(self) -> None:
        with self._log_lock:
            self._log.clear()
            self._times.clear()
            self._count = 0

    def _record(self, request: Request) -> None:
        entry = RecordedRequest(
            request.method, self.redact_path(request.path), self.redact_query(request.query)
        )
        with self._log_lock:
            self._count += 1
            self._log.append(entry)
            self._times.append(time.monotonic())

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._log_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


def serve_until_signalled(emulator: LoopbackEmulator, on_started: Callable[[], None] | None = None) -> None:
    """What every emulator's `python -m` does: start, print the URL (the one line scripts read),
    run `on_started`, then serve until SIGTERM or Ctrl-C, and stop cleanly."""
    import signal

    stopped = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    emulator.start()
    print(emulator.url, flush=True)
    try:
        if on_started is not None:
            on_started()
        while not stopped.wait(0.5):
            pass
    finally:
        emulator.stop()
