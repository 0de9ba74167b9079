"""A whole sync over TLS: the Stripe emulator behind a certificate from a CA the test made.

The mapping that names the CA (`sync_config.ca_bundle`) syncs; the one that does not fails
closed, classified `client`, with a message that says what to configure and no secret in it,
in the exception, the run history or the mapping row.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import edit_mapping, get_mapping
from esm_dagster.demo.run import DEMO_STRIPE_KEY, register_demo_catalog
from esm_dagster.sync.engine import SyncFailed, run_mapping
from esm_dagster_tests.stripe_fixtures import stripe_emulator
from esm_dagster_tests.tls_certificates import make_certificates


def test_sync_over_tls_passes_with_the_mapping_ca_and_fails_closed_without(
    db_url: str, fernet_key: str, tmp_path: Path
) -> None:
    ca_file, server_context = make_certificates(tmp_path)
    with stripe_emulator(customers=12, charges=20) as emulator:
        emulator.serve_tls(server_context)
        # The name on the certificate (SNI and Host); the connection goes to 127.0.0.1.
        register_demo_catalog(db_url, emulator.url.replace("127.0.0.1", "localhost"))
        with session_factory(db_url).begin() as session:
            row = get_mapping(session, "stripe/customers")
            rules = json.loads(json.dumps(row.mapping_rules))
            rules["sync_config"]["ca_bundle"] = str(ca_file)
            assert edit_mapping(session, row, {}, mapping_rules=rules) == ["mapping_rules"]

        report = run_mapping(db_url, "stripe/customers")
        assert report.status == "success" and report.records_read == 12

        served = emulator.request_count
        with pytest.raises(SyncFailed) as info:
            run_mapping(db_url, "stripe/charges")  # no ca_bundle: the public CAs only
        assert emulator.request_count == served
    failed = info.value.report
    assert failed.error_class == "client"
    assert "not trusted" in str(failed.error) and "sync_config.ca_bundle" in str(failed.error)
    with get_engine(db_url).connect() as conn:
        stored = conn.execute(sa.text("select error_message from esm_sync_run")).scalars().all()
        row_errors = conn.execute(sa.text("select last_error_message from external_system_mapping")).all()
    for text in [
        str(info.value),
        repr(info.value),
        failed.error or "",
        *map(str, stored),
        *map(str, row_errors),
    ]:
        assert DEMO_STRIPE_KEY not in text
