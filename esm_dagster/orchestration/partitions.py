"""Time-window partitions from `sync_frequency`, in the mapping's own timezone.

Each partition is one window of the provider's cursor field (Stripe `created[gte]`/`created[lt]`),
so a backfill of a date range fetches exactly that range and re-running a partition rewrites the
same rows. Windows come from Dagster's partitions definition, which walks wall-clock time in the
zone: the day clocks fall back has 25 hourly windows, the day they spring forward 23, and
Asia/Kolkata's hours start at local :00 (UTC :30).

Mappings that share (frequency, timezone, cron, start date) share one partitions definition, so
they can share one job and one schedule; a differing `cron` or `start_date` makes its own group.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import dagster as dg

from esm_dagster.catalog.mappings import MappingSpec
from esm_dagster.orchestration.naming import tag_value

PARTITIONED = ("hourly", "daily", "weekly")
FORMATS = {"hourly": "%Y-%m-%d-%H:%M", "daily": "%Y-%m-%d", "weekly": "%Y-%m-%d"}
# The first window when a mapping gives no `sync_config.start_date` (override: ESM_PARTITIONS_START).
DEFAULT_START = "2026-01-01"


@dataclass(frozen=True, order=True)
class Cadence:
    """What makes two mappings' partitions identical: the key of a job/schedule group."""

    frequency: str
    timezone: str
    cron: str | None = None
    start_date: str | None = None

    @property
    def partitioned(self) -> bool:
        return self.frequency in PARTITIONED

    @property
    def group(self) -> str:
        """The `esm/schedule_group` tag value: readable, unique per cadence, tag-safe."""
        parts = [self.frequency, self.timezone.replace("/", ".")]
        if self.cron:
            parts.append("cron_" + self.cron.replace(" ", "_").replace("*", "x").replace("/", "every"))
        if self.start_date:
            parts.append("from_" + self.start_date)
        return tag_value("__".join(parts))


def cadence_of(spec: MappingSpec) -> Cadence:
    return Cadence(spec.sync_frequency, spec.timezone, spec.cron, spec.start_date)


def default_start() -> str:
    return os.environ.get("ESM_PARTITIONS_START", DEFAULT_START)


def partitions_for(cadence: Cadence) -> dg.TimeWindowPartitionsDefinition | None:
    """The partitions of a cadence, or None for real_time and manual mappings."""
    if not cadence.partitioned:
        return None
    start = dt.date.fromisoformat(cadence.start_date or default_start())
    tz = cadence.timezone
    if cadence.cron:
        fmt = FORMATS[cadence.frequency]
        return dg.TimeWindowPartitionsDefinition(
            cron_schedule=cadence.cron, start=start.strftime(fmt), timezone=tz, fmt=fmt
        )
    if cadence.frequency == "hourly":
        return dg.HourlyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d-%H:%M"), timezone=tz)
    if cadence.frequency == "daily":
        return dg.DailyPartitionsDefinition(start_date=start.isoformat(), timezone=tz)
    # Weekly windows start on Monday, the club's week (Dagster's default is Sunday).
    return dg.WeeklyPartitionsDefinition(start_date=start.isoformat(), timezone=tz, day_offset=1)


def window_seconds(partitions_def: dg.PartitionsDefinition, partition_key: str) -> tuple[int, int]:
    """The [start, end) of one partition as unix seconds: what the provider is asked for."""
    assert isinstance(partitions_def, dg.TimeWindowPartitionsDefinition)
    window = partitions_def.time_window_for_partition_key(partition_key)
    return int(window.start.timestamp()), int(window.end.timestamp())
