"""A bidirectional mapping's Dagster asset runs the whole round (inbound, then outbound)."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from esm_dagster.orchestration.loader import build_definitions
from esm_dagster.sandbox.stripe import StripeEmulator
from esm_dagster_tests.providers.engine_helpers import register_mapping
from esm_dagster_tests.sync.twoway_helpers import KEY, change_user, customer_mapping, posts, user_rows


def test_the_asset_pulls_and_pushes(db_url: str, fernet_key: str) -> None:
    with StripeEmulator(api_keys=[KEY], customers=0, charges=0, seed=2) as emulator:
        ann = emulator.add_customer(name="Ann", balance=500, metadata={"currency": "thb"})["id"]
        register_mapping(db_url, {**customer_mapping(emulator, "Members"), "sync_frequency": "manual"})
        defs = build_definitions(db_url)
        (job,) = [j for j in defs.resolve_all_job_defs() if j.name.startswith("esm_sync_")]
        instance = dg.DagsterInstance.ephemeral()
        first = job.execute_in_process(instance=instance)
        assert first.success
        assert user_rows(db_url, "members/customers")[ann]["full_name"] == "Ann"
        change_user(
            db_url, "members/customers", ann, dt.datetime(2026, 12, 2, tzinfo=dt.UTC), full_name="Ann B"
        )
        second = job.execute_in_process(instance=instance)
        assert second.success
        (event,) = second.get_asset_materialization_events()
        meta = {k: v.value for k, v in event.materialization.metadata.items()}
        assert (meta["records_pushed"], meta["local_updates"], meta["records_read"]) == (1, 0, 1)
        customer = emulator.get_object("customers", ann)
        assert customer is not None and customer["name"] == "Ann B"
        writes = posts(emulator)
        assert job.execute_in_process(instance=instance).success and posts(emulator) == writes
