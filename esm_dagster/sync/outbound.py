"""Writes to a provider that happen once, however often the answer is lost.

Every outbound record carries a deterministic idempotency key (mapping, write, record, version):
the same record at the same version gets the same key on every retry and every re-run. What the
key buys depends on the write (`WriteSpec.idempotency`):

- `key` / `natural`: the provider itself makes a repeat harmless (it replays the first answer, or
  upserts by a natural key), so the transport policy's own retries are safe and are used;
- `none`: a resend may write twice (an SMS, a chat message). The provider makes one attempt
  (`retry=False`); after a failure that may have happened after the provider acted (timeout,
  dropped connection, 5xx), `find_written` looks for the first attempt's result before anything
  is sent again. Only an answer that proves nothing was written (429, 4xx validation, or a
  lookup that finds nothing after an ambiguous failure) leads to a resend.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from esm_dagster.providers.base import NOT_SENT_CODE, Provider, ProviderError
from esm_dagster.transport import TransportPolicy

log = logging.getLogger("esm_dagster.outbound")

# Failures after which the provider may have acted: the record must be looked up before a resend.
AMBIGUOUS_CLASSES = frozenset({"timeout", "network", "server"})
_KEY_PREFIX = "esm1"


def idempotency_key(mapping_id: object, write: str, record_key: str, version: object) -> str:
    """`esm1-<40 hex>`: deterministic for (mapping, write, record, version), safe to send anywhere.

    A digest, not the parts: record keys are often emails or phone numbers, which must not travel
    in a header the provider logs. 44 characters fits every provider's limit (Stripe: 255).
    """
    material = f"{mapping_id}\n{write}\n{record_key}\n{version}".encode()
    return f"{_KEY_PREFIX}-{hashlib.sha256(material).hexdigest()[:40]}"


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    index: int
    idempotency_key: str
    status: Literal["written", "found", "failed"]  # found: an earlier attempt's write, not resent
    result: dict[str, Any] | None = None
    attempts: int = 1
    error: ProviderError | None = None


def write_records(
    provider: Provider,
    name: str,
    records: Sequence[dict[str, Any]],
    keys: Sequence[str],
    *,
    attempts: int | None = None,
    sleep: Callable[[float], None] | None = None,
) -> list[WriteOutcome]:
    """Write `records[i]` with `keys[i]`, batched by the write's `max_batch`; one outcome per record.

    A failure of one batch is recorded on its records and the next batch goes on: the caller
    decides what a failed record means (quarantine, retry next run). `attempts` bounds the resends
    of an `idempotency="none"` write (default: the provider policy's `retry_attempts + 1`); the
    waits between them go through the policy (its sleep, its metrics) unless `sleep` is given.
    """
    if len(records) != len(keys):
        raise ValueError("records and keys must have the same length")
    if len(set(keys)) != len(keys):
        raise ValueError("two records carry the same idempotency key: they would be written once")
    spec = provider.write_spec(name)
    policy: TransportPolicy | None = getattr(provider, "policy", None)
    outcomes: list[WriteOutcome] = []
    if spec.idempotency == "none":
        limit = attempts if attempts is not None else (policy.retry_attempts + 1 if policy else 1)
        for index, (record, key) in enumerate(zip(records, keys, strict=True)):
            outcomes.append(_write_unguarded(provider, name, index, record, key, limit, policy, sleep))
        return outcomes
    size = max(1, spec.max_batch)
    for start in range(0, len(records), size):
        batch, batch_keys = list(records[start : start + size]), list(keys[start : start + size])
        try:
            results = provider.write(name, batch, idempotency_keys=batch_keys)
        except ProviderError as error:
            outcomes.extend(
                WriteOutcome(start + i, key, "failed", error=error) for i, key in enumerate(batch_keys)
            )
            continue
        if len(results) != len(batch):
            raise RuntimeError(
                f"{provider.name}.write({name!r}) answered {len(results)} results for {len(batch)}"
            )
        outcomes.extend(
            WriteOutcome(start + i, key, "written", result=result)
            for i, (key, result) in enumerate(zip(batch_keys, results, strict=True))
        )
    return outcomes


def _write_unguarded(
    provider: Provider,
    name: str,
    index: int,
    record: dict[str, Any],
    key: str,
    limit: int,
    policy: TransportPolicy | None,
    sleep: Callable[[float], None] | None,
) -> WriteOutcome:
    """One record of a write the provider cannot deduplicate: look up before every resend."""
    attempt = 0
    while True:
        attempt += 1
        try:
            (result,) = provider.write(name, [record], idempotency_keys=[key])
            return WriteOutcome(index, key, "written", result=result, attempts=attempt)
        except ProviderError as error:
            failure = error
        if failure.error_class in AMBIGUOUS_CLASSES and failure.code != NOT_SENT_CODE:
            found = provider.find_written(name, record, key)
            if found is not None:
                log.info(f"{provider.name} {name}: the answer was lost but the write was made; not resending")
                return WriteOutcome(index, key, "found", result=found, attempts=attempt)
        if not failure.retryable or attempt >= limit:
            return WriteOutcome(index, key, "failed", attempts=attempt, error=failure)
        wait = policy.backoff(attempt - 1) if policy else 0.0
        if failure.retry_after is not None:
            wait = max(wait, failure.retry_after)
        log.info(
            f"{provider.name} {name}: attempt {attempt} failed ({failure.error_class}); resend in {wait:.2f} s"
        )
        if sleep is not None:
            sleep(wait)
        elif policy is not None:
            policy.pause(wait, rate_limited=failure.error_class == "rate_limit")
        else:
            time.sleep(wait)
