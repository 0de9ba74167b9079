"""The JSON-lines stream helpers: batching, line splitting with gzip, and an answer that breaks off."""

from __future__ import annotations

import gzip
import socket
import threading

import pytest

from esm_dagster.providers.auth import BasicAuth
from esm_dagster.providers.base import ProviderError
from esm_dagster.providers.jsonlines import _lines, batches
from esm_dagster.providers.mixpanel import MixpanelProvider
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy


def test_batches_flag_the_last_one_and_never_yield_nothing() -> None:
    assert list(batches(range(5), 2)) == [([0, 1], False), ([2, 3], False), ([4], True)]
    assert list(batches(range(4), 2)) == [([0, 1], False), ([2, 3], True)]
    assert list(batches([], 3)) == [([], True)]
    assert list(batches(range(2), 5)) == [([0, 1], True)]


def test_lines_split_across_chunks_and_gunzip_on_the_fly() -> None:
    text = b'{"a":1}\n{"b":2}\n{"c":3}'
    chunks = [text[:5], text[5:11], text[11:]]
    assert list(_lines(chunks)) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
    zipped = gzip.compress(text + b"\n")
    assert [line for line in _lines([zipped[:7], zipped[7:]]) if line] == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_an_answer_that_breaks_off_mid_body_is_a_retryable_network_error() -> None:
    """A real socket that promises 10 kB, sends two lines and hangs up (no emulator can do that)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    body = b'{"event":"A","properties":{"time":1767225601}}\n{"event":"B","properties":{"time":1767225602}}\n'

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nContent-Length: 10000\r\n\r\n"
                + body
            )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    provider = MixpanelProvider(
        url,
        auth=BasicAuth("user", Secret("the-secret-value")),
        policy=TransportPolicy(retry_attempts=0, timeout_seconds=5),
        export_url=url,
    )
    try:
        with provider, pytest.raises(ProviderError) as caught:
            list(provider.iter_pages("events", window_start=1767225600, window_end=1767225600 + 86400))
    finally:
        thread.join(timeout=5)
        listener.close()
    assert (caught.value.error_class, caught.value.retryable) == ("network", True)
    assert "broke off" in str(caught.value) and "the-secret-value" not in str(caught.value)
