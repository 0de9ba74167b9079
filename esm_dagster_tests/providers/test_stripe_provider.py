"""StripeProvider against the Stripe emulator over real HTTP on loopback.

Misbehaving servers that the emulator cannot imitate (a cursor that repeats, a list that is not a
list) are played by httpx.MockTransport: it stands in for the network, not for our code.
"""

from __future__ import annotations

import itertools
import pickle
import socket
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from esm_dagster.providers import UnknownProviderError, available_providers, get_provider_class
from esm_dagster.providers.base import Page, Provider, ProviderError, StreamSpec, safe_url, scrub
from esm_dagster.providers.stripe import StripeProvider
from esm_dagster.sandbox.stripe import DEFAULT_END, DEFAULT_START, StripeEmulator
from esm_dagster.security.secret import Secret

KEY = "sk_test_51ProviderTestKey000000000000000005678"
WRONG_KEY = "sk_test_51SomebodyElsesKey00000000000000009999"


@pytest.fixture(scope="module")
def emulator() -> Iterator[StripeEmulator]:
    with StripeEmulator(api_keys=[KEY], customers=150, charges=700, seed=9) as em:
        yield em


@pytest.fixture
def provider(emulator: StripeEmulator) -> Iterator[StripeProvider]:
    emulator.faults.clear()
    # no retries: these tests look at how one answer is classified (retries: test_stripe_transport.py)
    with StripeProvider(emulator.url, Secret(KEY), timeout_seconds=5, retry_attempts=0) as p:
        yield p


def _ids(pages: Iterator[Page]) -> list[str]:
    return [record["id"] for page in pages for record in page.records]


def _assert_no_key(error: BaseException, *keys: str) -> None:
    texts = [
        str(error),
        repr(error),
        repr(error.args),
        "".join(traceback.format_exception(error)),
        repr(pickle.dumps(error)),
        repr(vars(error)),
    ]
    for key in keys or (KEY,):
        for text in texts:
            assert key not in text
    assert error.__cause__ is None and error.__context__ is None


# ---- reading ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["customers", "charges"])
def test_reads_every_record_once(emulator: StripeEmulator, provider: StripeProvider, stream: str) -> None:
    pages = list(provider.iter_pages(stream, page_size=100))
    ids = [r["id"] for page in pages for r in page.records]
    assert ids == emulator.object_ids(stream)
    assert all(p.has_more for p in pages[:-1]) and not pages[-1].has_more
    assert [p.next_cursor for p in pages[:-1]] == [p.records[-1]["id"] for p in pages[:-1]]
    assert pages[-1].next_cursor is None
    assert all(p.request_seconds > 0 for p in pages)


def test_page_size_is_honoured_and_capped(emulator: StripeEmulator, provider: StripeProvider) -> None:
    pages = list(provider.iter_pages("customers", page_size=7))
    assert [len(p.records) for p in pages[:-1]] == [7] * (len(pages) - 1)
    emulator.reset_request_log()
    big = next(provider.iter_pages("charges", page_size=1000))
    assert len(big.records) == 100 and "limit=100" in emulator.requests[0].query
    with pytest.raises(ValueError):
        next(provider.iter_pages("charges", page_size=0))


def test_windows_filter_on_created(emulator: StripeEmulator, provider: StripeProvider) -> None:
    everything = [r for page in provider.iter_pages("charges") for r in page.records]
    cuts = [DEFAULT_START, DEFAULT_START + 30 * 86_400, DEFAULT_START + 61 * 86_400, DEFAULT_END]
    seen: list[str] = []
    for lo, hi in itertools.pairwise(cuts):
        window = [
            r for page in provider.iter_pages("charges", window_start=lo, window_end=hi) for r in page.records
        ]
        assert window and all(lo <= r["created"] < hi for r in window)
        assert [r["id"] for r in window] == [r["id"] for r in everything if lo <= r["created"] < hi]
        seen.extend(r["id"] for r in window)
    assert sorted(seen) == sorted(r["id"] for r in everything)
    customers = [r for page in provider.iter_pages("customers") for r in page.records]
    only_start = _ids(provider.iter_pages("customers", window_start=cuts[2]))
    assert only_start == [r["id"] for r in customers if r["created"] >= cuts[2]]
    only_end = _ids(provider.iter_pages("customers", window_end=cuts[1]))
    assert only_end == [r["id"] for r in customers if r["created"] < cuts[1]]


def test_resume_from_a_cursor(emulator: StripeEmulator, provider: StripeProvider) -> None:
    pages = provider.iter_pages("charges", page_size=50)
    first_two = [next(pages), next(pages)]
    cursor = first_two[-1].next_cursor
    rest = _ids(provider.iter_pages("charges", page_size=50, cursor=cursor))
    assert [r["id"] for p in first_two for r in p.records] + rest == emulator.object_ids("charges")


def test_probe_and_version_header(emulator: StripeEmulator) -> None:
    with StripeProvider(emulator.url + "/v1/", Secret(KEY), api_version="2024-06-20") as pinned:
        assert pinned.probe() > 0
    with (
        StripeProvider(emulator.url, Secret(KEY), api_version="not a version") as bogus,
        pytest.raises(ProviderError) as caught,
    ):
        bogus.probe()  # the emulator rejects the header: proof it is sent
    assert caught.value.error_class == "validation" and "Invalid Stripe API version" in str(caught.value)


def test_streams_and_unknown_stream(provider: StripeProvider) -> None:
    assert [s.name for s in provider.streams()] == ["customers", "charges", "events"]
    assert all(isinstance(s, StreamSpec) and s.supports_created_window for s in provider.streams())
    with pytest.raises(ValueError, match="no stream 'payouts'"):
        provider.iter_pages("payouts")


# ---- errors -----------------------------------------------------------------------------------------


def _first_page_error(provider: StripeProvider) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        next(provider.iter_pages("charges"))
    return caught.value


def test_wrong_key_is_auth_and_never_printed(emulator: StripeEmulator) -> None:
    with StripeProvider(emulator.url, Secret(WRONG_KEY)) as wrong, pytest.raises(ProviderError) as caught:
        wrong.probe()
    error = caught.value
    assert (error.error_class, error.status, error.retryable) == ("auth", 401, False)
    assert error.provider_message is not None and error.provider_message.startswith(
        "Invalid API Key provided"
    )
    assert error.request_id is not None and error.request_id.startswith("req_")
    _assert_no_key(error, WRONG_KEY, WRONG_KEY[:-4])
    assert all(WRONG_KEY not in str(r) for r in emulator.requests)


@pytest.mark.parametrize(
    ("inject", "error_class", "status", "retryable"),
    [
        (lambda em: em.faults.rate_limit_next(1, retry_after=1), "rate_limit", 429, True),
        (lambda em: em.faults.fail_next(1, status=500), "server", 500, True),
        (lambda em: em.faults.fail_next(1, status=503, should_retry=False), "server", 503, False),
        (lambda em: em.faults.fail_next(1, status=409), "client", 409, True),
        (lambda em: em.faults.fail_next(1, status=400), "validation", 400, False),
        (lambda em: em.faults.fail_next(1, status=400, should_retry=True), "validation", 400, True),
        (lambda em: em.faults.fail_next(1, status=404), "client", 404, False),
        (lambda em: em.faults.fail_next(1, status=403), "auth", 403, False),
    ],
)
def test_http_errors_are_classified(
    emulator: StripeEmulator,
    provider: StripeProvider,
    inject: Callable[[StripeEmulator], None],
    error_class: str,
    status: int,
    retryable: bool,
) -> None:
    inject(emulator)
    error = _first_page_error(provider)
    assert (error.error_class, error.status, error.retryable) == (error_class, status, retryable)
    if status == 429:
        assert error.retry_after == 1.0 and error.code == "rate_limit"
    _assert_no_key(error)
    assert len(list(provider.iter_pages("customers", page_size=100))) == 2  # the client is still usable


def test_bad_cursor_is_a_client_error(provider: StripeProvider) -> None:
    with pytest.raises(ProviderError) as caught:
        next(provider.iter_pages("charges", cursor="ch_unknown"))
    assert (caught.value.error_class, caught.value.status, caught.value.code) == (
        "client",
        404,
        "resource_missing",
    )


def test_timeout_is_classified(emulator: StripeEmulator) -> None:
    emulator.faults.delay_next(1, seconds=0.6)
    with StripeProvider(emulator.url, Secret(KEY), timeout_seconds=0.15, retry_attempts=0) as slow:
        error = _first_page_error(slow)
    assert (error.error_class, error.retryable, error.status) == ("timeout", True, None)
    _assert_no_key(error)


def test_dropped_connection_is_network(emulator: StripeEmulator, provider: StripeProvider) -> None:
    emulator.faults.disconnect_next(1)
    error = _first_page_error(provider)
    assert (error.error_class, error.retryable) == ("network", True)
    _assert_no_key(error)


def test_refused_connection_is_network() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        StripeProvider(f"http://127.0.0.1:{port}", Secret(KEY), timeout_seconds=2, retry_attempts=0) as dead,
        pytest.raises(ProviderError) as caught,
    ):
        dead.probe()
    assert (caught.value.error_class, caught.value.retryable) == ("network", True)
    _assert_no_key(caught.value)


def _mock_provider(handler: Callable[[httpx.Request], httpx.Response]) -> StripeProvider:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return StripeProvider("https://api.stripe.com", Secret(KEY), client=client, retry_attempts=0)


def test_repeated_cursor_raises_instead_of_looping() -> None:
    page = {"object": "list", "data": [{"id": "ch_same"}], "has_more": True, "url": "/v1/charges"}
    provider = _mock_provider(lambda request: httpx.Response(200, json=page))
    pages = provider.iter_pages("charges")
    assert next(pages).next_cursor == "ch_same"
    with pytest.raises(ProviderError) as caught:
        next(pages)
    assert caught.value.code == "repeated_cursor" and not caught.value.retryable


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"object": "list", "data": [], "has_more": True, "url": "/v1/charges"}, "empty_page_with_has_more"),
        (
            {"object": "list", "data": [{"name": "no id"}], "has_more": True, "url": "/v1/charges"},
            "missing_id",
        ),
        ({"object": "charge", "id": "ch_1"}, "unexpected_response"),
        ({"object": "list", "data": ["x"], "has_more": False, "url": "/v1/charges"}, "unexpected_response"),
        ([1, 2, 3], "invalid_json"),
    ],
)
def test_malformed_lists_are_server_errors(body: Any, code: str) -> None:
    provider = _mock_provider(lambda request: httpx.Response(200, json=body))
    with pytest.raises(ProviderError) as caught:
        list(provider.iter_pages("charges"))
    assert caught.value.error_class == "server" and caught.value.code == code


def test_requests_carry_bearer_auth_and_only_declared_parameters() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"object": "list", "data": [], "has_more": False, "url": "/v1/charges"}
        )

    provider = _mock_provider(handler)
    list(provider.iter_pages("charges", window_start=10, window_end=20, page_size=30, cursor="ch_x"))
    request = seen[0]
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert "Stripe-Version" not in request.headers
    assert dict(request.url.params) == {
        "limit": "30",
        "created[gte]": "10",
        "created[lt]": "20",
        "starting_after": "ch_x",
    }
    assert KEY not in repr(provider) and KEY not in repr(provider._client)


def test_error_text_is_redacted_by_construction() -> None:
    secret = Secret("sk_live_TopSecretValue1234567890")
    error = ProviderError(
        "call to https://user:pw@api.example.com/v1/x?api_key=sk_live_TopSecretValue1234567890 failed",
        provider="stripe",
        error_class="server",
        provider_message="echoed sk_live_TopSecretValue1234567890 and Bearer abc.def.ghi123",
        url="https://user:pw@api.example.com/v1/x?token=abc#frag",
        secrets=[secret],
    )
    _assert_no_key(error, secret.reveal(), "user:pw", "token=abc", "abc.def.ghi123")
    assert error.url == "https://api.example.com/v1/x"
    restored = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert (
        isinstance(restored, ProviderError) and vars(restored) == vars(error) and str(restored) == str(error)
    )
    with pytest.raises(ValueError):
        ProviderError("x", provider="stripe", error_class="weird")  # type: ignore[arg-type]
    assert safe_url("http://[::1]:8080/a/b?c=d") == "http://[::1]:8080/a/b"
    assert "***" in scrub("key sk_test_abcdefghijkl", [])


# ---- construction and registry ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://api.stripe.com",
        "ftp://api.stripe.com",
        "https://user:pw@api.stripe.com",
        "https://api.stripe.com/?a=1",
    ],
)
def test_refused_base_urls(url: str) -> None:
    with pytest.raises(ValueError):
        StripeProvider(url, Secret(KEY))


def test_key_must_be_a_secret() -> None:
    with pytest.raises(TypeError):
        StripeProvider("https://api.stripe.com", KEY)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        StripeProvider("https://api.stripe.com", Secret(""))


def test_base_url_forms() -> None:
    for url in (
        "https://api.stripe.com",
        "https://api.stripe.com/",
        "https://api.stripe.com/v1",
        "https://api.stripe.com/v1/",
    ):
        provider = StripeProvider(url, Secret(KEY))
        assert provider.base_url == "https://api.stripe.com"
        provider.close()


def test_registry() -> None:
    assert get_provider_class("stripe") is StripeProvider
    assert get_provider_class(" Stripe ") is StripeProvider
    assert issubclass(get_provider_class("stripe"), Provider)
    assert "stripe" in available_providers()
    with pytest.raises(
        UnknownProviderError, match=r"no provider named 'stripe2'; known providers: .*\bstripe\b"
    ):
        get_provider_class("stripe2")
