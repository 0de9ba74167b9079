"""An emulator's outgoing webhooks: queued by the state change, sent from the emulator's own thread.

A provider never makes the API call that changed something wait for its webhook, and it retries a
delivery the receiver did not answer with a 2xx. Each emulator hands `send` the body and a signer;
the signer runs again on every attempt because the providers sign each attempt anew (Stripe's
`t=`, Slack's and HubSpot's timestamps), so a retry is not a byte-identical replay. The retry is a
small bounded version of each provider's (`RetryPolicy`); what the providers really do is said
where each emulator builds its policy. Deliveries go to loopback only (`webhook_signers.deliver`).

The sender logs and records event ids, attempt numbers and HTTP statuses only: never a header
(signatures), a body or a key.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from esm_dagster.sandbox._http import LoopbackEmulator
from esm_dagster.sandbox.webhook_signers import deliver
from esm_dagster.security.endpoints import is_loopback

log = logging.getLogger("esm_dagster.sandbox.webhooks")

# The signer of one attempt: (body, attempt number from 1) -> the headers to send.
Signer = Callable[[bytes, int], Mapping[str, str]]
# Whether an answer counts as delivered beyond its 2xx (Slack's url_verification wants the challenge).
Acceptance = Callable[[httpx.Response], bool]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`attempts` deliveries at most (the first included), waiting `first_wait * factor**(n-1)`
    seconds, capped at `max_wait`, after the n-th failed one."""

    attempts: int = 3
    first_wait: float = 0.2
    factor: float = 2.0
    max_wait: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.first_wait < 0 or self.factor < 1 or self.max_wait < 0:
            raise ValueError("attempts >= 1, first_wait >= 0, factor >= 1 and max_wait >= 0")

    def wait(self, failed_attempt: int) -> float:
        return float(min(self.max_wait, self.first_wait * self.factor ** (failed_attempt - 1)))


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    event_id: str
    attempt: int
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    ok: bool  # a 2xx the delivery's acceptance check took


@dataclass(slots=True)
class _Pending:
    event_id: str
    body: bytes
    sign: Signer
    accept: Acceptance | None
    delivered: Callable[[], None] | None
    attempt: int = 1


class WebhookSender:
    """One receiver URL, one daemon thread, deliveries in the order they became due."""

    def __init__(self, url: str, *, retry: RetryPolicy | None = None, timeout: float = 5.0) -> None:
        host = urlsplit(url).hostname or ""
        if not is_loopback(host):
            raise ValueError(f"emulated webhooks go to loopback only, not {host!r}")
        self.url = url
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, _Pending]] = []
        self._seq = 0
        self._busy = 0
        self._enabled = True
        self._closed = False
        self._attempts: list[DeliveryAttempt] = []
        self._thread = threading.Thread(target=self._run, name="webhook-sender", daemon=True)
        self._thread.start()

    # ---- the emulator's side --------------------------------------------------------------------
    def send(
        self,
        event_id: str,
        body: bytes,
        sign: Signer,
        *,
        accept: Acceptance | None = None,
        delivered: Callable[[], None] | None = None,
    ) -> None:
        """Queue a delivery and return at once; dropped while the sender is disabled. `delivered`
        runs on the sender's thread once an attempt is accepted (Telegram then drops the update)."""
        with self._cond:
            if not self._enabled or self._closed:
                return
            self._push(time.monotonic(), _Pending(event_id, body, sign, accept, delivered))

    @property
    def enabled(self) -> bool:
        return self._enabled

    def disable(self) -> None:
        """No delivery from now on: queued ones and retries are dropped too."""
        with self._cond:
            self._enabled = False
            self._due.clear()
            self._cond.notify_all()

    def enable(self) -> None:
        with self._cond:
            self._enabled = True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._due.clear()
            self._cond.notify_all()
        self._thread.join(timeout=self.timeout + 1)

    # ---- what tests read ------------------------------------------------------------------------
    @property
    def attempts(self) -> list[DeliveryAttempt]:
        with self._cond:
            return list(self._attempts)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is queued or in flight (retries included); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._due or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    # ---- the thread -----------------------------------------------------------------------------
    def _push(self, due: float, item: _Pending) -> None:
        self._seq += 1
        heapq.heappush(self._due, (due, self._seq, item))
        self._cond.notify_all()

    def _next(self) -> _Pending | None:
        with self._cond:
            while not self._closed:
                if self._due and self._due[0][0] <= time.monotonic():
                    self._busy += 1
                    return heapq.heappop(self._due)[2]
                wait = self._due[0][0] - time.monotonic() if self._due else None
                self._cond.wait(wait)
        return None

    def _run(self) -> None:
        while (item := self._next()) is not None:
            status, ok = self._attempt(item)
            if ok and item.delivered is not None:
                item.delivered()
            with self._cond:
                self._busy -= 1
                self._attempts.append(DeliveryAttempt(item.event_id, item.attempt, status, ok))
                if not ok and item.attempt < self.retry.attempts and self._enabled:
                    due = time.monotonic() + self.retry.wait(item.attempt)
                    self._push(due, dataclasses.replace(item, attempt=item.attempt + 1))
                self._cond.notify_all()
            log.info(f"webhook {item.event_id} attempt {item.attempt}: {status or 'no answer'}")

    def _attempt(self, item: _Pending) -> tuple[int | None, bool]:
        try:
            headers = dict(item.sign(item.body, item.attempt))
            response = deliver(self.url, headers, item.body, timeout=self.timeout)
        except httpx.HTTPError:
            return None, False
        except Exception as exc:  # a signer bug must not kill the thread; never print its text
            log.error(f"webhook {item.event_id} attempt {item.attempt} not sent: {type(exc).__name__}")
            return None, False
        ok = response.is_success and (item.accept is None or item.accept(response))
        return response.status_code, ok


class PushingEmulator(LoopbackEmulator):
    """A loopback emulator that also pushes webhooks: one sender at a time, closed with the emulator.
    `webhooks` is None while deliveries are off."""

    webhooks: WebhookSender | None = None

    def _open_sender(self, url: str, retry: RetryPolicy) -> WebhookSender:
        self.stop_webhooks()
        self.webhooks = WebhookSender(url, retry=retry)
        return self.webhooks

    def stop_webhooks(self) -> None:
        """Deliveries off (queued ones dropped) until the next `send_*` configuration."""
        sender, self.webhooks = self.webhooks, None
        if sender is not None:
            sender.close()

    def _push(
        self,
        event_id: str,
        body: bytes,
        sign: Signer,
        *,
        accept: Acceptance | None = None,
        delivered: Callable[[], None] | None = None,
    ) -> bool:
        """Queue a delivery if webhooks are on; whether one was queued."""
        sender = self.webhooks
        if sender is None or not sender.enabled:
            return False
        sender.send(event_id, body, sign, accept=accept, delivered=delivered)
        return True

    def stop(self) -> None:
        self.stop_webhooks()
        super().stop()
