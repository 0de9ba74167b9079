"""One asset per active mapping row, keyed `esm/<system>/<stream>`, wrapping `sync.run_mapping`.

The asset carries its own checks (validation pass rate, completeness), computed from the same
sync report, so they cost no second query and appear on every materialization.

No `from __future__ import annotations` here: Dagster reads the asset function's annotations at
definition time to find its config class and resources.
"""

import datetime as dt
import uuid
from collections.abc import Mapping

import dagster as dg

from esm_dagster.catalog import audit
from esm_dagster.catalog.mappings import MappingSpec
from esm_dagster.orchestration.naming import tag_value
from esm_dagster.orchestration.partitions import cadence_of, partitions_for, window_seconds
from esm_dagster.orchestration.resources import CatalogResource, ProvidersResource, VaultResource
from esm_dagster.proxy.tags import launched_by
from esm_dagster.security.redact import redact_text
from esm_dagster.security.vault import VaultError
from esm_dagster.sync.engine import SyncFailed, SyncReport, run_mapping
from esm_dagster.sync.since import parse_since

# Failures worth a whole-step retry by Dagster. Provider calls are already retried by the
# transport policy (retry_attempts, backoff, Retry-After); retrying the step as well would
# square the attempts and the load on a provider that is down.
STEP_RETRYABLE = {"database"}
DEFAULT_MIN_PASS_RATE = 0.8
PASS_RATE_CHECK = "validation_pass_rate"  # noqa: S105 (a check name)
COMPLETENESS_CHECK = "completeness"
# Freshness by frequency: warn after one period without a sync, fail after two.
PERIODS = {
    "real_time": dt.timedelta(hours=1),
    "hourly": dt.timedelta(hours=1),
    "daily": dt.timedelta(days=1),
    "weekly": dt.timedelta(weeks=1),
}


class SyncRunConfig(dg.Config):
    """Run config of a sync. Defaults: a partition run syncs its window, any other run is incremental."""

    full_refresh: bool = False  # re-read everything the provider has (ignores window and cursor)
    since: str | None = None  # ISO date or datetime: re-read everything created since then
    incremental: bool = False  # on a partition run: use the mapping's cursor instead of the window


# Inferred once, not by every one of a thousand `@asset` decorators: typed `config` and resource
# parameters made Dagster inspect each function and re-derive the same schema (about a third of
# the definitions load at 1,000 mappings, benchmarks/definitions_bench.py).
SYNC_CONFIG_SCHEMA = SyncRunConfig.to_config_schema().as_field()
SYNC_RESOURCE_KEYS = frozenset({"catalog", "vault", "providers"})


def materialization_metadata(report: SyncReport) -> dict[str, dg.MetadataValue]:
    meta: dict[str, dg.MetadataValue] = {
        "records_read": dg.MetadataValue.int(report.records_read),
        "records_written": dg.MetadataValue.int(report.records_written),
        "records_rejected": dg.MetadataValue.int(report.records_rejected),
        "duplicates_skipped": dg.MetadataValue.int(report.duplicates_skipped),
        "pages": dg.MetadataValue.int(report.pages),
        "api_calls": dg.MetadataValue.int(report.api_calls),
        "retries": dg.MetadataValue.int(report.retries),
        "rate_limit_waits": dg.MetadataValue.int(report.rate_limit_waits),
        "rate_limit_wait_seconds": dg.MetadataValue.float(report.rate_limit_wait_seconds),
        "duration_seconds": dg.MetadataValue.float(report.duration_seconds),
        "full_refresh": dg.MetadataValue.bool(report.full_refresh),
        "mapping_id": dg.MetadataValue.text(report.mapping_id),
    }
    if report.latency_p50_ms is not None:
        meta["latency_p50_ms"] = dg.MetadataValue.float(report.latency_p50_ms)
    if report.latency_p95_ms is not None:
        meta["latency_p95_ms"] = dg.MetadataValue.float(report.latency_p95_ms)
    if report.window_end is not None:
        meta["window_end"] = dg.MetadataValue.timestamp(float(report.window_end))
    if report.window_start is not None:
        meta["window_start"] = dg.MetadataValue.timestamp(float(report.window_start))
    if report.cursor_high_water is not None:
        meta["cursor_high_water"] = dg.MetadataValue.timestamp(float(report.cursor_high_water))
    if report.tables:
        meta["rows_by_table"] = dg.MetadataValue.json(report.tables)
    if report.error_class:
        meta["error_class"] = dg.MetadataValue.text(report.error_class)
    if report.two_way:
        for name in (
            "records_pushed",
            "push_failures",
            "local_updates",
            "conflicts_decided",
            "conflicts_open",
        ):
            meta[name] = dg.MetadataValue.int(getattr(report, name))
        meta["records_deleted"] = dg.MetadataValue.int(report.records_deleted)
    return meta


def check_results(report: SyncReport, min_pass_rate: float | None) -> list[dg.AssetCheckResult]:
    threshold = DEFAULT_MIN_PASS_RATE if min_pass_rate is None else min_pass_rate
    read = report.records_read
    pass_rate = 1.0 if read == 0 else report.records_written / read
    accounted = report.records_written + report.records_rejected
    return [
        dg.AssetCheckResult(
            check_name=PASS_RATE_CHECK,
            passed=pass_rate >= threshold,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "pass_rate": dg.MetadataValue.float(round(pass_rate, 4)),
                "threshold": dg.MetadataValue.float(threshold),
                "records_rejected": dg.MetadataValue.int(report.records_rejected),
            },
            description=f"{pass_rate:.1%} of records passed validation (threshold {threshold:.0%})",
        ),
        dg.AssetCheckResult(
            check_name=COMPLETENESS_CHECK,
            passed=accounted == read,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "records_from_provider": dg.MetadataValue.int(read),
                "written_plus_rejected": dg.MetadataValue.int(accounted),
                "missing": dg.MetadataValue.int(read - accounted),
            },
            description="every record the provider returned was either written or quarantined",
        ),
    ]


def _parse_since(value: str | None, timezone: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        return parse_since(value, timezone, name="run config `since`")
    except ValueError as exc:
        # Bad run config is not worth a retry: fail at once, naming the field and the value.
        raise dg.Failure(description=str(exc), allow_retries=False) from None


def freshness_policy(spec: MappingSpec) -> dg.FreshnessPolicy | None:
    period = PERIODS.get(spec.sync_frequency)
    if period is None:
        return None
    return dg.FreshnessPolicy.time_window(fail_window=2 * period, warn_window=period)


def asset_tags(spec: MappingSpec) -> dict[str, str]:
    return {
        "esm/provider": tag_value(spec.provider_name),
        "esm/system_type": tag_value(spec.system_type),
        "esm/sync_frequency": spec.sync_frequency,
        "esm/schedule_group": cadence_of(spec).group,
    }


def build_mapping_asset(spec: MappingSpec) -> dg.AssetsDefinition:
    partitions_def = partitions_for(cadence_of(spec))
    key = dg.AssetKey(spec.asset_key_path)

    @dg.asset(
        key=key,
        group_name=spec.system_slug,
        kinds={tag_value(spec.provider_name)},
        tags=asset_tags(spec),
        owners=[spec.owner_email] if spec.owner_email else None,
        description=(
            f"{spec.system_name} `{spec.stream}` ({spec.provider_name}, {spec.system_type}), "
            f"synced {spec.sync_frequency} in {spec.timezone}. Mapping id `{spec.id}`."
        ),
        metadata={"mapping_id": spec.id, "timezone": spec.timezone},
        partitions_def=partitions_def,
        freshness_policy=freshness_policy(spec),
        check_specs=[
            dg.AssetCheckSpec(PASS_RATE_CHECK, asset=key, description="share of records passing the rules"),
            dg.AssetCheckSpec(
                COMPLETENESS_CHECK, asset=key, description="records from the provider = written + rejected"
            ),
        ],
        retry_policy=dg.RetryPolicy(
            max_retries=spec.retry_attempts,
            delay=2,
            backoff=dg.Backoff.EXPONENTIAL,
            jitter=dg.Jitter.PLUS_MINUS,
        ),
        op_tags={"dagster/priority": str(-spec.priority)},
        pool=f"provider_{tag_value(spec.provider_name)}",
        config_schema=SYNC_CONFIG_SCHEMA,
        required_resource_keys=SYNC_RESOURCE_KEYS,
    )
    def _sync(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        config = SyncRunConfig(**context.op_execution_context.op_config)
        catalog: CatalogResource = context.resources.catalog
        vault: VaultResource = context.resources.vault
        providers: ProvidersResource = context.resources.providers
        window = None
        partition_key = context.partition_key if context.has_partition_key else None
        by_window = not (config.full_refresh or config.since or config.incremental)
        if partition_key is not None and partitions_def is not None and by_window:
            window = window_seconds(partitions_def, partition_key)
        actor = run_actor(context.run.tags, context.run.run_id)
        trigger = sync_trigger(context.run.tags)
        if trigger is not None:  # a person launched it: named when the UI proxy stamped the run
            audit.record_now(
                catalog.database_url,
                trigger,
                actor=actor,
                mapping_id=uuid.UUID(spec.id),
                mapping_name=spec.system_name,
                details={
                    "partition": partition_key,
                    "full_refresh": config.full_refresh,
                    "since": config.since,
                },
            )
        try:
            opened = vault.vault()
        except VaultError as exc:
            # This process's setup, the same on every attempt: retrying only delays the answer.
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        try:
            with audit.acting_as(actor):
                report = run_mapping(
                    catalog.database_url,
                    spec.id,
                    vault=opened,
                    full_refresh=config.full_refresh,
                    since=_parse_since(config.since, spec.timezone),
                    dagster_run_id=context.run.run_id,
                    logger=context.log,
                    provider_builder=providers.build,
                    window=window,
                    partition_key=partition_key,
                )
        except SyncFailed as exc:
            raise dg.Failure(
                description=str(exc),
                metadata=materialization_metadata(exc.report),
                allow_retries=exc.report.error_class in STEP_RETRYABLE,
            ) from None
        if report.recovered:
            context.log.info(f"{spec.system_name!r} recovered: back to active")
            try:
                alert_recovered(catalog.database_url, spec, context.run.run_id)
            except Exception as exc:  # a broken alerts file must not fail a sync that succeeded
                context.log.warning(f"recovered alert not sent: {redact_text(str(exc))}")
        return dg.MaterializeResult(
            metadata=materialization_metadata(report),
            check_results=check_results(report, spec.min_pass_rate),
        )

    return _sync


def sync_trigger(tags: Mapping[str, str]) -> str | None:
    """The audit action of a run a person launched (`sync.backfill`, `sync.manual`), or None for a
    run a schedule or sensor started."""
    if "dagster/backfill" in tags:
        return "sync.backfill"
    if "dagster/schedule_name" in tags or "dagster/sensor_name" in tags:
        return None
    return "sync.manual"


def run_actor(tags: Mapping[str, str], run_id: str) -> audit.Actor:
    """Who the run's audit entries name: the operator the UI proxy stamped on the run
    (`esm/launched_by`), else `dagster` (launched without the proxy, or by a schedule or sensor)."""
    launcher = launched_by(tags)
    if launcher is None:
        return audit.Actor(audit.DAGSTER, None, "dagster", run_id)
    name, role = launcher
    return audit.Actor(name, role, "dagster-ui", run_id)


def alert_recovered(database_url: str, spec: MappingSpec, run_id: str) -> None:
    """The end of an error episode reached by a sync (the probe job alerts its own recoveries)."""
    from esm_dagster.alerts import Alert, AlertDispatcher, channels_from_env

    alert = Alert.mapping_recovered(
        mapping_id=spec.id,
        episode=run_id,
        message="A sync succeeded; the mapping is active again.",
        mapping_name=spec.system_name,
        asset_key="/".join(spec.asset_key_path),
        run_id=run_id,
    )
    AlertDispatcher(database_url, channels_from_env()).send(alert)
