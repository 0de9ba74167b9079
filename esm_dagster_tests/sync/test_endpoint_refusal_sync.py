"""A row whose endpoint the policy refuses fails only its own sync, audited, without a secret."""

from __future__ import annotations

import logging

import pytest

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.mappings import get_mapping
from esm_dagster.demo.run import DEMO_STRIPE_KEY
from esm_dagster.security.audit_hook import AUDIT_LOGGER
from esm_dagster.sync.engine import SyncFailed, run_mapping
from esm_dagster_tests.stripe_fixtures import demo_catalog, stripe_emulator


@pytest.mark.parametrize(
    ("endpoint", "needle", "sandbox"),
    [
        ("https://169.254.169.254", "cloud metadata", True),
        ("https://10.0.0.1", "10.0.0.1 refused: private address", True),
        ("https://[::1]:1", "ESM_ALLOW_LOOPBACK", False),
    ],
)
def test_a_refused_endpoint_fails_its_own_sync_only(
    db_url: str,
    fernet_key: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str,
    needle: str,
    sandbox: bool,
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    with stripe_emulator(customers=5, charges=5) as emulator:
        demo_catalog(db_url, emulator)
        with session_factory(db_url).begin() as session:  # written past `esm mapping add`'s check
            get_mapping(session, "stripe/charges").api_endpoint = endpoint
        served = emulator.request_count
        if not sandbox:
            monkeypatch.delenv("ESM_ALLOW_LOOPBACK")
        with pytest.raises(SyncFailed) as info:
            run_mapping(db_url, "stripe/charges")
        monkeypatch.setenv("ESM_ALLOW_LOOPBACK", "1")  # the emulator's own mapping, in sandbox mode
        assert emulator.request_count == served
        assert run_mapping(db_url, "stripe/customers").status == "success"
    assert needle in str(info.value) and DEMO_STRIPE_KEY not in str(info.value)
    refusals = [r.audit for r in caplog.records if r.name == AUDIT_LOGGER]  # type: ignore[attr-defined]
    assert refusals and all(e["action"] == "endpoint_refused" for e in refusals)
    assert any(needle in e["detail"] for e in refusals)
    assert DEMO_STRIPE_KEY not in caplog.text
    # ... and stored in the audit log, on the mapping, by the system (the engine named its catalog).
    from esm_dagster.catalog.audit import list_entries

    stored = list_entries(db_url, action="endpoint.refused")
    assert stored and {e.outcome for e in stored} == {"refused"} and {e.actor for e in stored} == {"system"}
    assert any(needle in str(e.details.get("detail")) for e in stored)
    assert DEMO_STRIPE_KEY not in repr(stored)
