"""The persisted bucket on SQLite and PostgreSQL: state in `esm_rate_limit`, fake clock, the policy
sleeping the waits it names, retries paying tokens, and the bucket key revealing nothing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine
from esm_dagster.catalog.rate_limits import SharedTokenBucket, credential_bucket_key
from esm_dagster.providers.base import ProviderError
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy
from esm_dagster.transport.bucket import BucketLimits, BucketState

KEY = "sk_test_bucketbucket0123456789abcdef"
ENDPOINT = "http://127.0.0.1:12111"
LIMITS = BucketLimits.from_rules(60, 10)


class FakeClock:
    """Unix seconds that only move when a test (or the policy's sleep) moves them."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def bucket(url: str, clock: FakeClock, key: str = KEY, limits: BucketLimits = LIMITS) -> SharedTokenBucket:
    return SharedTokenBucket(url, credential_bucket_key("stripe", ENDPOINT, Secret(key)), limits, clock=clock)


def test_state_persists_across_instances_and_refills_with_time(db_url: str) -> None:
    clock = FakeClock()
    first = bucket(db_url, clock)
    assert first.state() is None
    assert [first.try_acquire() for _ in range(10)] == [0.0] * 10
    # Another instance (another process, in real life) sees the same, empty, bucket.
    second = bucket(db_url, clock)
    assert second.state() == BucketState(0.0, clock.now)
    assert second.try_acquire() == pytest.approx(1.0)
    clock.now += 0.4
    assert first.try_acquire() == pytest.approx(0.6)
    clock.now += 0.6
    assert second.try_acquire() == 0.0
    clock.now += 3600
    assert [first.try_acquire() for _ in range(11)][-2:] == [0.0, pytest.approx(1.0)]


def test_policy_sleeps_the_waits_outside_the_call_and_counts_them(db_url: str) -> None:
    clock = FakeClock()
    policy = TransportPolicy(0, 5.0, sleep=clock.sleep, limiter=bucket(db_url, clock))
    sent: list[float] = []
    for _ in range(15):
        policy.call(lambda: sent.append(clock.now), what="GET /v1/charges")
    start = sent[0]
    assert [round(t - start, 6) for t in sent] == [0.0] * 10 + [1.0, 2.0, 3.0, 4.0, 5.0]
    assert clock.slept == pytest.approx([1.0] * 5)
    metrics = policy.metrics.as_dict()
    assert metrics["rate_limit_waits"] == 5 and metrics["rate_limit_wait_seconds"] == pytest.approx(5.0)
    assert metrics["retries"] == 0 and metrics["api_calls"] == 15


def test_every_retry_takes_a_token(db_url: str) -> None:
    clock = FakeClock()
    limits = BucketLimits.from_rules(1, 10)  # refills 1/60 token per second: nothing in this test
    limiter = bucket(db_url, clock, limits=limits)
    policy = TransportPolicy(3, 5.0, base_delay=0.0, sleep=clock.sleep, limiter=limiter)
    failures = iter([True, True, False])

    def flaky() -> str:
        if next(failures):
            raise ProviderError("boom", provider="stripe", error_class="server", status=500, retryable=True)
        return "ok"

    assert policy.call(flaky, what="GET /v1/charges") == "ok"
    state = limiter.state()
    assert state is not None and state.tokens == pytest.approx(7.0)
    assert policy.metrics.retries == 2 and policy.metrics.rate_limit_waits == 0


def test_different_credentials_and_endpoints_have_their_own_buckets(db_url: str) -> None:
    clock = FakeClock()
    a, b = bucket(db_url, clock), bucket(db_url, clock, key=KEY + "b")
    elsewhere = SharedTokenBucket(
        db_url, credential_bucket_key("stripe", "https://api.stripe.com", Secret(KEY)), LIMITS, clock=clock
    )
    for limiter in (a, b, elsewhere):
        assert [limiter.try_acquire() for _ in range(10)] == [0.0] * 10
        assert limiter.try_acquire() > 0
    assert len({a.bucket_key, b.bucket_key, elsewhere.bucket_key}) == 3
    # The same credential with a trailing slash on the endpoint is the same account.
    assert credential_bucket_key("stripe", ENDPOINT + "/", Secret(KEY)) == a.bucket_key


def test_the_table_and_reprs_never_hold_the_key(db_url: str) -> None:
    clock = FakeClock()
    limiter = bucket(db_url, clock)
    limiter.try_acquire()
    policy = TransportPolicy(1, 5.0, limiter=limiter)
    with get_engine(db_url).connect() as conn:
        rows = conn.execute(sa.text("select * from esm_rate_limit")).all()
    assert len(rows) == 1
    stored = repr([tuple(r) for r in rows]) + repr(limiter) + repr(policy)
    assert KEY not in stored and KEY[8:] not in stored
    assert rows[0].bucket_key.startswith("stripe:") and len(rows[0].bucket_key) == len("stripe:") + 32
    assert (rows[0].capacity, rows[0].per_second) == (10.0, 1.0)


def test_bucket_key_needs_a_secret() -> None:
    with pytest.raises(TypeError, match="Secret"):
        credential_bucket_key("stripe", ENDPOINT, KEY)  # type: ignore[arg-type]
