"""Token-bucket maths with a fake clock: burst, continuous refill, waits, default burst."""

from __future__ import annotations

import pytest

from esm_dagster.transport.bucket import BucketLimits, BucketState, full, refill, take

LIMITS = BucketLimits.from_rules(60, 10)  # 1 token/s, burst 10


def drain(state: BucketState, now: float, limits: BucketLimits = LIMITS) -> tuple[BucketState, int, float]:
    """Take tokens at `now` until the bucket says wait: (state, tokens taken, that wait)."""
    taken = 0
    while True:
        state, wait = take(state, limits, now)
        if wait:
            return state, taken, wait
        taken += 1


def test_from_rules_rate_and_capacity() -> None:
    assert (LIMITS.capacity, LIMITS.per_second) == (10.0, 1.0)
    assert BucketLimits.from_rules(600, 50) == BucketLimits(50.0, 10.0)
    # No burst_limit: one second's worth of requests, at least one.
    assert BucketLimits.from_rules(600, None) == BucketLimits(10.0, 10.0)
    assert BucketLimits.from_rules(30, None) == BucketLimits(1.0, 0.5)
    assert BucketLimits.from_rules(90, None).capacity == 2.0
    assert LIMITS.budget(60) == 70.0


@pytest.mark.parametrize("capacity, per_second", [(0.5, 1.0), (1.0, 0.0), (float("inf"), 1.0), (1.0, -1.0)])
def test_limits_refuse_nonsense(capacity: float, per_second: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        BucketLimits(capacity, per_second)


def test_a_full_bucket_gives_the_burst_then_asks_for_the_exact_wait() -> None:
    state, taken, wait = drain(full(LIMITS, 1000.0), 1000.0)
    assert taken == 10 and wait == pytest.approx(1.0)
    assert state == BucketState(0.0, 1000.0)
    # 0.25 s later a quarter token has dripped in: 0.75 s to go.
    state, wait = take(state, LIMITS, 1000.25)
    assert wait == pytest.approx(0.75) and state.tokens == pytest.approx(0.25)


def test_refill_is_continuous_and_capped_at_capacity() -> None:
    empty = BucketState(0.0, 0.0)
    assert refill(empty, LIMITS, 2.5).tokens == pytest.approx(2.5)
    assert refill(empty, LIMITS, 3600.0) == BucketState(10.0, 3600.0)
    _, taken, _ = drain(empty, 3.0)
    assert taken == 3


def test_a_clock_that_goes_back_refills_nothing_and_keeps_the_later_time() -> None:
    state = BucketState(2.0, 100.0)
    assert refill(state, LIMITS, 90.0) == BucketState(2.0, 100.0)


def test_exactly_one_interval_later_is_a_token_despite_float_error() -> None:
    limits = BucketLimits.from_rules(180, 1)  # one token every 1/3 s
    state, wait = take(full(limits, 0.0), limits, 0.0)
    assert wait == 0
    _, wait = take(state, limits, 1 / 3)
    assert wait == 0


def test_sustained_rate_over_a_simulated_minute() -> None:
    """A greedy caller that sleeps exactly the wait gets burst + t * rate requests, no more."""
    now, state, sent = 0.0, full(LIMITS, 0.0), []
    while now <= 60.0 + 1e-6:
        state, wait = take(state, LIMITS, now)
        if wait:
            now += wait
        else:
            sent.append(now)
    assert len(sent) == 70  # 10 at once, then one per second up to t=60
    for i, start in enumerate(sent):
        for j in range(i, len(sent)):
            assert j - i + 1 <= LIMITS.budget(sent[j] - start) + 1e-9
