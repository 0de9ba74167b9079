"""`provider_client`: the endpoint policy on every request, the checked address pinned, TLS verified.

Everything talks to real servers on 127.0.0.1. Names like `api.pinned.test` exist only in the
test's resolver (the policy's resolver hook is its DNS): if anything but our pinned connection
resolved them, the request could not connect at all.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from esm_dagster.demo.run import DEMO_STRIPE_KEY
from esm_dagster.providers.base import Page, ProviderError
from esm_dagster.providers.http import JsonHttpProvider
from esm_dagster.providers.stripe import StripeProvider
from esm_dagster.security.endpoints import EndpointPolicy
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy
from esm_dagster.transport.client import provider_client
from esm_dagster_tests.stripe_fixtures import stripe_emulator
from esm_dagster_tests.tls_certificates import make_certificates

KEY = "sk_test_pinnedclient0123456789"


class Recorder:
    """A loopback HTTP(S) server that records Host headers and answers by path."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.hosts: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                recorder.hosts.append(self.headers.get("Host", ""))
                if self.path.startswith("/redirect"):
                    target = self.path.split("to=", 1)[1]
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b'{"ok": true, "data": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


class Dns:
    """The test's DNS: answers from a table, counts the questions."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"no such host {host}")
        return self.table[host]


def _policy(endpoints: EndpointPolicy) -> TransportPolicy:
    return TransportPolicy(retry_attempts=0, timeout_seconds=5, endpoints=endpoints)


@pytest.fixture
def tls_recorder(tmp_path: Path) -> Iterator[tuple[Recorder, Path]]:
    ca_file, server_context = make_certificates(tmp_path)
    server = Recorder(server_context)
    yield server, ca_file
    server.close()


def test_connects_to_the_checked_address_keeping_the_name_for_host_and_tls(
    tls_recorder: tuple[Recorder, Path],
) -> None:
    recorder, ca_file = tls_recorder
    dns = Dns({"api.pinned.test": ["127.0.0.1"]})
    endpoints = EndpointPolicy.from_env({"ESM_ALLOW_LOOPBACK": "1"}, resolver=dns, ca_bundle=str(ca_file))
    with provider_client("echo", _policy(endpoints)) as client:
        response = client.get(f"https://api.pinned.test:{recorder.port}/v1/things")
        client.get(f"https://api.pinned.test:{recorder.port}/v1/things")  # the kept-alive connection
    assert response.status_code == 200  # the certificate verified against the name, not the address
    assert recorder.hosts == [f"api.pinned.test:{recorder.port}"] * 2
    assert dns.asked == ["api.pinned.test"]  # one lookup, for the one connection it checked


def test_rebinding_cannot_switch_a_checked_name_to_a_refused_address(
    tls_recorder: tuple[Recorder, Path],
) -> None:
    recorder, ca_file = tls_recorder
    answers = iter([["127.0.0.1"], ["10.0.0.1"]])  # a rebinding DNS server: safe first, then internal

    def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    endpoints = EndpointPolicy.from_env(
        {"ESM_ALLOW_LOOPBACK": "1"}, resolver=rebinding, ca_bundle=str(ca_file)
    )
    url = f"https://api.rebind.test:{recorder.port}/"
    with provider_client("echo", _policy(endpoints)) as client:
        assert client.get(url).status_code == 200
    with provider_client("echo", _policy(endpoints)) as client, pytest.raises(ProviderError) as info:
        client.get(url)  # a new connection asks again, and the new answer is checked
    assert info.value.code == "endpoint_refused" and "10.0.0.1" in str(info.value)
    assert len(recorder.hosts) == 1


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://127.0.0.1:{port}/", "ESM_ALLOW_LOOPBACK"),
        ("https://10.0.0.1/", "private address"),
        ("https://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[::1]:{port}/", "ESM_ALLOW_LOOPBACK"),
        ("https://internal.corp.test/", "internal.corp.test (10.20.30.40) refused: private address"),
    ],
)
def test_refused_destinations_are_client_errors_that_never_connect(
    recorder: Recorder, url: str, needle: str
) -> None:
    dns = Dns({"internal.corp.test": ["10.20.30.40"]})
    endpoints = EndpointPolicy.from_env({}, mapping="'CRM'", resolver=dns)
    client = provider_client("echo", _policy(endpoints), secrets=[Secret(KEY)])
    with client, pytest.raises(ProviderError) as info:
        client.get(url.format(port=recorder.port), headers={"Authorization": f"Bearer {KEY}"})
    error = info.value
    assert (error.error_class, error.code, error.retryable) == ("client", "endpoint_refused", False)
    assert needle in str(error) and "'CRM'" in str(error)
    assert error.__context__ is None and error.__cause__ is None
    assert KEY not in str(error) and KEY not in repr(error)
    assert recorder.hosts == []


class Echo(JsonHttpProvider):
    """The smallest JsonHttpProvider: enough to drive the base class's own request path."""

    name = "echo"
    label = "Echo"

    def iter_pages(
        self,
        stream: str,
        *,
        window_start: int | None = None,
        window_end: int | None = None,
        page_size: int = 100,
        cursor: str | None = None,
    ) -> Iterator[Page]:
        result = self.request("GET", "/v1/things")
        yield Page(
            records=result.body["data"], has_more=False, next_cursor=None, request_seconds=result.seconds
        )

    def probe(self) -> float:
        return self.request("GET", "/v1/things").seconds


def test_a_redirect_to_a_refused_address_is_neither_followed_nor_reachable(recorder: Recorder) -> None:
    endpoints = EndpointPolicy.from_env({"ESM_ALLOW_LOOPBACK": "1"}, mapping="'Echo'")
    provider = Echo(f"http://127.0.0.1:{recorder.port}", auth=None, policy=_policy(endpoints))
    try:
        with pytest.raises(ProviderError) as info:
            provider.request("GET", "/redirect?to=http://10.0.0.1/admin")
        assert info.value.status == 302  # not followed: the answer itself is the error
        # Even a caller that asks httpx to follow meets the policy at the next hop.
        with pytest.raises(ProviderError) as followed:
            provider._client.get(
                f"http://127.0.0.1:{recorder.port}/redirect?to=https://10.0.0.1/admin", follow_redirects=True
            )
        assert followed.value.code == "endpoint_refused" and "10.0.0.1" in str(followed.value)
        # An absolute next-page URL is checked before it is requested.
        with pytest.raises(ProviderError) as next_page:
            Echo("https://api.echo.test", auth=None, policy=_policy(endpoints)).url_for(
                "https://user:pw@api.echo.test/page2"
            )
        assert next_page.value.code in ("foreign_url", "endpoint_refused")
        assert provider.request("GET", "/v1/things").body == {"ok": True, "data": []}
    finally:
        provider.close()
    assert len(recorder.hosts) == 3


def test_a_next_page_url_on_the_own_origin_is_checked_by_the_policy() -> None:
    endpoints = EndpointPolicy.from_env({}, mapping="'Echo'")  # no sandbox mode
    provider = Echo("https://api.echo.test", auth=None, policy=_policy(endpoints))
    assert (
        provider.url_for("https://api.echo.test/v1/page2?cursor=x")
        == "https://api.echo.test/v1/page2?cursor=x"
    )
    provider.close()
    loopback = Echo("http://127.0.0.1:9", auth=None, policy=_policy(endpoints))
    with pytest.raises(ProviderError) as info:
        loopback.url_for("http://127.0.0.1:9/v1/page2")
    assert info.value.code == "endpoint_refused" and "ESM_ALLOW_LOOPBACK" in str(info.value)
    loopback.close()


# ---- TLS ------------------------------------------------------------------------------------------
def _stripe(url: str, endpoints: EndpointPolicy) -> StripeProvider:
    return StripeProvider(
        base_url=url,
        api_key=Secret(DEMO_STRIPE_KEY),
        policy=TransportPolicy(retry_attempts=2, timeout_seconds=5, endpoints=endpoints),
    )


def test_tls_emulator_syncs_with_its_ca_and_fails_closed_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_file, server_context = make_certificates(tmp_path)
    with stripe_emulator(customers=7, charges=0) as emulator:
        emulator.serve_tls(server_context)
        url = emulator.url.replace("127.0.0.1", "localhost")  # the certificate's name, SNI and Host
        assert url.startswith("https://localhost:")

        trusted = _stripe(url, EndpointPolicy.from_env({"ESM_ALLOW_LOOPBACK": "1"}, ca_bundle=str(ca_file)))
        pages = list(trusted.iter_pages("customers", page_size=3))
        trusted.close()
        assert sum(len(p.records) for p in pages) == 7

        monkeypatch.setenv("ESM_CA_BUNDLE", str(ca_file))  # the installation-wide setting works alike
        from_env = _stripe(url, EndpointPolicy.from_env())
        assert len(next(from_env.iter_pages("customers", page_size=2)).records) == 2
        from_env.close()
        monkeypatch.delenv("ESM_CA_BUNDLE")

        served = emulator.request_count
        untrusted = _stripe(url, EndpointPolicy.from_env({"ESM_ALLOW_LOOPBACK": "1"}))
        with pytest.raises(ProviderError) as info:
            next(untrusted.iter_pages("customers"))
        untrusted.close()
        assert emulator.request_count == served  # nothing was sent: the handshake failed first
    error = info.value
    assert (error.error_class, error.code, error.retryable) == ("client", "tls_untrusted", False)
    assert "not trusted" in str(error) and "ESM_CA_BUNDLE" in str(error)
    assert DEMO_STRIPE_KEY not in str(error) and DEMO_STRIPE_KEY not in repr(error)
    assert error.__context__ is None


def test_a_missing_ca_bundle_is_named(tmp_path: Path) -> None:
    endpoints = EndpointPolicy.from_env({}, mapping="'Stripe'", ca_bundle=str(tmp_path / "nope.pem"))
    with pytest.raises(ValueError, match=r"mapping 'Stripe': CA bundle .*nope\.pem.* cannot be loaded"):
        provider_client("stripe", _policy(endpoints))


def test_no_environment_proxy_bypasses_the_guard(monkeypatch: pytest.MonkeyPatch, recorder: Recorder) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{recorder.port}")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{recorder.port}")
    endpoints = EndpointPolicy.from_env({}, resolver=Dns({}))
    with provider_client("echo", _policy(endpoints)) as client, pytest.raises(ProviderError) as info:
        client.get("https://10.0.0.1/")
    assert info.value.code == "endpoint_refused"
    assert recorder.hosts == []
    assert isinstance(client, httpx.Client)
