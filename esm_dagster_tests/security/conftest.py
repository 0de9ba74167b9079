"""Fixtures of the leak scan: a failing alert channel with secrets of its own, logs at DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from esm_dagster_tests.security.hostile import HostileServer
from esm_dagster_tests.security.leak_cases import encoded_forms
from esm_dagster_tests.security.leak_scan import CHAT_TOKEN, PAGER_AUTH, PAGER_TOKEN, closed_port


@pytest.fixture
def alerts_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Two webhook channels with secret URLs and a secret header: `pager` points at a port nobody
    listens on (every delivery fails), `chat` at a server that takes them (every delivery succeeds)."""
    url = f"http://127.0.0.1:{closed_port()}/hooks/{PAGER_TOKEN}?token={PAGER_TOKEN}"
    path = tmp_path / "alerts.yaml"
    path.write_text(
        "channels:\n  pager:\n    type: webhook\n    url: {env: ESM_LEAK_PAGER_URL}\n"
        "    timeout: 1\n    headers: {Authorization: {env: ESM_LEAK_PAGER_AUTH}}\n"
        "  chat:\n    type: slack\n    url: {env: ESM_LEAK_CHAT_URL}\n    timeout: 2\n"
    )
    with HostileServer() as receiver:  # answers 200 (not JSON), which a channel takes as delivered
        chat = f"{receiver.url}/services/{CHAT_TOKEN}"
        monkeypatch.setenv("ESM_ALERTS_FILE", str(path))
        monkeypatch.setenv("ESM_LEAK_PAGER_URL", url)
        monkeypatch.setenv("ESM_LEAK_PAGER_AUTH", PAGER_AUTH)
        monkeypatch.setenv("ESM_LEAK_CHAT_URL", chat)
        forms = set()
        for secret in (PAGER_AUTH, PAGER_TOKEN, url, CHAT_TOKEN, chat):
            forms |= encoded_forms(secret)
        yield sorted(forms)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "esm_dagster", "dagster"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog
