"""Fixtures for the alert tests: the loopback receivers of `receivers.py`, and a clean environment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from esm_dagster_tests.alerts.receivers import HttpReceiver, SmtpReceiver, free_port


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def smtp_receiver() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver(free_port()).start()
    yield receiver
    receiver.stop()


@pytest.fixture(autouse=True)
def _local_ui(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESM_DAGSTER_UI_URL", raising=False)
    monkeypatch.delenv("ESM_ALERTS_FILE", raising=False)
