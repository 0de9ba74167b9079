"""The token endpoint client's failures, provoked over loopback: each is classified, and none carries
the client secret, the refresh token or the private key in its text."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from esm_dagster.auth import JwtBearerGrant, MemoryTokenStore, RefreshTokenGrant, TokenEndpoint
from esm_dagster.providers.base import ProviderError
from esm_dagster.sandbox.paypal import PayPalEmulator
from esm_dagster.security.secret import Secret
from esm_dagster_tests.oauth_fixtures import PP_CLIENT_ID, PP_CLIENT_SECRET

REFRESH = "rt_refresh-token-that-must-not-leak-4f3e2d"


@pytest.fixture
def paypal() -> Iterator[PayPalEmulator]:
    with PayPalEmulator(clients={PP_CLIENT_ID: PP_CLIENT_SECRET}, transactions=1) as emu:
        yield emu


@pytest.fixture
def html_server() -> Iterator[str]:
    """A token endpoint behind a proxy that answers 200 with an HTML page (a captive portal, say)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b"<html>please log in</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/services/oauth2/token"
    server.shutdown()
    server.server_close()


def paypal_endpoint(
    emu: PayPalEmulator, secret: str = PP_CLIENT_SECRET, timeout: float = 5.0
) -> TokenEndpoint:
    return TokenEndpoint(
        emu.url + "/v1/oauth2/token",
        provider="paypal",
        timeout_seconds=timeout,
        basic=(Secret(PP_CLIENT_ID), Secret(secret)),
    )


def assert_clean(error: ProviderError, *secrets: str) -> None:
    for text in (str(error), repr(error), str(error.__cause__), str(error.__context__)):
        for secret in secrets:
            assert secret not in text


def test_timeout_is_retryable_and_clean(paypal: PayPalEmulator) -> None:
    paypal.faults.delay_next(1, seconds=1.0, path="/v1/oauth2/token")
    with pytest.raises(ProviderError) as info:
        paypal_endpoint(paypal, timeout=0.3).request({"grant_type": "client_credentials"})
    assert (info.value.error_class, info.value.retryable) == ("timeout", True)
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert_clean(info.value, PP_CLIENT_SECRET)


def test_dropped_connection_is_network_and_retryable(paypal: PayPalEmulator) -> None:
    paypal.faults.disconnect_next(1, path="/v1/oauth2/token")
    with pytest.raises(ProviderError) as info:
        paypal_endpoint(paypal).request(
            {"grant_type": "client_credentials", "refresh_token": Secret(REFRESH)}
        )
    assert (info.value.error_class, info.value.retryable) == ("network", True)
    assert_clean(info.value, PP_CLIENT_SECRET, REFRESH)


def test_429_and_5xx_are_retryable(paypal: PayPalEmulator) -> None:
    paypal.faults.rate_limit_next(1, retry_after=2, path="/v1/oauth2/token")
    with pytest.raises(ProviderError) as limited:
        paypal_endpoint(paypal).request({"grant_type": "client_credentials"})
    assert (limited.value.error_class, limited.value.retryable, limited.value.retry_after) == (
        "rate_limit",
        True,
        2,
    )
    paypal.faults.fail_next(1, 500, path="/v1/oauth2/token")
    with pytest.raises(ProviderError) as failed:
        paypal_endpoint(paypal).request({"grant_type": "client_credentials"})
    assert (failed.value.error_class, failed.value.retryable) == ("server", True)


def test_wrong_secret_is_invalid_client_not_retryable(paypal: PayPalEmulator) -> None:
    wrong = "EPwrong-client-secret-1q2w3e"
    with pytest.raises(ProviderError) as info:
        paypal_endpoint(paypal, secret=wrong).request({"grant_type": "client_credentials"})
    assert (info.value.error_class, info.value.code, info.value.retryable) == (
        "auth",
        "invalid_client",
        False,
    )
    assert_clean(info.value, wrong)


def test_a_body_that_is_not_a_token_is_a_retryable_server_error(html_server: str) -> None:
    endpoint = TokenEndpoint(html_server, provider="salesforce")
    grant = RefreshTokenGrant("ck", Secret("client-secret-9z8y7x"))
    store = MemoryTokenStore({"refresh_token": REFRESH})
    with pytest.raises(ProviderError) as info:
        store.renew(lambda creds: grant.fetch(endpoint, creds), stale=None)
    assert (info.value.error_class, info.value.retryable, info.value.status) == ("server", True, 200)
    assert_clean(info.value, REFRESH, "client-secret-9z8y7x")
    assert store.refreshes == 0 and store.load() is None  # nothing half-written


def test_unusable_private_key_names_the_field_not_the_key() -> None:
    key = "-----BEGIN PRIVATE KEY-----\nMIIEnotreallyakeyatall0123456789\n-----END PRIVATE KEY-----\n"
    grant = JwtBearerGrant(
        issuer="ck", subject="u", audience="https://login.salesforce.com", private_key=Secret(key)
    )
    with pytest.raises(ProviderError) as info:
        grant.assertion()
    assert info.value.code == "invalid_private_key" and "credentials.private_key" in str(info.value)
    assert_clean(info.value, "MIIEnotreallyakeyatall")
    assert "MIIE" not in repr(grant)
