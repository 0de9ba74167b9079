"""One asset per active mapping row, keyed `esm/<system>/<stream>`, wrapping `sync.run_mapping`.

No `from __future__ import annotations` here: Dagster reads the asset function's annotations at
definition time to find its config class and resources.
"""

import datetime as dt

import dagster as dg

from esm_dagster.catalog.mappings import MappingSpec
from esm_dagster.orchestration.naming import schedule_group, tag_value
from esm_dagster.orchestration.resources import CatalogResource, ProvidersResource, VaultResource
from esm_dagster.sync.engine import SyncFailed, SyncReport, run_mapping

RETRYABLE = {"timeout", "rate_limit", "server", "network", "database"}


class SyncRunConfig(dg.Config):
    """Run config of a manual sync: incremental by default."""

    full_refresh: bool = False
    since: str | None = None  # ISO date or datetime: re-read everything created since then


def materialization_metadata(report: SyncReport) -> dict[str, dg.MetadataValue]:
    meta: dict[str, dg.MetadataValue] = {
        "records_read": dg.MetadataValue.int(report.records_read),
        "records_written": dg.MetadataValue.int(report.records_written),
        "records_rejected": dg.MetadataValue.int(report.records_rejected),
        "pages": dg.MetadataValue.int(report.pages),
        "duration_seconds": dg.MetadataValue.float(report.duration_seconds),
        "full_refresh": dg.MetadataValue.bool(report.full_refresh),
        "mapping_id": dg.MetadataValue.text(report.mapping_id),
    }
    if report.window_end is not None:
        meta["window_end"] = dg.MetadataValue.timestamp(float(report.window_end))
    if report.window_start is not None:
        meta["window_start"] = dg.MetadataValue.timestamp(float(report.window_start))
    if report.tables:
        meta["rows_by_table"] = dg.MetadataValue.json(report.tables)
    if report.error_class:
        meta["error_class"] = dg.MetadataValue.text(report.error_class)
    return meta


def _parse_since(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    moment = dt.datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def build_mapping_asset(spec: MappingSpec) -> dg.AssetsDefinition:
    tags = {
        "esm/provider": tag_value(spec.provider_name),
        "esm/system_type": tag_value(spec.system_type),
        "esm/sync_frequency": spec.sync_frequency,
        "esm/schedule_group": schedule_group(spec.sync_frequency, spec.timezone),
    }

    @dg.asset(
        key=spec.asset_key_path,
        group_name=spec.system_slug,
        kinds={tag_value(spec.provider_name)},
        tags=tags,
        owners=[spec.owner_email] if spec.owner_email else None,
        description=(
            f"{spec.system_name} `{spec.stream}` ({spec.provider_name}, {spec.system_type}), "
            f"synced {spec.sync_frequency} in {spec.timezone}. Mapping id `{spec.id}`."
        ),
        metadata={"mapping_id": spec.id, "timezone": spec.timezone},
        retry_policy=dg.RetryPolicy(
            max_retries=spec.retry_attempts,
            delay=2,
            backoff=dg.Backoff.EXPONENTIAL,
            jitter=dg.Jitter.PLUS_MINUS,
        ),
        op_tags={"dagster/priority": str(spec.priority)},
        pool=f"provider_{tag_value(spec.provider_name)}",
    )
    def _sync(
        context: dg.AssetExecutionContext,
        config: SyncRunConfig,
        catalog: CatalogResource,
        vault: VaultResource,
        providers: ProvidersResource,
    ) -> dg.MaterializeResult:
        try:
            report = run_mapping(
                catalog.database_url,
                spec.id,
                vault=vault.vault(),
                full_refresh=config.full_refresh,
                since=_parse_since(config.since),
                dagster_run_id=context.run.run_id,
                logger=context.log,
                provider_builder=providers.build,
            )
        except SyncFailed as exc:
            raise dg.Failure(
                description=str(exc),
                metadata=materialization_metadata(exc.report),
                allow_retries=exc.report.error_class in RETRYABLE,
            ) from None
        return dg.MaterializeResult(metadata=materialization_metadata(report))

    return _sync
