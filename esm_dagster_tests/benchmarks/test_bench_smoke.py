"""`make bench` at toy sizes, so the benchmarks cannot rot between the runs that quote them.

The figures at these sizes mean nothing; what is checked is that every part runs end to end on
the real pieces (emulator process, PostgreSQL, the definitions child) and that the report holds
every section and goal. It once failed silently: the definitions child built loopback mappings
without sandbox mode after the endpoint policy landed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from esm_dagster_tests.conftest import PG_URL, REQUIRE_PG

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_whole_bench_runs_at_toy_sizes(tmp_path: Path) -> None:
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("ESM_REQUIRE_POSTGRES=1 but ESM_TEST_DATABASE_URL is not set")
        pytest.skip("the bench loads PostgreSQL: set ESM_TEST_DATABASE_URL")
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.report", "--inbound", "300", "--memory", "300",
         "--rules", "3000", "--loop-records", "1000", "--mappings", "5", "--database-url", PG_URL,
         "--dlt-python", "/nonexistent/python", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    inbound = report["inbound"]
    assert inbound["esm_dagster"]["read"] == 300 == inbound["raw"]["loaded"]
    assert inbound["dlt"] == {"error": "dlt not installed"}
    assert report["rules"]["same_verdicts_on_loop_records"] is True
    assert report["memory"][0]["read"] == 300
    assert report["definitions"][0]["mappings"] == 5
    assert set(report["goals"]) >= {
        "inbound raw limit / esm_dagster records/s",
        "rules engine / per-record loop (same records)",
    }
    assert "## (e) Definitions by catalog size" in (tmp_path / "bench.md").read_text()
    assert out.stdout.rstrip().endswith(f"wrote {tmp_path / 'bench.md'} and {tmp_path / 'bench.json'}")
    assert "(c) rules done:" in out.stderr
