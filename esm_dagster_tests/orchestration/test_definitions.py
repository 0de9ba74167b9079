"""Definitions from the catalog, materialized through real Dagster on a real instance."""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import get_mapping
from esm_dagster.catalog.models import ExternalSystemMapping, SyncStatus
from esm_dagster.demo.run import DEMO_STRIPE_KEY
from esm_dagster.orchestration.loader import build_definitions
from esm_dagster_tests.stripe_fixtures import demo_catalog, stripe_emulator


@pytest.fixture
def emulator():
    with stripe_emulator(customers=40, charges=120) as emu:
        yield emu


@pytest.fixture
def catalog(db_url: str, fernet_key: str, emulator) -> str:
    demo_catalog(db_url, emulator)
    return db_url


HOURLY_JOB = "esm_sync_hourly__asia_bangkok"
DAILY_JOB = "esm_sync_daily__asia_bangkok"


class Runs(list):
    """The results of one run per sync group job, seen as one."""

    @property
    def success(self) -> bool:
        return all(r.success for r in self)

    def get_asset_materialization_events(self):
        return [e for r in self for e in r.get_asset_materialization_events()]

    @property
    def all_events(self):
        return [e for r in self for e in r.all_events]


def run_all(defs: dg.Definitions, instance: dg.DagsterInstance, **kwargs) -> Runs:
    return Runs(
        defs.resolve_job_def(name).execute_in_process(instance=instance, **kwargs)
        for name in (HOURLY_JOB, DAILY_JOB)
    )


def asset_keys(defs: dg.Definitions) -> set[str]:
    return {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}


def test_active_rows_become_assets_grouped_by_system(catalog: str) -> None:
    defs = build_definitions(catalog)
    dg.Definitions.validate_loadable(defs)
    mapped = asset_keys(defs) - {"esm/integration_health"}
    assert mapped == {"esm/stripe/customers", "esm/stripe/charges"}  # the inactive row makes none
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        if key.to_user_string() == "esm/integration_health":
            continue
        node = graph.get(key)
        assert node.group_name == "stripe"
        assert node.tags["esm/provider"] == "stripe"
        assert "stripe" in node.kinds
        assert node.owners == ["data-team@padel.example"]
    jobs = {job.name for job in defs.jobs or []}
    assert {HOURLY_JOB, DAILY_JOB, "esm_health_probe", "esm_integration_health_job"} <= jobs
    schedules = {s.name: s for s in defs.schedules or []}
    hourly = schedules["esm_sync_hourly__asia_bangkok_schedule"]
    assert hourly.cron_schedule == "0 * * * *" and hourly.execution_timezone == "Asia/Bangkok"


def test_materialize_all_on_a_real_instance_then_again_without_duplicates(catalog: str, tmp_path) -> None:
    defs = build_definitions(catalog)
    (tmp_path / "dagster_home").mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster_home")) as instance:
        result = run_all(defs, instance)
        assert result.success
        metadata = {
            e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()
            if e.asset_key is not None and True
        }
        assert set(metadata) == {"esm/stripe/customers", "esm/stripe/charges"}
        for meta in metadata.values():
            assert meta["records_written"] > 0
            assert {"records_read", "records_rejected", "pages", "duration_seconds"} <= set(meta)
        with get_engine(catalog).connect() as conn:
            before = {
                t: conn.execute(sa.text(f'select count(*) from "{t}"')).scalar_one()
                for t in ("user", "payment")
            }
        second = run_all(defs, instance)
        assert second.success
        with get_engine(catalog).connect() as conn:
            after = {
                t: conn.execute(sa.text(f'select count(*) from "{t}"')).scalar_one()
                for t in ("user", "payment")
            }
        assert after == before
        # No secret anywhere in the Dagster event log.
        for run in [*result, *second]:
            for record in instance.all_logs(run.run_id):
                assert DEMO_STRIPE_KEY not in str(record)
        assert (
            instance.get_latest_materialization_event(dg.AssetKey(["esm", "stripe", "charges"])) is not None
        )


def test_manual_full_refresh_through_run_config(catalog: str) -> None:
    defs = build_definitions(catalog)
    instance = dg.DagsterInstance.ephemeral()
    assert run_all(defs, instance).success
    config = {"ops": {"esm__stripe__customers": {"config": {"full_refresh": True}}}}
    result = Runs(
        [
            defs.resolve_job_def(HOURLY_JOB).execute_in_process(instance=instance, run_config=config),
            defs.resolve_job_def(DAILY_JOB).execute_in_process(instance=instance),
        ]
    )
    assert result.success
    reads = {
        e.asset_key.to_user_string(): e.materialization.metadata["records_read"].value
        for e in result.get_asset_materialization_events()
    }
    assert reads["esm/stripe/customers"] == 40 and reads["esm/stripe/charges"] == 0


def test_malformed_rules_mark_only_their_row_and_others_load(catalog: str) -> None:
    with session_factory(catalog).begin() as session:
        row = get_mapping(session, "stripe/charges")
        row.mapping_rules = {"field_mappings": {"amount": {"target": "payment.amount", "type": "monee"}}}
        broken = row.id
    defs = build_definitions(catalog)
    assert asset_keys(defs) == {"esm/stripe/customers", "esm/integration_health"}
    with session_factory(catalog)() as session:
        row = session.get(ExternalSystemMapping, broken)
        assert row.sync_status == SyncStatus.ERROR
        assert "field_mappings.amount" in (row.last_error_message or "") and "monee" in row.last_error_message
        others = session.scalars(
            sa.select(ExternalSystemMapping).where(ExternalSystemMapping.id != broken)
        ).all()
        assert all(o.sync_status != SyncStatus.ERROR for o in others)
    # A reload does not count the same problem again.
    build_definitions(catalog)
    with session_factory(catalog)() as session:
        assert session.get(ExternalSystemMapping, broken).error_count == 1


def test_rules_that_are_not_json_mark_only_their_row_and_others_load(
    catalog: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite keeps JSON as text, so a hand edit can store a document that is not JSON at all."""
    if not catalog.startswith("sqlite"):
        with get_engine(catalog).begin() as conn, pytest.raises(sa.exc.DataError):
            conn.execute(sa.text("update external_system_mapping set mapping_rules = '{not json'"))
        return
    with session_factory(catalog)() as session:
        broken = get_mapping(session, "stripe/charges").id
    with get_engine(catalog).begin() as conn:
        conn.execute(
            sa.text("update external_system_mapping set mapping_rules = '{not json' where id = :id"),
            {"id": broken.hex},
        )
    defs = build_definitions(catalog)
    assert asset_keys(defs) == {"esm/stripe/customers", "esm/integration_health"}
    with session_factory(catalog)() as session:
        row = session.get(ExternalSystemMapping, broken)
        assert row.sync_status == SyncStatus.ERROR
        assert row.last_error_message.startswith("mapping 'Stripe': mapping_rules: not valid JSON")
    from esm_dagster.cli import main

    capsys.readouterr()
    monkeypatch.setenv("ESM_DATABASE_URL", catalog)
    assert main(["mapping", "list"]) == 0
    out = capsys.readouterr().out
    assert "customers" in out and "! Stripe: mapping 'Stripe': mapping_rules: not valid JSON" in out


def test_failed_sync_fails_the_step_without_secrets(catalog: str, fernet_key: str) -> None:
    from esm_dagster.security.vault import Vault

    with session_factory(catalog).begin() as session:
        row = get_mapping(session, "stripe/customers")
        row.credentials = Vault.from_env().encrypt({"api_key": "sk_test_badbadbadbad0000000000"})
        row.retry_attempts = 0
    defs = build_definitions(catalog)
    instance = dg.DagsterInstance.ephemeral()
    result = run_all(defs, instance, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1 and "customers" in failures[0].step_key
    for run in result:
        for record in instance.all_logs(run.run_id):
            assert "badbadbad" not in str(record)


def test_a_catalog_without_tables_says_how_to_fix_it(blank_db: str) -> None:
    from esm_dagster.orchestration.loader import CatalogNotReady

    with pytest.raises(CatalogNotReady, match="esm db upgrade"):
        build_definitions(blank_db)
