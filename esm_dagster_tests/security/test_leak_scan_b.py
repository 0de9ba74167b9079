"""The leak scan (see `test_leak_scan.py`), shard 1: its own file so xdist runs it on another worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from esm_dagster_tests.security.leak_scan import scan_provider, shard

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("provider", shard(1))
def test_no_secret_leaks_across_success_and_every_failure_class(
    provider: str,
    tmp_path: Path,
    fernet_key: str,
    alerts_file: list[str],
    debug_logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scan_provider(provider, tmp_path, fernet_key, alerts_file, debug_logs, capfd, monkeypatch)
