"""StripeProvider through its TransportPolicy, against the emulator's fault switches over loopback HTTP.

Waits here are real (wall time is measured) where the brief is about honouring Retry-After; elsewhere
the policy gets a tiny `base_delay` so retries cost milliseconds.
"""

from __future__ import annotations

import email.utils
import itertools
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from esm_dagster.catalog.models import ExternalSystemMapping
from esm_dagster.providers.base import ProviderError
from esm_dagster.providers.factory import build_provider
from esm_dagster.providers.http import retry_after_seconds as _retry_after
from esm_dagster.providers.stripe import StripeProvider
from esm_dagster.sandbox.stripe import StripeEmulator
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy

KEY = "sk_test_51TransportTestKey00000000000000004321"


@pytest.fixture(scope="module")
def emulator() -> Iterator[StripeEmulator]:
    with StripeEmulator(api_keys=[KEY], customers=120, charges=50, seed=13) as em:
        yield em


@pytest.fixture(autouse=True)
def _no_leftover_faults(emulator: StripeEmulator) -> Iterator[None]:
    emulator.faults.clear()
    yield
    emulator.faults.clear()


def _fast(retry_attempts: int, timeout_seconds: float = 5.0) -> TransportPolicy:
    return TransportPolicy(retry_attempts, timeout_seconds, base_delay=0.01, max_delay=2.0)


def _provider(emulator: StripeEmulator, policy: TransportPolicy) -> StripeProvider:
    return StripeProvider(emulator.url, Secret(KEY), policy=policy)


def test_429_with_retry_after_waits_then_succeeds(emulator: StripeEmulator) -> None:
    emulator.faults.rate_limit_next(1, retry_after=1)
    with _provider(emulator, _fast(3)) as provider:  # own backoff <= 0.01 s: the 1 s is Stripe's
        started = time.monotonic()
        page = next(provider.iter_pages("customers", page_size=10))
        elapsed = time.monotonic() - started
        metrics = provider.metrics
    assert len(page.records) == 10
    assert elapsed >= 1.0
    assert (metrics.api_calls, metrics.retries, metrics.rate_limit_waits) == (2, 1, 1)
    assert metrics.rate_limit_wait_seconds >= 1.0
    assert metrics.errors_by_class == {"rate_limit": 1}


def test_retry_after_of_two_seconds_is_the_gap_the_emulator_sees(emulator: StripeEmulator) -> None:
    """Measured where it matters, at the provider: the retry arrives >= 2 s after the 429."""
    emulator.faults.rate_limit_next(2, retry_after=2)
    before = len(emulator.request_times)
    with _provider(emulator, _fast(3)) as provider:  # own backoff <= 0.01 s: the 2 s are Stripe's
        page = next(provider.iter_pages("customers", page_size=10))
    assert len(page.records) == 10
    arrivals = emulator.request_times[before:]
    assert len(arrivals) == 3, arrivals
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert all(gap >= 2.0 for gap in gaps), gaps


@pytest.mark.parametrize(("retry_attempts", "succeeds"), [(3, True), (2, False)])
def test_three_500s_then_success(emulator: StripeEmulator, retry_attempts: int, succeeds: bool) -> None:
    emulator.faults.fail_next(3, status=500)
    with _provider(emulator, _fast(retry_attempts)) as provider:
        if succeeds:
            assert len(next(provider.iter_pages("charges", page_size=5)).records) == 5
        else:
            with pytest.raises(ProviderError) as caught:
                next(provider.iter_pages("charges", page_size=5))
            assert (caught.value.error_class, caught.value.status) == ("server", 500)
            assert caught.value.retryable  # retryable, just out of attempts
        metrics = provider.metrics
    assert metrics.retries == retry_attempts
    assert metrics.api_calls == retry_attempts + 1
    assert metrics.errors_by_class == {"server": 3 if succeeds else retry_attempts + 1}
    assert metrics.rate_limit_waits == 0


def test_stripe_should_retry_false_stops_retries(emulator: StripeEmulator) -> None:
    emulator.faults.fail_next(1, status=503, should_retry=False)
    with _provider(emulator, _fast(3)) as provider, pytest.raises(ProviderError) as caught:
        provider.probe()
    assert (caught.value.status, caught.value.retryable) == (503, False)
    assert provider.metrics.api_calls == 1 and provider.metrics.retries == 0


def test_stripe_should_retry_true_retries_a_400(emulator: StripeEmulator) -> None:
    emulator.faults.fail_next(1, status=400, should_retry=True)
    with _provider(emulator, _fast(3)) as provider:
        provider.probe()
        assert provider.metrics.retries == 1 and provider.metrics.errors_by_class == {"validation": 1}


def test_slow_answer_beyond_timeout_is_a_timeout_error(emulator: StripeEmulator) -> None:
    emulator.faults.delay_next(2, seconds=0.6)
    with _provider(emulator, _fast(1, timeout_seconds=0.2)) as provider:
        started = time.monotonic()
        with pytest.raises(ProviderError) as caught:
            provider.probe()
        elapsed = time.monotonic() - started
    assert (caught.value.error_class, caught.value.retryable, caught.value.status) == ("timeout", True, None)
    assert provider.metrics.errors_by_class == {"timeout": 2}
    assert elapsed < 1.2  # two 0.2 s timeouts, not two 0.6 s answers


def test_one_slow_answer_is_retried(emulator: StripeEmulator) -> None:
    emulator.faults.delay_next(1, seconds=0.6)
    with _provider(emulator, _fast(2, timeout_seconds=0.2)) as provider:
        assert provider.probe() > 0
        assert provider.metrics.errors_by_class == {"timeout": 1} and provider.metrics.retries == 1


def test_dropped_connection_is_retried(emulator: StripeEmulator) -> None:
    emulator.faults.disconnect_next(1)
    with _provider(emulator, _fast(1)) as provider:
        provider.probe()
        assert provider.metrics.errors_by_class == {"network": 1}


def test_latency_percentiles_are_populated(emulator: StripeEmulator) -> None:
    with _provider(emulator, _fast(0)) as provider:
        pages = list(provider.iter_pages("customers", page_size=10))
        metrics = provider.metrics.as_dict()
    assert len(pages) == 12 and metrics["api_calls"] == 12
    p50, p95 = metrics["latency_p50_ms"], metrics["latency_p95_ms"]
    assert p50 is not None and p95 is not None and 0 < p50 <= p95
    assert metrics["retries"] == 0 and metrics["errors_by_class"] == {}


def test_a_very_long_retry_after_is_raised_not_slept(emulator: StripeEmulator) -> None:
    emulator.faults.rate_limit_next(1, retry_after=600)
    with _provider(emulator, _fast(3)) as provider:
        started = time.monotonic()
        with pytest.raises(ProviderError) as caught:
            provider.probe()
    assert caught.value.retry_after == 600.0 and time.monotonic() - started < 1.0


# ---- Retry-After forms (HTTP-date needs a server the emulator cannot play) --------------------------


def test_retry_after_parsing() -> None:
    assert _retry_after("2") == 2.0 and _retry_after(" 1.5 ") == 1.5 and _retry_after("-3") == 0.0
    assert _retry_after(None) is None and _retry_after("soon") is None
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8.0 < (_retry_after(in_ten) or 0) <= 10.0
    assert _retry_after(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0


def test_retry_after_http_date_is_honoured() -> None:
    answers: list[Callable[[], httpx.Response]] = [
        lambda: httpx.Response(
            429,
            headers={"Retry-After": email.utils.formatdate(time.time() + 3, usegmt=True)},
            json={"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "slow down"}},
        ),
        lambda: httpx.Response(200, json={"object": "list", "data": [], "has_more": False, "url": "/v1/x"}),
    ]
    client = httpx.Client(transport=httpx.MockTransport(lambda request: answers.pop(0)()))
    waits: list[float] = []
    policy = TransportPolicy(2, 5.0, base_delay=0.01, sleep=waits.append)
    with StripeProvider("https://api.stripe.com", Secret(KEY), client=client, policy=policy) as provider:
        provider.probe()
    assert len(waits) == 1 and 1.5 < waits[0] <= 3.0  # HTTP dates have whole-second precision
    assert policy.metrics.rate_limit_waits == 1


# ---- construction ---------------------------------------------------------------------------------


def test_policy_defaults_and_exclusive_arguments(emulator: StripeEmulator) -> None:
    with StripeProvider(emulator.url, Secret(KEY)) as default:
        assert (default.policy.retry_attempts, default.policy.timeout_seconds) == (3, 30.0)
        assert default.metrics is default.policy.metrics
    with StripeProvider(emulator.url, Secret(KEY), timeout_seconds=7, retry_attempts=1) as custom:
        assert (custom.policy.retry_attempts, custom.timeout_seconds) == (1, 7.0)
    policy = _fast(5, timeout_seconds=4)
    with StripeProvider(emulator.url, Secret(KEY), policy=policy) as given:
        assert given.policy is policy and given.timeout_seconds == 4.0
    with pytest.raises(ValueError, match="not both"):
        StripeProvider(emulator.url, Secret(KEY), retry_attempts=1, policy=policy)


def test_factory_passes_timeout_and_retry_attempts(emulator: StripeEmulator) -> None:
    row = ExternalSystemMapping(
        system_name="Stripe test",
        provider_name="stripe",
        api_endpoint=emulator.url,
        api_version=None,
        timeout_seconds=12,
        retry_attempts=5,
    )
    provider = build_provider(row, {"api_key": Secret(KEY)})
    assert isinstance(provider, StripeProvider)
    with provider:
        assert (provider.policy.retry_attempts, provider.policy.timeout_seconds) == (5, 12.0)
        assert provider.probe() > 0
