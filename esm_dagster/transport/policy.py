"""The retry policy every provider call goes through (DESIGN.md §5).

Providers do not retry: they classify each failure as a `ProviderError` with `retryable` and
`retry_after`. This policy decides what to do with it:

- a non-retryable error is raised at once (retrying a 401 or a 400 only hides the real problem);
- a retryable one is retried up to `retry_attempts` times, after a full-jitter exponential backoff,
  `uniform(0, min(max_delay, base_delay * 2**attempt))`: jitter spreads the retries of concurrent
  runs that failed together, instead of hitting the provider again in lockstep;
- the wait is never shorter than the provider's `retry_after`: the provider knows when it will
  take requests again, and coming back sooner only earns another 429;
- a `retry_after` longer than `max_delay` is not slept through: the error is raised at once (still
  retryable), so the run checkpoints and the step's retry policy or the next run resumes, rather
  than a worker sleeping for an hour inside a step;
- after the last attempt the last error is raised;
- with a `limiter` (the mapping's `rate_limiting`, a token bucket shared by every process using
  the credential), every attempt, retries included, first takes a token; while none is due the
  policy sleeps the wait the bucket names and asks again, and counts each wait as a rate-limit
  wait (not a retry). Without one, calls are not throttled.

`endpoints` is the mapping's `EndpointPolicy` (where its calls may go, which CAs it trusts); the
provider's client (`transport.client.provider_client`) enforces it. None: the installation's
settings alone (`EndpointPolicy.from_env()`).

`timeout_seconds` is the per-request timeout the provider gives its HTTP client: the policy cannot
interrupt a blocking call, but owning the number keeps a mapping's `timeout_seconds` and
`retry_attempts` together in one object.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from esm_dagster.providers.base import ProviderError
from esm_dagster.security.endpoints import EndpointPolicy
from esm_dagster.transport.bucket import TokenSource
from esm_dagster.transport.metrics import TransportMetrics

T = TypeVar("T")
log = logging.getLogger(__name__)


class TransportPolicy:
    """`TransportPolicy(retry_attempts=3, timeout_seconds=30).call(fn, what="GET /v1/charges")`."""

    def __init__(
        self,
        retry_attempts: int,
        timeout_seconds: float,
        base_delay: float = 0.5,
        max_delay: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        limiter: TokenSource | None = None,
        endpoints: EndpointPolicy | None = None,
    ) -> None:
        if retry_attempts < 0:
            raise ValueError("retry_attempts must be >= 0")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be > 0")
        if base_delay < 0 or max_delay < 0:
            raise ValueError("base_delay and max_delay must be >= 0")
        self.retry_attempts = int(retry_attempts)
        self.timeout_seconds = float(timeout_seconds)
        self.base_delay = float(base_delay)
        self.max_delay = float(max_delay)
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()  # jitter, not secrets
        self.limiter = limiter
        self.endpoints = endpoints
        self.metrics = TransportMetrics()

    def __repr__(self) -> str:
        return (
            f"TransportPolicy(retry_attempts={self.retry_attempts}, timeout_seconds={self.timeout_seconds:g}, "
            f"base_delay={self.base_delay:g}, max_delay={self.max_delay:g}, limiter={self.limiter!r})"
        )

    def backoff(self, attempt: int) -> float:
        """Full-jitter backoff before retry number `attempt + 1` (`attempt` counts from 0)."""
        return self._rng.uniform(0.0, min(self.max_delay, self.base_delay * 2**attempt))

    def call(self, fn: Callable[[], T], *, what: str, retry: bool = True) -> T:
        """`fn()`, retried as the class docstring says; `what` names the call in logs.

        `retry=False` makes one attempt (throttled and measured all the same): for writes that a
        resend could duplicate, whose caller reconciles before trying again.
        """
        attempt = 0
        while True:
            self._take_token(what)
            started = time.perf_counter()
            try:
                result = fn()
            except ProviderError as error:
                self.metrics.record_call(time.perf_counter() - started, error.error_class)
                wait = self._wait_before_retry(error, attempt) if retry else None
                if wait is None:
                    raise
                rate_limited = error.error_class == "rate_limit" or error.retry_after is not None
                log.info(
                    "%s failed (%s); retry %d of %d in %.2f s",
                    what,
                    error.error_class,
                    attempt + 1,
                    self.retry_attempts,
                    wait,
                )
                self.metrics.record_wait(wait, rate_limited=rate_limited)
                self._sleep(wait)
                attempt += 1
                continue
            except BaseException:
                self.metrics.record_call(time.perf_counter() - started)
                raise
            self.metrics.record_call(time.perf_counter() - started)
            return result

    def pause(self, seconds: float, *, rate_limited: bool = False) -> None:
        """Wait before a resend the caller decided on (outbound writes that reconcile first),
        counted in the metrics like the policy's own retries."""
        self.metrics.record_wait(seconds, rate_limited=rate_limited)
        self._sleep(seconds)

    def _take_token(self, what: str) -> None:
        """Block until the limiter hands out a token (at once without a limiter)."""
        if self.limiter is None:
            return
        while (wait := self.limiter.try_acquire()) > 0:
            log.debug("%s waits %.3f s for a rate-limit token", what, wait)
            self.metrics.record_wait(wait, rate_limited=True, retry=False)
            self._sleep(wait)

    def _wait_before_retry(self, error: ProviderError, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None to raise `error` now."""
        if not error.retryable or attempt >= self.retry_attempts:
            return None
        wait = self.backoff(attempt)
        if error.retry_after is not None:
            if error.retry_after > self.max_delay:
                return None
            wait = max(wait, error.retry_after)
        return wait
