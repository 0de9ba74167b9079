"""Helpers of the rate-limit tests: mappings on one emulator, partition windows, budget arithmetic.

Also a worker (`python -m esm_dagster_tests.sync.rate_limit_helpers URL MAPPING_ID WINDOWS_JSON`)
for the multi-process test: it imports everything, prints `ready`, waits for a line on stdin, then
runs its window syncs at once on threads and prints one JSON line per report, so that every
process competes for the same bucket at the same moment.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import MappingInput, upsert_mapping
from esm_dagster.catalog.models import ExternalSystemMapping
from esm_dagster.catalog.rate_limits import SharedTokenBucket
from esm_dagster.demo.run import demo_mappings
from esm_dagster.providers.base import Provider
from esm_dagster.providers.factory import build_provider
from esm_dagster.rules.plan import compile_rules
from esm_dagster.rules.schema import parse_rules
from esm_dagster.sandbox.stripe import DEFAULT_START
from esm_dagster.security.vault import Vault
from esm_dagster.sync.engine import ProviderBuilder, SyncReport, run_mapping
from esm_dagster.sync.target_tables import ensure_table
from esm_dagster.transport.bucket import BucketLimits

KEY_A = "sk_test_ratelimitAAAAc0ffee1234567890"
KEY_B = "sk_test_ratelimitBBBBc0ffee1234567890"
BUDGET = {"requests_per_minute": 60, "burst_limit": 10}
LIMITS = BucketLimits.from_rules(60, 10)
DAY = 86400
# Arrival times are read at the emulator, a little after the bucket handed out each token (commit,
# then the HTTP request). That delay varies: with 30 syncing threads sharing the GIL with the
# emulator on a busy 2-core machine, by up to ~0.3 s measured, while the bucket's own decisions
# keep the budget exactly. Half a token interval absorbs it and still catches one extra request.
TOLERANCE_SECONDS = 0.5


def register_charges(url: str, stripe_url: str, name: str, key: str, rate_limiting: Any) -> str:
    """The demo's charges mapping under `name`, with `key` and `rate_limiting`; its target table made.

    The table is created here, once: concurrent first syncs in separate processes would otherwise
    race to create it, which is not what these tests are about.
    """
    raw = next(
        m for m in demo_mappings(stripe_url) if m["mapping_rules"]["sync_config"]["stream"] == "charges"
    )
    raw = {**raw, "system_name": name, "credentials": {"api_key": key}}
    raw.pop("created_by", None)
    sync_config = dict(raw["mapping_rules"]["sync_config"])
    if rate_limiting is None:
        sync_config.pop("rate_limiting", None)
    else:
        sync_config["rate_limiting"] = rate_limiting
    raw["mapping_rules"] = {**raw["mapping_rules"], "sync_config": sync_config}
    with session_factory(url).begin() as session:
        row, _ = upsert_mapping(session, Vault.from_env(), MappingInput.model_validate(raw))
        mapping_id = str(row.id)
    plan = compile_rules(parse_rules(raw["mapping_rules"]))
    for table, columns in plan.table_columns().items():
        ensure_table(get_engine(url), table, columns)
    return mapping_id


def daily_windows(count: int, first: int = 0) -> list[tuple[int, int]]:
    """`count` one-day partition windows of the emulator's seeded range, from day `first`."""
    return [
        (DEFAULT_START + day * DAY, DEFAULT_START + (day + 1) * DAY) for day in range(first, first + count)
    ]


class RecordedBucket(SharedTokenBucket):
    """The real shared bucket, noting the clock reading at which it handed out each token.

    Those are the bucket's own decisions, before commit and HTTP add their delay: they must keep
    the budget exactly, whatever the emulator's arrival times show.
    """

    def __init__(self, bucket: SharedTokenBucket, decisions: list[float]) -> None:
        self._reading = threading.local()
        self.decisions = decisions
        super().__init__(
            bucket.database_url,
            bucket.bucket_key,
            bucket.limits,
            provider_name=bucket.provider_name,
            clock=self._now,
        )

    def _now(self) -> float:
        self._reading.value = time.time()
        return float(self._reading.value)

    def try_acquire(self) -> float:
        wait = super().try_acquire()
        if wait == 0:
            self.decisions.append(self._reading.value)  # the reading `take` decided on
        return wait


def recording_builder(decisions: list[float]) -> ProviderBuilder:
    """`build_provider`, with its bucket wrapped in a `RecordedBucket` appending to `decisions`."""

    def build(
        row: ExternalSystemMapping, credentials: dict[str, Any], *, catalog_url: str | None = None
    ) -> Provider:
        provider = build_provider(row, credentials, catalog_url=catalog_url)
        policy = provider.policy  # type: ignore[attr-defined]
        assert isinstance(policy.limiter, SharedTokenBucket)
        policy.limiter = RecordedBucket(policy.limiter, decisions)
        return provider

    return build


def sync_windows(
    url: str,
    mapping_id: str,
    windows: Sequence[tuple[int, int]],
    provider_builder: ProviderBuilder | None = None,
) -> list[SyncReport]:
    """One partition-style sync per window, all at once, one thread each."""
    with ThreadPoolExecutor(max_workers=len(windows)) as pool:
        futures = [
            pool.submit(
                run_mapping,
                url,
                mapping_id,
                window=window,
                partition_key=f"day-{window[0]}",
                provider_builder=provider_builder,
            )
            for window in windows
        ]
        return [future.result() for future in futures]


def window_excess(times: Sequence[float], limits: BucketLimits, tolerance: float) -> float:
    """The most any window [t_i, t_j] of arrivals holds over `capacity + (t_j - t_i + tolerance) * rate`.

    Zero or less means every window of every length kept to the budget.
    """
    ordered = sorted(times)
    worst = float("-inf")
    for i, start in enumerate(ordered):
        for j in range(i, len(ordered)):
            worst = max(worst, (j - i + 1) - limits.budget(ordered[j] - start + tolerance))
    return worst


def max_in_any_window(times: Sequence[float], seconds: float) -> int:
    """The most arrivals in any window of `seconds` (closed at both ends)."""
    ordered = sorted(times)
    best, left = 0, 0
    for right, moment in enumerate(ordered):
        while moment - ordered[left] > seconds:
            left += 1
        best = max(best, right - left + 1)
    return best


def _worker(url: str, mapping_id: str, windows_json: str) -> None:
    windows = [tuple(w) for w in json.loads(windows_json)]
    print("ready", flush=True)
    sys.stdin.readline()
    for report in sync_windows(url, mapping_id, windows):  # type: ignore[arg-type]
        print(json.dumps({"status": report.status, "rate_limit_waits": report.rate_limit_waits}), flush=True)


if __name__ == "__main__":
    _worker(*sys.argv[1:4])
