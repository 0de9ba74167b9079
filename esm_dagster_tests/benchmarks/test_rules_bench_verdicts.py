"""The bench's verdict comparison can fail: it once compared only the accepted counts."""

from __future__ import annotations

import json

from benchmarks.rules_bench import SEED_RULES, _same_rows, batches, per_record
from esm_dagster.rules.plan import compile_rules


def test_the_comparison_is_record_by_record() -> None:
    plan = compile_rules(json.loads(SEED_RULES.read_text()))
    (batch,) = batches(300, batch=300)
    result = plan.apply(batch)
    rows, rejected = per_record(batch)
    assert rejected > 0 and len(rows) == result.accepted_count
    assert _same_rows(result, rows)
    changed = [dict(row) for row in rows]
    changed[3]["phone_number"] = "+66000000000"
    assert not _same_rows(result, changed)
    # As many accepted, but another record: a count would not see it.
    swapped = [*rows[:-1], {**rows[-1], "external_id": "cus_other"}]
    assert not _same_rows(result, swapped)
