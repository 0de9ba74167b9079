"""The failing inputs of the bugs the fault matrix found, small enough to run on every change.

1. A page that repeats the end of the page before (offset shift) was counted twice: records_read
   over the source count, and each repeated rejected record quarantined twice (`seen_count` 2).
2. A charge created just before a run's window end but listed only after the run had read past it
   fell behind the high-water mark and no incremental run ever read it.
"""

from __future__ import annotations

import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine
from esm_dagster.sync.engine import run_mapping
from esm_dagster.sync.repeats import RepeatFilter
from esm_dagster_tests.stripe_fixtures import stripe_emulator
from esm_dagster_tests.sync.fault_helpers import MAPPING, prepare_charges_catalog, snapshot


def test_repeated_page_items_are_read_once_and_quarantined_once(db_url: str, fernet_key: str) -> None:
    with stripe_emulator(charges=300) as emulator:
        prepare_charges_catalog(db_url, emulator.url, batch_size=50)  # every page its own batch
        emulator.faults.duplicate_next(4, items=10, path="/v1/charges")
        report = run_mapping(db_url, MAPPING)
    held = snapshot(db_url)
    assert {seen for _, seen in held.quarantine.values()} == {1}
    assert report.records_read == 300
    assert report.records_written + report.records_rejected == 300
    assert len(held.payments) == held.payment_rows == report.records_written
    assert held.quarantine_rows == report.records_rejected
    assert report.duplicates_skipped == 40


def test_a_charge_listed_after_its_window_was_read_is_picked_up_next_run(
    db_url: str, fernet_key: str
) -> None:
    with stripe_emulator(charges=300) as emulator:
        prepare_charges_catalog(db_url, emulator.url)
        # between pages 2 and 3: a charge appears, created 2 s ago (inside this run's window, newer
        # than the cursor): this run cannot see it
        emulator.faults.mutate_next(1, backdate=2, path="/v1/charges", after=1)
        first = run_mapping(db_url, MAPPING)
        [mutation] = emulator.mutations
        assert first.records_read == 300
        second = run_mapping(db_url, MAPPING)
    with get_engine(db_url).connect() as conn:
        ids = conn.execute(sa.text("select esm_external_id from payment")).scalars().all()
    assert mutation.inserted in ids and len(ids) == len(set(ids))
    assert second.records_read == 1
    assert second.window_start is not None and second.window_start < (first.window_end or 0)


def test_repeat_filter_keeps_a_changed_copy_and_records_without_a_key() -> None:
    filt = RepeatFilter("id")
    first = [{"id": "a", "v": 1}, {"id": "b", "v": 1}]
    assert filt.fresh(first) == first
    page = [{"id": "b", "v": 1}, {"id": "a", "v": 2}, {"v": 3}, {"id": "c", "v": 1}, {"id": "c", "v": 1}]
    assert filt.fresh(page) == [{"id": "a", "v": 2}, {"v": 3}, {"id": "c", "v": 1}]
    assert filt.dropped == 2
    # only the page before is remembered: "a" from two pages back is not a repeat any more
    assert filt.fresh([{"id": "d"}]) == [{"id": "d"}]
    assert filt.fresh([{"id": "a", "v": 1}]) == [{"id": "a", "v": 1}]
