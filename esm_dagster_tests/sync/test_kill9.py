"""`esm sync` killed with SIGKILL mid-run: the cursor never points past committed data, and a
re-run finishes with the table a clean run writes (same ids, same values), nothing doubled.

The sync runs in a real subprocess (`python -m esm_dagster.cli sync`) against the emulator in
this process, slowed by delay faults so the kill lands between batches; the kill comes as soon as
at least one batch (rows and cursor, one transaction) is committed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import get_mapping
from esm_dagster.sync.engine import _load_cursor, run_mapping
from esm_dagster_tests.stripe_fixtures import stripe_emulator
from esm_dagster_tests.sync.fault_helpers import MAPPING, prepare_charges_catalog, snapshot

CHARGES = 1_000
BATCH = 50
REPO = Path(__file__).resolve().parents[2]


def _committed_ids(url: str) -> set[str]:
    with get_engine(url).connect() as conn:
        loaded = conn.execute(sa.text("select esm_external_id from payment")).scalars().all()
        rejected = conn.execute(sa.text("select external_id from esm_quarantine")).scalars().all()
    return set(loaded) | set(rejected)


def test_sigkill_mid_sync_then_rerun_equals_a_clean_run(db_url: str, fernet_key: str, tmp_path: Path) -> None:
    with stripe_emulator(charges=CHARGES) as emulator:
        clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
        prepare_charges_catalog(clean_url, emulator.url, batch_size=BATCH)
        run_mapping(clean_url, MAPPING)
        clean = snapshot(clean_url)
        newest_first = emulator.object_ids("charges")

        prepare_charges_catalog(db_url, emulator.url, batch_size=BATCH)
        with session_factory(db_url)() as session:
            mapping_id = get_mapping(session, MAPPING).id
        emulator.faults.delay_next(CHARGES // BATCH, seconds=0.15, path="/v1/charges")  # ~3 s a run
        env = {
            **os.environ,
            "ESM_DATABASE_URL": db_url,
            "ESM_FERNET_KEYS": fernet_key,
            "PYTHONPATH": str(REPO),
        }
        env.pop("ESM_FERNET_KEYS_FILE", None)
        process = subprocess.Popen(
            [sys.executable, "-m", "esm_dagster.cli", "sync", MAPPING],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            cursor: dict = {}
            while time.monotonic() < deadline and process.poll() is None:
                cursor = _load_cursor(db_url, mapping_id, "charges")
                if (cursor.get("pending") or {}).get("after"):
                    break
                time.sleep(0.02)
            assert process.poll() is None, "the sync finished before it could be killed"
            assert cursor.get("pending"), "no batch committed within 60 s"
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
            if process.stderr:
                process.stderr.close()
        assert process.returncode == -signal.SIGKILL

        # the committed state after the kill: the cursor names the last record of a committed
        # batch, and exactly the records up to it (newest first) are in the table or quarantine
        cursor = _load_cursor(db_url, mapping_id, "charges")
        after = cursor["pending"]["after"]
        assert cursor.get("high_water") is None
        position = newest_first.index(after)
        assert (position + 1) % BATCH == 0 and position + 1 < CHARGES
        assert _committed_ids(db_url) == set(newest_first[: position + 1])

        emulator.faults.clear()
        resumed = run_mapping(db_url, MAPPING)
        assert resumed.resumed and resumed.records_read == CHARGES - (position + 1)
    final = snapshot(db_url)
    assert final.differences(clean) == {}  # ids, values, quarantine rows and seen counts
    assert {seen for _, seen in final.quarantine.values()} == {1}  # no reject quarantined twice
    with get_engine(db_url).connect() as conn:
        runs = conn.execute(sa.text("select status, finished_at from esm_sync_run")).all()
    # the killed run never finished: its row says so (no success recorded), the re-run's does
    assert sorted((r.status, r.finished_at is None) for r in runs) == [("running", True), ("success", False)]
