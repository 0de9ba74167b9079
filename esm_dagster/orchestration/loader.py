"""Definitions from the catalog table, queried once per code-location load.

A plain factory would re-run the catalog query in every step process; the state-backed loader
queries in the code server and hands the rows to run and step processes as reconstruction
metadata (DAGSTER_NOTES §1.B). A row that cannot become an asset is logged and marked in
`error`; every other row still loads.
"""

from __future__ import annotations

import json
import logging

import dagster as dg
import sqlalchemy as sa
from dagster._core.definitions.definitions_load_context import StateBackedDefinitionsLoader

from esm_dagster.catalog.db import get_engine, redacted_url, session_factory
from esm_dagster.catalog.mappings import MappingSpec, load_specs, mark_error
from esm_dagster.catalog.models import SyncStatus
from esm_dagster.catalog.schemas import no_catalog_message
from esm_dagster.orchestration.assets import build_mapping_asset
from esm_dagster.orchestration.health_asset import build_health_assets
from esm_dagster.orchestration.messages_job import build_messages_sensor, messages_job
from esm_dagster.orchestration.partitions import default_start
from esm_dagster.orchestration.probe_job import probe_job
from esm_dagster.orchestration.resources import CatalogResource, ProvidersResource, VaultResource
from esm_dagster.orchestration.schedules import build_jobs_and_schedules
from esm_dagster.orchestration.sensors import (
    build_error_state_sensor,
    build_real_time_sensor,
    build_run_failure_sensor,
)

log = logging.getLogger("esm_dagster.definitions")


def _usable(specs: list[MappingSpec]) -> tuple[list[MappingSpec], dict[str, str]]:
    """Active, valid, uniquely keyed specs, and the error of each rejected row by id."""
    chosen: list[MappingSpec] = []
    errors: dict[str, str] = {}
    seen: dict[tuple[str, ...], MappingSpec] = {}
    for spec in specs:
        if not spec.is_active or spec.sync_status == SyncStatus.INACTIVE.value:
            continue
        if spec.error:
            errors[spec.id] = spec.error
            continue
        key = tuple(spec.asset_key_path)
        if key in seen:
            errors[spec.id] = (
                f"mapping {spec.system_name!r}: asset key {'/'.join(key)} is already used by mapping "
                f"{seen[key].id}; give it another system_name or sync_config.stream"
            )
            continue
        seen[key] = spec
        chosen.append(spec)
    return chosen, errors


def usable_specs(specs: list[MappingSpec]) -> list[MappingSpec]:
    """The specs that become assets: active, valid and uniquely keyed."""
    return _usable(specs)[0]


class CatalogNotReady(RuntimeError):
    pass


def fetch_specs(database_url: str) -> list[MappingSpec]:
    engine = get_engine(database_url)
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("external_system_mapping"):
            raise CatalogNotReady(
                no_catalog_message(
                    redacted_url(database_url),
                    conn,
                    "run `esm db upgrade` (with the same ESM_DATABASE_URL) first",
                )
            )
    Session = session_factory(database_url)
    with Session.begin() as session:
        specs = load_specs(session)
        _, errors = _usable(specs)
        for mapping_id, message in errors.items():
            log.error(f"skipping mapping {mapping_id}: {message}")
            mark_error(session, mapping_id, message)
    return specs


def defs_from_specs(specs: list[MappingSpec], database_url: str) -> dg.Definitions:
    chosen, _ = _usable(specs)
    assets: list[dg.AssetsDefinition] = []
    for spec in chosen:
        assets.append(build_mapping_asset(spec))
    groups, schedules = build_jobs_and_schedules(chosen, database_url)
    health, health_job, health_schedule = build_health_assets(default_start())
    sensors = [
        build_run_failure_sensor(chosen, database_url),
        build_error_state_sensor(database_url),
        build_messages_sensor(database_url),
    ]
    real_time = build_real_time_sensor(groups, database_url)
    if real_time is not None:
        sensors.append(real_time)
    return dg.Definitions(
        assets=[*assets, health],
        jobs=[*(g.job for g in groups), probe_job, health_job, messages_job],
        schedules=[*schedules, health_schedule],
        sensors=sensors,
        resources={
            "catalog": CatalogResource(database_url=database_url),
            "vault": VaultResource(),
            "providers": ProvidersResource(),
        },
    )


class MappingTableLoader(StateBackedDefinitionsLoader[str]):
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    @property
    def defs_key(self) -> str:
        return "esm/external_system_mapping"

    def fetch_state(self) -> str:
        log.info(f"loading mappings from {redacted_url(self.database_url)}")
        return json.dumps([spec.to_dict() for spec in fetch_specs(self.database_url)])

    def defs_from_state(self, state: str) -> dg.Definitions:
        specs = [MappingSpec.from_dict(item) for item in json.loads(state)]
        return defs_from_specs(specs, self.database_url)


def build_definitions(database_url: str) -> dg.Definitions:
    return MappingTableLoader(database_url).build_defs()
