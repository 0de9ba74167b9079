"""The health-probe job the error-state sensor launches: one cheap authenticated call per run.

A run per probe, not a call inside the sensor: the data engineer sees each probe, its result and
its log in the UI next to the syncs, and a slow provider cannot stall the sensor daemon.
"""

import dagster as dg

from esm_dagster.alerts import Alert, AlertDispatcher, channels_from_env
from esm_dagster.orchestration.resources import CatalogResource, ProvidersResource, VaultResource
from esm_dagster.sync.probe import probe_mapping

PROBE_JOB = "esm_health_probe"
PROBE_OP = "esm_probe"


class ProbeConfig(dg.Config):
    mapping_id: str


def probe_run_config(mapping_id: str) -> dict[str, object]:
    return {"ops": {PROBE_OP: {"config": {"mapping_id": mapping_id}}}}


@dg.op(name=PROBE_OP, description="One cheap authenticated call; success returns the mapping to active.")
def _probe(
    context: dg.OpExecutionContext,
    config: ProbeConfig,
    catalog: CatalogResource,
    vault: VaultResource,
    providers: ProvidersResource,
) -> dg.Output[bool]:
    result = probe_mapping(
        catalog.database_url,
        config.mapping_id,
        vault=vault.vault(),
        provider_builder=providers.build,
        dagster_run_id=context.run.run_id,
    )
    if not result.ok:
        raise dg.Failure(
            description=f"probe of {result.system_name!r} failed: {result.error}",
            metadata={"error_class": dg.MetadataValue.text(result.error_class or "unknown")},
            allow_retries=False,
        )
    if result.recovered:
        alert = Alert.mapping_recovered(
            mapping_id=result.mapping_id,
            episode=context.run.run_id,
            message=f"The health probe succeeded in {result.seconds}s; the mapping is active again.",
            mapping_name=result.system_name,
            run_id=context.run.run_id,
        )
        AlertDispatcher(catalog.database_url, channels_from_env()).send(alert)
        context.log.info(f"{result.system_name!r} recovered: back to active")
    return dg.Output(
        True,
        metadata={
            "mapping": dg.MetadataValue.text(result.system_name),
            "seconds": dg.MetadataValue.float(result.seconds),
            "recovered": dg.MetadataValue.bool(result.recovered),
        },
    )


@dg.job(name=PROBE_JOB, description="Health probe of one mapping (launched by esm_error_state_sensor).")
def probe_job() -> None:
    _probe()
