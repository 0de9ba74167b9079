"""Fixtures of the leak scan: a failing alert channel with secrets of its own, logs at DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from esm_dagster_tests.security.leak_cases import encoded_forms
from esm_dagster_tests.security.leak_scan import PAGER_AUTH, PAGER_TOKEN, closed_port


@pytest.fixture
def alerts_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A webhook channel with a secret URL and header, pointed at a port nobody listens on."""
    url = f"http://127.0.0.1:{closed_port()}/hooks/{PAGER_TOKEN}?token={PAGER_TOKEN}"
    path = tmp_path / "alerts.yaml"
    path.write_text(
        "channels:\n  pager:\n    type: webhook\n    url: {env: ESM_LEAK_PAGER_URL}\n"
        "    timeout: 1\n    headers: {Authorization: {env: ESM_LEAK_PAGER_AUTH}}\n"
    )
    monkeypatch.setenv("ESM_ALERTS_FILE", str(path))
    monkeypatch.setenv("ESM_LEAK_PAGER_URL", url)
    monkeypatch.setenv("ESM_LEAK_PAGER_AUTH", PAGER_AUTH)
    return sorted(encoded_forms(PAGER_AUTH) | encoded_forms(PAGER_TOKEN) | encoded_forms(url))


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "esm_dagster", "dagster"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog
