"""Token-bucket maths for a mapping's `rate_limiting`: pure functions of a state and a clock reading.

A bucket holds at most `capacity` tokens and refills continuously at `per_second` tokens per
second; every request takes one. So in any window of `t` seconds at most `capacity + t * per_second`
requests go out: `burst_limit` is the burst, `requests_per_minute / 60` the sustained rate.

Without `burst_limit` the capacity is one second's worth of requests (at least one): the mapping
declared a per-minute budget, not permission to spend a whole minute of it in one instant, which
is what a provider's per-second limit would then answer with 429s.

Where the state lives (the catalog database, shared by every process using the credential) is
`esm_dagster.catalog.rate_limits`; this module only decides, so it is tested with a fake clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

# A refill of 0.999999999 token after exactly one interval is a token: float error must not make
# a request wait a nanosecond and poll the database again.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class BucketLimits:
    """`capacity` tokens at most, refilled at `per_second` tokens per second."""

    capacity: float
    per_second: float

    def __post_init__(self) -> None:
        if not (self.capacity >= 1 and math.isfinite(self.capacity)):
            raise ValueError(f"capacity must be a finite number >= 1, not {self.capacity!r}")
        if not (self.per_second > 0 and math.isfinite(self.per_second)):
            raise ValueError(f"per_second must be a finite number > 0, not {self.per_second!r}")

    @classmethod
    def from_rules(cls, requests_per_minute: int, burst_limit: int | None) -> BucketLimits:
        """The limits of `sync_config.rate_limiting` (see the module docstring for the default burst)."""
        if burst_limit is None:
            burst_limit = max(1, math.ceil(requests_per_minute / 60))
        return cls(capacity=float(burst_limit), per_second=requests_per_minute / 60.0)

    def budget(self, seconds: float) -> float:
        """The most requests any window of `seconds` may hold."""
        return self.capacity + seconds * self.per_second


@dataclass(frozen=True, slots=True)
class BucketState:
    """`tokens` as they were at `refilled_at` (unix seconds)."""

    tokens: float
    refilled_at: float


def full(limits: BucketLimits, now: float) -> BucketState:
    """A bucket seen for the first time: a full burst is available."""
    return BucketState(limits.capacity, now)


def refill(state: BucketState, limits: BucketLimits, now: float) -> BucketState:
    """The state at `now`. A clock that went back (another host's, a step) refills nothing."""
    elapsed = max(0.0, now - state.refilled_at)
    tokens = min(limits.capacity, state.tokens + elapsed * limits.per_second)
    return BucketState(tokens, max(now, state.refilled_at))


def take(state: BucketState, limits: BucketLimits, now: float) -> tuple[BucketState, float]:
    """Take one token at `now`: `(new state, 0.0)`, or `(refilled state, seconds until one is due)`."""
    current = refill(state, limits, now)
    if current.tokens >= 1.0 - _EPSILON:
        return BucketState(max(0.0, current.tokens - 1.0), current.refilled_at), 0.0
    return current, (1.0 - current.tokens) / limits.per_second


class TokenSource(Protocol):
    """What the transport policy asks before each request: 0 when a token was taken, else the wait."""

    def try_acquire(self) -> float: ...
