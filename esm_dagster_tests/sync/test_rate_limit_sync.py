"""Rate limits end to end: concurrent partition syncs of one credential (threads, then separate
processes) against the Stripe emulator, on SQLite and PostgreSQL, measured at the emulator's
request log: in any window of t seconds, requests <= burst_limit + t * requests_per_minute / 60."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import get_mapping
from esm_dagster.catalog.models import SyncRun
from esm_dagster.providers.factory import build_provider
from esm_dagster.sandbox.stripe import StripeEmulator
from esm_dagster.security.secret import Secret
from esm_dagster_tests.sync.rate_limit_helpers import (
    BUDGET,
    KEY_A,
    KEY_B,
    LIMITS,
    TOLERANCE_SECONDS,
    daily_windows,
    max_in_any_window,
    recording_builder,
    register_charges,
    sync_windows,
    window_excess,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def emulator() -> Iterator[StripeEmulator]:
    # About 2 charges a day over the seeded quarter: every daily window is one page, one request.
    with StripeEmulator(api_keys=[KEY_A, KEY_B], customers=20, charges=200, seed=5) as emu:
        yield emu


def bucket_rows(url: str) -> list[tuple[object, ...]]:
    with get_engine(url).connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text("select * from esm_rate_limit")).all()]


def charges_in(emulator: StripeEmulator, windows: list[tuple[int, int]]) -> int:
    created = [emulator.get_object("charges", i)["created"] for i in emulator.object_ids("charges")]
    return sum(1 for c in created if any(start <= c < end for start, end in windows))


def figures(times: list[float]) -> dict[str, float]:
    span = max(times) - min(times)
    return {
        "requests": len(times),
        "span_s": round(span, 2),
        "max_in_1s": max_in_any_window(times, 1.0),
        "budget_1s": LIMITS.budget(1.0),
        "max_in_10s": max_in_any_window(times, 10.0),
        "budget_10s": LIMITS.budget(10.0),
        "max_in_60s": max_in_any_window(times, 60.0),
        "budget_60s": LIMITS.budget(60.0),
        "worst_excess": round(window_excess(times, LIMITS, TOLERANCE_SECONDS), 3),
        "worst_excess_without_tolerance": round(window_excess(times, LIMITS, 0.0), 3),
    }


@pytest.mark.slow
def test_thirty_concurrent_partitions_of_one_credential_keep_the_budget(
    db_url: str, fernet_key: str, emulator: StripeEmulator
) -> None:
    mapping_id = register_charges(db_url, emulator.url, "Club Stripe", KEY_A, BUDGET)
    windows = daily_windows(30)
    emulator.reset_request_log()
    decisions: list[float] = []
    started = time.monotonic()
    reports = sync_windows(db_url, mapping_id, windows, recording_builder(decisions))
    seconds = time.monotonic() - started
    times = emulator.request_times
    print("\n30 partitions, threads, at the emulator:", {**figures(times), "duration_s": round(seconds, 2)})
    print("30 partitions, threads, bucket decisions:", figures(decisions))

    assert [r.status for r in reports] == ["success"] * 30
    # One page per window, nothing retried: exactly 30 requests, all the charges of the 30 days.
    assert len(times) == 30 and all(r.path == "/v1/charges" for r in emulator.requests)
    assert sum(r.records_read for r in reports) == charges_in(emulator, windows) > 0
    assert window_excess(times, LIMITS, TOLERANCE_SECONDS) <= 0, figures(times)
    # The tokens themselves, read at the instant the locked row decided, keep the budget exactly.
    assert len(decisions) == 30 and window_excess(decisions, LIMITS, 0.0) <= 1e-6, figures(decisions)
    # The limiter really throttled: 20 requests past the burst take at least 20 s at 1 per second.
    assert max(times) - min(times) >= (30 - LIMITS.capacity) / LIMITS.per_second - TOLERANCE_SECONDS
    waits = sum(r.rate_limit_waits for r in reports)
    assert waits > 0 and sum(r.retries for r in reports) == 0
    with session_factory(db_url)() as session:
        recorded = session.scalars(sa.select(SyncRun.rate_limit_waits)).all()
    assert sum(recorded) == waits
    rows = bucket_rows(db_url)
    assert len(rows) == 1 and KEY_A not in repr(rows)


@pytest.mark.slow
def test_syncs_in_separate_processes_share_the_bucket(
    db_url: str, fernet_key: str, emulator: StripeEmulator
) -> None:
    mapping_id = register_charges(db_url, emulator.url, "Club Stripe", KEY_A, BUDGET)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    module = "esm_dagster_tests.sync.rate_limit_helpers"
    commands = [
        [sys.executable, "-m", module, db_url, mapping_id, json.dumps(daily_windows(4, first=4 * n))]
        for n in range(4)
    ]
    workers = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        for command in commands
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        emulator.reset_request_log()
        started = time.monotonic()
        for worker in workers:  # all four at once: each has 4 syncs waiting on its threads
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    seconds = time.monotonic() - started
    assert [w.returncode for w in workers] == [0] * 4
    reports = [json.loads(line) for out in outputs for line in out.splitlines() if line.strip()]
    times = emulator.request_times
    print("\n16 partitions, 4 processes:", {**figures(times), "duration_s": round(seconds, 2)})

    assert [r["status"] for r in reports] == ["success"] * 16
    assert len(times) == 16
    assert window_excess(times, LIMITS, TOLERANCE_SECONDS) <= 0, figures(times)
    assert max(times) - min(times) >= (16 - LIMITS.capacity) / LIMITS.per_second - TOLERANCE_SECONDS
    assert sum(r["rate_limit_waits"] for r in reports) > 0
    assert len(bucket_rows(db_url)) == 1


def test_two_credentials_do_not_share_a_bucket(
    db_url: str, fernet_key: str, emulator: StripeEmulator
) -> None:
    """Ten syncs on each of two keys at once: each key's burst covers its own ten, so none waits.

    One shared bucket would hold back ten of the twenty, for 10 s each at this slow refill.
    """
    budget = {"requests_per_minute": 6, "burst_limit": 10}  # a token every 10 s: no refill here
    club_a = register_charges(db_url, emulator.url, "Club A", KEY_A, budget)
    club_b = register_charges(db_url, emulator.url, "Club B", KEY_B, budget)
    emulator.reset_request_log()
    with ThreadPoolExecutor(max_workers=2) as pool:
        a = pool.submit(sync_windows, db_url, club_a, daily_windows(10))
        b = pool.submit(sync_windows, db_url, club_b, daily_windows(10, first=10))
        reports = a.result() + b.result()
    assert [r.status for r in reports] == ["success"] * 20
    assert sum(r.rate_limit_waits for r in reports) == 0
    assert emulator.request_count == 20
    rows = bucket_rows(db_url)
    assert len(rows) == 2
    stored = repr(rows)
    assert KEY_A not in stored and KEY_B not in stored
    with get_engine(db_url).connect() as conn:
        tokens = conn.execute(sa.text("select tokens from esm_rate_limit")).scalars().all()
    assert all(t < 1 for t in tokens)  # each bucket spent its own burst


def test_a_mapping_without_rate_limiting_is_not_throttled(
    db_url: str, fernet_key: str, emulator: StripeEmulator
) -> None:
    free = register_charges(db_url, emulator.url, "Club Free", KEY_A, None)
    reports = sync_windows(db_url, free, daily_windows(15))
    assert [r.status for r in reports] == ["success"] * 15
    assert sum(r.rate_limit_waits for r in reports) == 0 and emulator.request_count == 15
    assert bucket_rows(db_url) == []


def test_the_factory_gives_a_limiter_only_with_rules_and_a_catalog(
    db_url: str, fernet_key: str, emulator: StripeEmulator
) -> None:
    budget = {"requests_per_minute": 1, "burst_limit": 3}  # refills nothing within this test
    limited = register_charges(db_url, emulator.url, "Club Stripe", KEY_A, budget)
    free = register_charges(db_url, emulator.url, "Club Free", KEY_A, None)
    with session_factory(db_url)() as session:
        limited_row, free_row = get_mapping(session, limited), get_mapping(session, free)
    credentials = {"api_key": Secret(KEY_A)}
    assert build_provider(free_row, credentials, catalog_url=db_url).policy.limiter is None
    assert build_provider(limited_row, credentials).policy.limiter is None
    provider = build_provider(limited_row, credentials, catalog_url=db_url)
    with provider:
        limiter = provider.policy.limiter
        assert (limiter.limits.capacity, limiter.limits.per_second) == (3.0, pytest.approx(1 / 60))
        # A retried request pays a token per attempt: the 500 and its retry take two of three.
        emulator.faults.fail_next(1, 500)
        emulator.reset_request_log()
        provider.probe()
        assert emulator.request_count == 2 and provider.metrics.retries == 1
        assert limiter.state().tokens == pytest.approx(1.0, abs=0.1)
        assert limiter.try_acquire() == 0.0
        assert limiter.try_acquire() > 30  # the next token is about a minute away
    assert KEY_A not in repr(bucket_rows(db_url))


def test_a_dagster_partition_run_takes_its_tokens_from_the_shared_bucket(
    db_url: str, fernet_key: str, emulator: StripeEmulator
) -> None:
    import dagster as dg

    from esm_dagster.orchestration.loader import build_definitions

    register_charges(db_url, emulator.url, "Club Stripe", KEY_A, BUDGET)
    job = build_definitions(db_url).resolve_job_def("esm_sync_daily__asia_bangkok")
    emulator.reset_request_log()
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance, partition_key="2026-09-02")
    assert result.success
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["rate_limit_waits"].value == 0
    rows = bucket_rows(db_url)
    assert len(rows) == 1 and KEY_A not in repr(rows)
    with get_engine(db_url).connect() as conn:
        tokens, capacity = conn.execute(sa.text("select tokens, capacity from esm_rate_limit")).one()
    # One request, one token (plus what dripped back in at 1/s while the run finished).
    assert emulator.request_count == 1 and capacity == 10.0 and 9.0 <= tokens < 10.0
