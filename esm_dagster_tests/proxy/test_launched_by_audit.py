"""A run stamped by the UI proxy names its launcher in the audit log; an unstamped one names
`dagster`. Real Dagster (in process), real catalog, the Stripe emulator on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine
from esm_dagster.proxy.tags import LAUNCHED_BY, LAUNCHED_BY_ROLE


@pytest.fixture
def demo(db_url: str, fernet_key: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from esm_dagster_tests.stripe_fixtures import demo_catalog, stripe_emulator

    monkeypatch.setenv("ESM_DATABASE_URL", db_url)
    with stripe_emulator(customers=10, charges=20) as emulator:
        demo_catalog(db_url, emulator)
        yield db_url


def test_the_launcher_tag_names_the_person_in_the_audit_log(demo: str) -> None:
    from esm_dagster.orchestration.loader import build_definitions

    job = build_definitions(demo).resolve_implicit_global_asset_job_def()
    charges = [dg.AssetKey(["esm", "stripe", "charges"])]
    with dg.DagsterInstance.ephemeral() as instance:
        stamped = job.execute_in_process(
            instance=instance,
            asset_selection=charges,
            tags={LAUNCHED_BY: "ana@club.example", LAUNCHED_BY_ROLE: "engineer"},
        )
        plain = job.execute_in_process(instance=instance, asset_selection=charges)
    assert stamped.success and plain.success
    with get_engine(demo).connect() as conn:
        rows = conn.execute(
            sa.text(
                "select action, actor, actor_role, source, run_id from esm_audit_log "
                "where run_id in (:a, :b) order by id"
            ),
            {"a": stamped.run_id, "b": plain.run_id},
        ).all()
    assert [tuple(r) for r in rows] == [
        ("sync.manual", "ana@club.example", "engineer", "dagster-ui", stamped.run_id),
        ("credentials.read", "ana@club.example", "engineer", "dagster-ui", stamped.run_id),
        ("sync.manual", "dagster", None, "dagster", plain.run_id),
        ("credentials.read", "dagster", None, "dagster", plain.run_id),
    ]
