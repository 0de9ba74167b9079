"""TransportPolicy and TransportMetrics with an injected sleep: the waits are recorded, not slept."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest

from esm_dagster.providers.base import ErrorClass, ProviderError
from esm_dagster.transport import TransportMetrics, TransportPolicy
from esm_dagster.transport.metrics import nearest_rank


class FakeSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _error(
    error_class: ErrorClass = "server", *, retryable: bool = True, retry_after: float | None = None
) -> ProviderError:
    return ProviderError(
        "boom", provider="test", error_class=error_class, retryable=retryable, retry_after=retry_after
    )


def _failing(errors: list[ProviderError], result: str = "ok") -> Callable[[], str]:
    """A call that raises `errors` in turn, then returns `result`; counts its calls in `.calls`."""
    pending = list(errors)

    def fn() -> str:
        fn.calls += 1  # type: ignore[attr-defined]
        if pending:
            raise pending.pop(0)
        return result

    fn.calls = 0  # type: ignore[attr-defined]
    return fn


def _policy(
    retry_attempts: int = 3, *, seed: int = 1, base_delay: float = 0.5, max_delay: float = 60.0
) -> tuple[TransportPolicy, FakeSleep]:
    sleep = FakeSleep()
    policy = TransportPolicy(
        retry_attempts, 5.0, base_delay=base_delay, max_delay=max_delay, sleep=sleep, rng=random.Random(seed)
    )
    return policy, sleep


def test_success_first_time_records_one_call_and_no_wait() -> None:
    policy, sleep = _policy()
    assert policy.call(lambda: 42, what="GET /x") == 42
    m = policy.metrics
    assert (m.api_calls, m.retries, m.rate_limit_waits, sleep.waits) == (1, 0, 0, [])
    assert m.p50_ms() is not None and m.p95_ms() is not None


def test_retry_after_is_honoured_when_the_backoff_is_shorter() -> None:
    policy, sleep = _policy(base_delay=0.01)  # backoff at most 0.01 s, the provider asks for 2 s
    fn = _failing([_error("rate_limit", retry_after=2.0)])
    assert policy.call(fn, what="GET /x") == "ok"
    assert sleep.waits == [2.0]
    m = policy.metrics
    assert (m.api_calls, m.retries, m.rate_limit_waits, m.rate_limit_wait_seconds) == (2, 1, 1, 2.0)
    assert m.errors_by_class == {"rate_limit": 1}


def test_retry_after_on_a_server_error_also_counts_as_a_rate_limit_wait() -> None:
    policy, sleep = _policy(base_delay=0.01)
    assert policy.call(_failing([_error("server", retry_after=1.5)]), what="x") == "ok"
    assert sleep.waits == [1.5] and policy.metrics.rate_limit_waits == 1


def test_a_longer_backoff_wins_over_a_short_retry_after() -> None:
    policy, sleep = _policy(base_delay=100.0, max_delay=100.0, seed=3)  # uniform(0, 100) draw
    policy.call(_failing([_error("rate_limit", retry_after=0.001)]), what="x")
    assert sleep.waits[0] > 0.001 and sleep.waits[0] == pytest.approx(random.Random(3).uniform(0, 100))


def test_plain_rate_limit_without_retry_after_is_a_rate_limit_wait() -> None:
    policy, sleep = _policy()
    policy.call(_failing([_error("rate_limit")]), what="x")
    assert len(sleep.waits) == 1 and policy.metrics.rate_limit_waits == 1
    assert policy.metrics.rate_limit_wait_seconds == pytest.approx(sleep.waits[0])


def test_full_jitter_bounds() -> None:
    policy, sleep = _policy(retry_attempts=8, base_delay=0.5, max_delay=10.0, seed=7)
    policy.call(_failing([_error("server")] * 8), what="x")
    caps = [min(10.0, 0.5 * 2**attempt) for attempt in range(8)]
    assert len(sleep.waits) == 8
    assert all(0.0 <= wait <= cap for wait, cap in zip(sleep.waits, caps, strict=True))
    assert caps[-3:] == [10.0, 10.0, 10.0]  # capped by max_delay
    assert policy.metrics.rate_limit_waits == 0 and policy.metrics.retries == 8
    # over many draws the waits spread across the whole [0, cap] range: full jitter, not equal jitter
    draws = [policy.backoff(3) for _ in range(2000)]
    assert 0.0 <= min(draws) < 0.2 and 3.8 < max(draws) <= 4.0


def test_non_retryable_errors_are_raised_at_once() -> None:
    policy, sleep = _policy()
    error = _error("auth", retryable=False)
    fn = _failing([error])
    with pytest.raises(ProviderError) as caught:
        policy.call(fn, what="x")
    assert caught.value is error and fn.calls == 1 and sleep.waits == []  # type: ignore[attr-defined]
    assert policy.metrics.errors_by_class == {"auth": 1} and policy.metrics.retries == 0


def test_exhaustion_raises_the_last_error() -> None:
    policy, sleep = _policy(retry_attempts=2)
    errors = [_error("server"), _error("timeout"), _error("network")]
    fn = _failing([*errors])
    with pytest.raises(ProviderError) as caught:
        policy.call(fn, what="x")
    assert caught.value is errors[-1]
    assert fn.calls == 3 and len(sleep.waits) == 2  # type: ignore[attr-defined]
    m = policy.metrics
    assert (m.api_calls, m.retries) == (3, 2)
    assert m.errors_by_class == {"server": 1, "timeout": 1, "network": 1}


def test_zero_retry_attempts_means_one_try() -> None:
    policy, sleep = _policy(retry_attempts=0)
    with pytest.raises(ProviderError):
        policy.call(_failing([_error("server")]), what="x")
    assert sleep.waits == [] and policy.metrics.api_calls == 1


def test_retry_after_beyond_max_delay_is_raised_instead_of_slept() -> None:
    policy, sleep = _policy(max_delay=60.0)
    error = _error("rate_limit", retry_after=3600.0)
    with pytest.raises(ProviderError) as caught:
        policy.call(_failing([error]), what="x")
    assert caught.value is error and caught.value.retryable and sleep.waits == []


def test_other_exceptions_pass_through_untouched() -> None:
    policy, sleep = _policy()

    def broken() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        policy.call(broken, what="x")
    assert sleep.waits == [] and policy.metrics.api_calls == 1 and not policy.metrics.errors_by_class


@pytest.mark.parametrize(
    "kwargs",
    [
        {"retry_attempts": -1, "timeout_seconds": 1},
        {"retry_attempts": 1, "timeout_seconds": 0},
        {"retry_attempts": 1, "timeout_seconds": 1, "base_delay": -1},
    ],
)
def test_invalid_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TransportPolicy(**kwargs)  # type: ignore[arg-type]


# ---- metrics --------------------------------------------------------------------------------------


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert nearest_rank(values, 50) == 10.0 and nearest_rank(values, 95) == 19.0
    assert nearest_rank(values, 100) == 20.0 and nearest_rank([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        nearest_rank([], 50)
    metrics = TransportMetrics()
    assert metrics.p50_ms() is None and metrics.as_dict()["latency_p95_ms"] is None
    for seconds in (0.004, 0.001, 0.003, 0.002, 0.100):
        metrics.record_call(seconds)
    assert metrics.p50_ms() == 3.0 and metrics.p95_ms() == 100.0


def test_as_dict_shape() -> None:
    metrics = TransportMetrics()
    metrics.record_call(0.01, "rate_limit")
    metrics.record_wait(1.25, rate_limited=True)
    metrics.record_call(0.02)
    assert metrics.as_dict() == {
        "api_calls": 2,
        "retries": 1,
        "rate_limit_waits": 1,
        "rate_limit_wait_seconds": 1.25,
        "latency_p50_ms": 10.0,
        "latency_p95_ms": 20.0,
        "errors_by_class": {"rate_limit": 1},
    }


def test_metrics_are_thread_safe() -> None:
    policy, _ = _policy(retry_attempts=1)
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        for _ in range(500):
            policy.call(_failing([_error("server")]), what="x")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    m = policy.metrics
    assert (m.api_calls, m.retries, m.errors_by_class["server"]) == (8000, 4000, 4000)
    assert len(m.latencies) == 8000
