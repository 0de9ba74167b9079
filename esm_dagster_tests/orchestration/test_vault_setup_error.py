"""A run process without the vault keys fails each sync step once, naming the setting.

On Celery a worker started without ESM_FERNET_KEYS (or with a malformed one) failed every step,
but only after the mapping's retry policy had run it three more times (new-user findings): the
keys are this process's setup, the same on every attempt.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from esm_dagster.demo.run import register_demo_catalog
from esm_dagster.orchestration.loader import build_definitions

DAILY_JOB = "esm_sync_daily__asia_bangkok"


@pytest.mark.parametrize("keys", [None, "notakey"])
def test_missing_or_malformed_vault_keys_fail_the_step_once_without_retries(
    db_url: str, fernet_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: str | None
) -> None:
    register_demo_catalog(db_url, "http://127.0.0.1:12999")
    defs = build_definitions(db_url)
    job = defs.resolve_job_def(DAILY_JOB)
    if keys is None:
        monkeypatch.delenv("ESM_FERNET_KEYS")
    else:
        monkeypatch.setenv("ESM_FERNET_KEYS", keys)
    monkeypatch.setenv("ESM_HOME", str(tmp_path / "no_keys_here"))  # no fernet.keys file either
    result = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), partition_key="2026-11-02", raise_on_error=False
    )
    assert not result.success
    kinds = [e.event_type_value for e in result.all_events]
    assert "STEP_UP_FOR_RETRY" not in kinds
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures
    for failure in failures:
        message = failure.step_failure_data.error.message  # type: ignore[union-attr]
        assert "ESM_FERNET_KEYS" in message and "notakey" not in message
