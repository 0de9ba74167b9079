"""The integration-health asset: the seed's per-mapping analytics for one day, as a table in the
UI and as rows of `esm_integration_health` for dashboards (computed in `sync.health`)."""

import datetime as dt
import os
from typing import Any

import dagster as dg

from esm_dagster.orchestration.resources import CatalogResource
from esm_dagster.sync.health import compute_health

HEALTH_KEY = dg.AssetKey(["esm", "integration_health"])
HEALTH_JOB = "esm_integration_health_job"
COLUMNS = [
    ("system_name", "string"),
    ("runs", "int"),
    ("availability", "float"),
    ("error_rate", "float"),
    ("errors_by_class", "string"),
    ("latency_p95_ms", "float"),
    ("records_written", "int"),
    ("validation_pass_rate", "float"),
    ("sla_compliant", "bool"),
    ("api_calls", "int"),
    ("api_budget", "int"),
]


def health_timezone() -> str:
    """The day boundary of the health report: `ESM_HEALTH_TIMEZONE`, default UTC."""
    return os.environ.get("ESM_HEALTH_TIMEZONE", "UTC")


def build_health_assets(
    start_date: str,
) -> tuple[dg.AssetsDefinition, Any, Any]:
    # end_offset=1: today's partition exists too, so the health so far can be looked at any time.
    partitions = dg.DailyPartitionsDefinition(start_date=start_date, timezone=health_timezone(), end_offset=1)

    @dg.asset(
        key=HEALTH_KEY,
        group_name="esm_health",
        partitions_def=partitions,
        kinds={"sql"},
        description=(
            "Per mapping and day: availability, error rate by class, p95 latency, records written, "
            "validation pass rate, SLA compliance and API calls against the budget. Rows land in "
            "`esm_integration_health`."
        ),
    )
    def integration_health(
        context: dg.AssetExecutionContext, catalog: CatalogResource
    ) -> dg.MaterializeResult:
        day = dt.date.fromisoformat(context.partition_key)
        rows = compute_health(catalog.database_url, day, health_timezone())
        records = []
        for row in rows:
            values = row.as_dict()
            values["errors_by_class"] = ", ".join(f"{k}: {v}" for k, v in sorted(row.errors_by_class.items()))
            records.append(dg.TableRecord({name: values[name] for name, _ in COLUMNS}))
        rated = [r.availability for r in rows if r.availability is not None]
        return dg.MaterializeResult(
            metadata={
                "health": dg.MetadataValue.table(
                    records=records,
                    schema=dg.TableSchema(columns=[dg.TableColumn(n, t) for n, t in COLUMNS]),
                ),
                "mappings": dg.MetadataValue.int(len(rows)),
                "mean_availability": dg.MetadataValue.float(
                    round(sum(rated) / len(rated), 4) if rated else 1.0
                ),
                "sla_breaches": dg.MetadataValue.int(sum(r.sla_compliant is False for r in rows)),
            }
        )

    job = dg.define_asset_job(HEALTH_JOB, selection=dg.AssetSelection.assets(HEALTH_KEY))

    @dg.schedule(
        name=f"{HEALTH_JOB}_schedule",
        job=job,
        cron_schedule="15 0 * * *",
        execution_timezone=health_timezone(),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Yesterday's integration health, at 00:15 each day.",
    )
    def health_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        yesterday = (context.scheduled_execution_time.date() - dt.timedelta(days=1)).isoformat()
        return dg.RunRequest(run_key=yesterday, partition_key=yesterday)

    return integration_health, job, health_schedule
