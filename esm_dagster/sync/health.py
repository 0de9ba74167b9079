"""Integration health per mapping and day: the seed's analytics, computed from `esm_sync_run`.

availability   share of successful syncs and probes
error rate     failed / all, and failures by error class
p95 latency    the worst per-run p95 request latency of the day
records/day    written (sync speed), and validation pass rate (data quality)
SLA            every moment of the day was within one sync period (plus half a period of grace)
               of a successful sync
API calls      used, against the rules' budget (requests_per_minute x minutes in the day)
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, cast
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from esm_dagster.catalog.circuit import CIRCUIT_OPEN
from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import load_specs
from esm_dagster.catalog.models import ExternalSystemMapping, IntegrationHealth, SyncRun
from esm_dagster.catalog.types import utcnow
from esm_dagster.sync.dialect import upsert_statement

PERIODS = {
    "real_time": dt.timedelta(hours=1),
    "hourly": dt.timedelta(hours=1),
    "daily": dt.timedelta(days=1),
    "weekly": dt.timedelta(weeks=1),
}


@dataclass
class HealthRow:
    mapping_id: str
    system_name: str
    day: dt.date
    runs: int = 0
    successes: int = 0
    availability: float | None = None
    errors_by_class: dict[str, int] = field(default_factory=dict)
    error_rate: float | None = None
    latency_p95_ms: float | None = None
    records_written: int = 0
    records_rejected: int = 0
    validation_pass_rate: float | None = None
    sla_compliant: bool | None = None
    api_calls: int = 0
    api_budget: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def day_bounds(day: dt.date, timezone: str) -> tuple[dt.datetime, dt.datetime]:
    zone = ZoneInfo(timezone)
    start = dt.datetime.combine(day, dt.time(), zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def compute_health(url: str, day: dt.date, timezone: str = "UTC") -> list[HealthRow]:
    """One row per mapping (active or not) for `day` in `timezone`, and upsert them."""
    start, end = day_bounds(day, timezone)
    Session = session_factory(url)
    with Session() as session:
        specs = load_specs(session)
        runs = session.scalars(
            sa.select(SyncRun).where(SyncRun.started_at >= start, SyncRun.started_at < end)
        ).all()
        last_before = dict(
            session.execute(
                sa.select(SyncRun.mapping_id, sa.func.max(SyncRun.finished_at))
                .where(SyncRun.kind == "sync", SyncRun.status == "success", SyncRun.finished_at < start)
                .group_by(SyncRun.mapping_id)
            ).all()
        )
        created = dict(
            session.execute(sa.select(ExternalSystemMapping.id, ExternalSystemMapping.created_at)).all()
        )
    by_mapping: dict[str, list[SyncRun]] = {}
    for run in runs:
        by_mapping.setdefault(str(run.mapping_id), []).append(run)
    rows = []
    for spec in specs:
        mine = by_mapping.get(spec.id, [])
        row = HealthRow(spec.id, spec.system_name, day)
        row.runs = len(mine)
        row.successes = sum(r.status == "success" for r in mine)
        row.errors_by_class = dict(Counter(r.error_class or "unknown" for r in mine if r.status == "failed"))
        # A run the open circuit refused never reached the provider: it is listed by class above
        # but is no attempt, so it neither lowers availability nor raises the error rate.
        failures = [r for r in mine if r.status == "failed" and r.error_class != CIRCUIT_OPEN]
        finished = [r for r in mine if r.status == "success"] + failures
        if finished:
            row.availability = round(row.successes / len(finished), 4)
            row.error_rate = round(len(failures) / len(finished), 4)
        latencies = [r.latency_p95_ms for r in mine if r.latency_p95_ms is not None]
        row.latency_p95_ms = max(latencies) if latencies else None
        syncs = [r for r in mine if r.kind == "sync"]
        row.records_written = sum(r.records_written for r in syncs)
        row.records_rejected = sum(r.records_rejected for r in syncs)
        seen = row.records_written + row.records_rejected
        row.validation_pass_rate = round(row.records_written / seen, 4) if seen else None
        row.api_calls = sum(r.api_calls for r in mine)
        if spec.requests_per_minute:
            row.api_budget = spec.requests_per_minute * int((end - start).total_seconds() // 60)
        period = PERIODS.get(spec.sync_frequency)
        if period is not None and spec.is_active:
            successes = sorted(
                r.finished_at for r in syncs if r.status == "success" and r.finished_at is not None
            )
            mapping_id = uuid.UUID(spec.id)
            # Never synced before the day: the clock starts when the mapping was created.
            anchor = last_before.get(mapping_id) or max(start, created.get(mapping_id) or start)
            row.sla_compliant = sla_met(anchor, successes, start, min(end, utcnow()), period)
        rows.append(row)
    _store(url, rows)
    return rows


def sla_met(
    anchor: dt.datetime | None,
    successes: list[dt.datetime],
    start: dt.datetime,
    end: dt.datetime,
    period: dt.timedelta,
) -> bool:
    """No moment in [start, end) was more than 1.5 periods after the last successful sync.

    `anchor` is the last success before the day; without one the clock starts at `start`.
    """
    allowed = period * 1.5
    last = anchor if anchor is not None else start
    for moment in [*successes, end]:
        if moment - last > allowed:
            return False
        last = max(last, moment)
    return True


def _store(url: str, rows: list[HealthRow]) -> None:
    if not rows:
        return
    engine = get_engine(url)
    table = cast(sa.Table, IntegrationHealth.__table__)
    now = utcnow()
    values = []
    for row in rows:
        data = row.as_dict()
        data["mapping_id"] = uuid.UUID(row.mapping_id)
        data["computed_at"] = now
        values.append(data)
    columns = [c for c in values[0] if c not in ("mapping_id", "day")]
    stmt = upsert_statement(engine.dialect.name, table, ["mapping_id", "day"], columns)
    with engine.begin() as conn:
        conn.execute(stmt, values)
