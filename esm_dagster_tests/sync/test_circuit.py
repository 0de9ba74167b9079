"""The circuit breaker, end to end: real syncs against the Stripe emulator (500s injected), the
state read back from the mapping row, the requests counted at the emulator, the clock moved by
the engine's `clock` argument instead of sleeping through the cool-down."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from esm_dagster.catalog.circuit import CIRCUIT_OPEN, circuit_of
from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.mappings import get_mapping
from esm_dagster.catalog.models import SyncRun, SyncStatus
from esm_dagster.catalog.types import utcnow
from esm_dagster.cli import main
from esm_dagster.sync.engine import SyncFailed, run_mapping
from esm_dagster_tests.stripe_fixtures import demo_catalog, stripe_emulator

MAPPING = "stripe/charges"
COOLDOWN = 300


@pytest.fixture
def emulator():
    with stripe_emulator(customers=10, charges=30) as emu:
        yield emu


@pytest.fixture
def catalog(db_url: str, fernet_key: str, emulator) -> str:
    demo_catalog(db_url, emulator)
    with session_factory(db_url).begin() as session:
        row = get_mapping(session, MAPPING)
        row.retry_attempts = 0  # one request per failed sync: the emulator's count is exact
        rules = json.loads(json.dumps(row.mapping_rules))
        rules["sync_config"]["circuit_cooldown_seconds"] = COOLDOWN
        row.mapping_rules = rules
    return db_url


def row_state(url: str) -> tuple[SyncStatus, int, str | None]:
    with session_factory(url)() as session:
        row = get_mapping(session, MAPPING)
        return row.sync_status, row.error_count, row.last_error_message


def after(seconds: float):
    return lambda: utcnow() + dt.timedelta(seconds=seconds)


def open_the_circuit(url: str, emulator) -> None:
    for attempt in (1, 2, 3):
        emulator.faults.fail_next(1, status=500)
        with pytest.raises(SyncFailed) as info:
            run_mapping(url, MAPPING)
        assert info.value.report.error_class != CIRCUIT_OPEN
        status, count, message = row_state(url)
        assert (status, count) == (SyncStatus.ERROR if attempt == 3 else SyncStatus.ACTIVE, attempt)
        assert message and "500" in message


def test_closed_open_fast_fail_half_open_reopen_and_close_show_on_the_row(catalog: str, emulator) -> None:
    assert row_state(catalog) == (SyncStatus.ACTIVE, 0, None)  # closed
    open_the_circuit(catalog, emulator)
    with session_factory(catalog)() as session:
        row = get_mapping(session, MAPPING)
        opened = session.scalar(sa.select(sa.func.max(SyncRun.finished_at)).where(SyncRun.status == "failed"))
        circuit = circuit_of(session, row, utcnow())
    assert circuit.is_open and circuit.opened_at == opened
    assert circuit.half_opens_at == opened + dt.timedelta(seconds=COOLDOWN)

    # Open: every sync fails fast, sends nothing, and counts no failure.
    before = emulator.request_count
    for _ in range(3):
        with pytest.raises(SyncFailed) as info:
            run_mapping(catalog, MAPPING)
        assert info.value.report.error_class == CIRCUIT_OPEN
    assert emulator.request_count == before, "an open circuit must not call the provider"
    text = str(info.value)
    assert "'Stripe'" in text and "circuit open since" in text and "half-opens at" in text
    assert opened.strftime("%H:%M:%S") in text
    assert circuit.half_opens_at.strftime("%H:%M:%S") in text and "--force" in text
    status, count, message = row_state(catalog)
    assert (status, count) == (SyncStatus.ERROR, 3)
    assert message and message.startswith("mapping 'Stripe': circuit open since") and "500" in message

    # Half-open after the cool-down: one trial goes through; it fails, so the circuit re-opens.
    emulator.faults.fail_next(1, status=500)
    before = emulator.request_count
    with pytest.raises(SyncFailed) as info:
        run_mapping(catalog, MAPPING, clock=after(COOLDOWN + 1))
    assert info.value.report.circuit == "half_open" and info.value.report.error_class != CIRCUIT_OPEN
    assert emulator.request_count == before + 1
    status, count, message = row_state(catalog)
    assert (status, count) == (SyncStatus.ERROR, 4) and message and "500" in message
    before = emulator.request_count
    with pytest.raises(SyncFailed, match="circuit open since"):
        run_mapping(catalog, MAPPING, clock=after(COOLDOWN - 5))  # a fresh cool-down from the trial
    assert emulator.request_count == before

    # The next trial succeeds: closed again. Its first answer is slowed down, so the row can be
    # seen half-open while the trial is under way.
    emulator.faults.delay_next(1, seconds=1.0)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        trial = pool.submit(run_mapping, catalog, MAPPING, clock=after(2 * COOLDOWN + 1))
        deadline = time.monotonic() + 10
        while (
            not (row_state(catalog)[2] or "").startswith("circuit half-open") and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        status, count, message = row_state(catalog)
        report = trial.result(timeout=30)
    assert (status, count) == (SyncStatus.ERROR, 4)
    assert message and message.startswith("circuit half-open since") and "trial sync started" in message
    assert report.status == "success" and report.circuit == "half_open" and report.records_read == 30
    assert row_state(catalog) == (SyncStatus.ACTIVE, 0, None)
    assert run_mapping(catalog, MAPPING).circuit == "closed"
    with session_factory(catalog)() as session:
        refused = session.scalars(sa.select(SyncRun).where(SyncRun.error_class == CIRCUIT_OPEN)).all()
    assert len(refused) == 4 and all(r.api_calls == 0 and r.finished_at for r in refused)


def test_one_half_open_trial_at_a_time(catalog: str, emulator) -> None:
    open_the_circuit(catalog, emulator)
    with session_factory(catalog).begin() as session:
        row = get_mapping(session, MAPPING)
        trial = SyncRun(mapping_id=row.id, stream="charges", started_at=utcnow())  # another process's trial
        session.add(trial)
    before = emulator.request_count
    with pytest.raises(SyncFailed, match=r"trial sync .* is still running") as info:
        run_mapping(catalog, MAPPING, clock=after(COOLDOWN + 1))
    assert info.value.report.error_class == CIRCUIT_OPEN and emulator.request_count == before
    assert row_state(catalog)[1] == 3


def test_a_row_in_error_without_failed_syncs_is_no_open_circuit(catalog: str) -> None:
    with session_factory(catalog).begin() as session:  # e.g. set by a person, or by old history
        row = get_mapping(session, MAPPING)
        row.sync_status, row.error_count, row.last_error_message = SyncStatus.ERROR, 5, "set by hand"
    assert run_mapping(catalog, MAPPING).status == "success"
    assert row_state(catalog) == (SyncStatus.ACTIVE, 0, None)


def test_cli_lists_the_open_circuit_and_force_bypasses_it(
    catalog: str, emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    monkeypatch.setenv("ESM_DATABASE_URL", catalog)
    monkeypatch.setenv("ESM_HOME", str(tmp_path / "home"))
    open_the_circuit(catalog, emulator)
    with session_factory(catalog)() as session:
        circuit = circuit_of(session, get_mapping(session, MAPPING), utcnow())
    assert circuit.half_opens_at is not None
    assert main(["mapping", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"error (circuit open until {circuit.half_opens_at.strftime('%H:%M:%S')} UTC)" in listing
    assert main(["mapping", "list", "--json"]) == 0
    charges = next(r for r in json.loads(capsys.readouterr().out) if r["stream"] == "charges")
    assert (charges["status"], charges["circuit"]) == ("error", "open")
    assert charges["half_opens_at"] == circuit.half_opens_at.isoformat()

    before = emulator.request_count
    assert main(["sync", MAPPING]) == 2
    err = capsys.readouterr().err
    assert "circuit open since" in err and emulator.request_count == before
    assert main(["sync", MAPPING, "--force"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "success" and report["circuit"] == "open (forced)"
    assert row_state(catalog) == (SyncStatus.ACTIVE, 0, None)
    assert main(["mapping", "list"]) == 0
    assert "circuit" not in capsys.readouterr().out
