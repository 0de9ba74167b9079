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
from esm_dagster.orchestration.assets import build_mapping_asset
from esm_dagster.orchestration.resources import CatalogResource, ProvidersResource, VaultResource
from esm_dagster.orchestration.schedules import build_jobs_and_schedules

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


class CatalogNotReady(RuntimeError):
    pass


def fetch_specs(database_url: str) -> list[MappingSpec]:
    engine = get_engine(database_url)
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("external_system_mapping"):
            raise CatalogNotReady(
                f"the catalog {redacted_url(database_url)} has no external_system_mapping table: "
                "run `esm db upgrade` (with the same ESM_DATABASE_URL) first"
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
    assets = [build_mapping_asset(spec) for spec in chosen]
    jobs, schedules = build_jobs_and_schedules(chosen)
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=schedules,
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
