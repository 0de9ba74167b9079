"""What the transport policy saw: the numbers behind retries, rate-limit waits and latency metadata.

One `TransportMetrics` belongs to one policy (one provider client, one run). The engine reads pages
on a prefetch thread while the main thread reads the counters, so every update and read takes a
lock; the cost is negligible next to an HTTP round trip.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from typing import Any


def nearest_rank(sorted_values: list[float], percentile: float) -> float:
    """The nearest-rank percentile of an ascending, non-empty list (always one of its values)."""
    if not sorted_values:
        raise ValueError("no values")
    if not 0 < percentile <= 100:
        raise ValueError("percentile must be in (0, 100]")
    rank = math.ceil(percentile / 100 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


class TransportMetrics:
    """Counters of one policy: calls, retries, rate-limit waits, latencies, errors by class."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.api_calls = 0  # attempts that reached `fn`, retries included
        self.retries = 0  # attempts after the first, over all calls
        # Waits caused by a rate_limit error, a Retry-After, or the mapping's own token bucket.
        self.rate_limit_waits = 0
        self.rate_limit_wait_seconds = 0.0
        self._latencies: list[float] = []  # seconds per attempt, failed ones included
        self.errors_by_class: Counter[str] = Counter()

    def record_call(self, seconds: float, error_class: str | None = None) -> None:
        with self._lock:
            self.api_calls += 1
            self._latencies.append(seconds)
            if error_class is not None:
                self.errors_by_class[error_class] += 1

    def record_wait(self, seconds: float, *, rate_limited: bool, retry: bool = True) -> None:
        """One wait: before a retry, or (`retry=False`) for a token of the mapping's rate limit.

        `rate_limited` when the provider asked for it or the token bucket had no token.
        """
        with self._lock:
            if retry:
                self.retries += 1
            if rate_limited:
                self.rate_limit_waits += 1
                self.rate_limit_wait_seconds += seconds

    @property
    def latencies(self) -> list[float]:
        """Seconds per attempt, in call order (a copy)."""
        with self._lock:
            return list(self._latencies)

    def p50_ms(self) -> float | None:
        """Median attempt latency in milliseconds (nearest rank); None before any call."""
        return self._percentile_ms(50)

    def p95_ms(self) -> float | None:
        """95th-percentile attempt latency in milliseconds (nearest rank); None before any call."""
        return self._percentile_ms(95)

    def _percentile_ms(self, percentile: float) -> float | None:
        with self._lock:
            values = sorted(self._latencies)
        if not values:
            return None
        return round(nearest_rank(values, percentile) * 1000, 3)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly snapshot, for materialization metadata and run history."""
        p50, p95 = self.p50_ms(), self.p95_ms()
        with self._lock:
            return {
                "api_calls": self.api_calls,
                "retries": self.retries,
                "rate_limit_waits": self.rate_limit_waits,
                "rate_limit_wait_seconds": round(self.rate_limit_wait_seconds, 3),
                "latency_p50_ms": p50,
                "latency_p95_ms": p95,
                "errors_by_class": dict(sorted(self.errors_by_class.items())),
            }

    def __repr__(self) -> str:
        return f"TransportMetrics({self.as_dict()!r})"
