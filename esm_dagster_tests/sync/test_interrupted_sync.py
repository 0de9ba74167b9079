"""`esm sync` stopped with Ctrl-C (SIGINT) mid-run: its run row is closed as `interrupted`.

Left `running`, that row would pass for a half-open circuit's trial still under way; counted as
`failed`, a person's Ctrl-C would move the circuit. The re-run resumes and the table ends equal
to a clean run's. The sync is a real subprocess against the emulator, slowed by delay faults.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.mappings import get_mapping
from esm_dagster.catalog.models import ExternalSystemMapping, SyncRun, SyncStatus
from esm_dagster.sync.engine import _load_cursor, run_mapping
from esm_dagster_tests.stripe_fixtures import stripe_emulator
from esm_dagster_tests.sync.fault_helpers import MAPPING, prepare_charges_catalog, snapshot

CHARGES = 400
BATCH = 50
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_mid_sync_closes_the_run_row_and_a_rerun_completes(
    db_url: str, fernet_key: str, tmp_path: Path, signum: int, status: int
) -> None:
    with stripe_emulator(charges=CHARGES) as emulator:
        clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
        prepare_charges_catalog(clean_url, emulator.url, batch_size=BATCH)
        run_mapping(clean_url, MAPPING)
        clean = snapshot(clean_url)

        prepare_charges_catalog(db_url, emulator.url, batch_size=BATCH)
        with session_factory(db_url)() as session:
            mapping_id = get_mapping(session, MAPPING).id
        emulator.faults.delay_next(CHARGES // BATCH, seconds=0.3, path="/v1/charges")
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
            text=True,
            # A shell that starts the suite in the background (`make test &`, some CI runners)
            # hands its children SIGINT ignored, and Python then never turns it into Ctrl-C.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and process.poll() is None:
                if (_load_cursor(db_url, mapping_id, "charges").get("pending") or {}).get("after"):
                    break
                time.sleep(0.02)
            assert process.poll() is None, "the sync finished before it could be interrupted"
            os.kill(process.pid, signum)
            _, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        assert process.returncode == status, err
        assert fernet_key not in err

        with session_factory(db_url)() as session:
            run = session.scalars(sa.select(SyncRun).where(SyncRun.mapping_id == mapping_id)).one()
            row = session.get(ExternalSystemMapping, mapping_id)
            assert row is not None
            errors = (row.error_count, row.sync_status)
        assert run.status == "interrupted" and run.finished_at is not None
        expected = "KeyboardInterrupt" if signum == signal.SIGINT else "SystemExit"
        assert run.records_read > 0 and expected in (run.error_message or "")
        assert errors == (0, SyncStatus.ACTIVE)  # a person's Ctrl-C is no failure of the provider

        emulator.faults.clear()
        resumed = run_mapping(db_url, MAPPING)
        assert resumed.resumed and resumed.records_read < CHARGES
    assert snapshot(db_url).differences(clean) == {}
