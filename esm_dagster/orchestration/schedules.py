"""Jobs and schedules per cadence group (frequency, timezone, cron, start), selecting assets by tag.

Not one job per row: on Dagster 1.13, 2,000 per-row jobs take 80 s to load and send an 86 MB
snapshot to the UI, against 15 s and 15 MB grouped (DAGSTER_NOTES §8).

A schedule tick asks for the last completed window of its partitions (the 05:00 tick of an
hourly group syncs 04:00-05:00) and selects only the group's mappings that are `active` at that
moment: a mapping in `error` or `maintenance` stays out of scheduled runs until the error-state
sensor's probe (or a person) brings it back, while a person can still launch it by hand.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
from dagster._core.definitions.partitions.context import partition_loading_context

from esm_dagster.catalog.mappings import MappingSpec
from esm_dagster.orchestration.naming import job_name
from esm_dagster.orchestration.partitions import Cadence, cadence_of, partitions_for
from esm_dagster.orchestration.status import runnable_mapping_ids

# A job's runs carry this so sensors can find the mappings of a run without parsing step keys.
GROUP_TAG = "esm/schedule_group"


@dataclass(frozen=True)
class Group:
    cadence: Cadence
    members: tuple[MappingSpec, ...]
    job: dg.UnresolvedAssetJobDefinition


def run_priority(members: Sequence[MappingSpec]) -> str:
    """Dagster runs higher `dagster/priority` first; the seed's priority 1 is the most urgent."""
    return str(-min(m.priority for m in members))


def build_groups(specs: Sequence[MappingSpec]) -> list[Group]:
    by_cadence: dict[Cadence, list[MappingSpec]] = defaultdict(list)
    for spec in specs:
        by_cadence[cadence_of(spec)].append(spec)
    groups = []
    for cadence, members in sorted(by_cadence.items(), key=lambda item: item[0].group):
        tags = {
            GROUP_TAG: cadence.group,
            "esm/sync_frequency": cadence.frequency,
            # Run monitoring (dagster.yaml `run_monitoring`) fails a run that exceeds this.
            "dagster/max_runtime": str(max(m.max_run_seconds for m in members)),
            "dagster/priority": run_priority(members),
        }
        providers = {m.provider_name for m in members}
        if len(providers) == 1:
            tags["esm/provider"] = next(iter(providers))
        job = dg.define_asset_job(
            job_name(cadence.group),
            selection=dg.AssetSelection.tag(GROUP_TAG, cadence.group),
            description=(
                f"Sync the {cadence.frequency} mappings in {cadence.timezone} "
                f"({len(members)}: {', '.join(sorted(m.system_name for m in members))[:300]}). "
                "Launched without a partition it syncs incrementally from each mapping's cursor; "
                "with a partition it syncs exactly that window."
            ),
            tags=tags,
        )
        groups.append(Group(cadence, tuple(members), job))
    return groups


def build_schedule(group: Group, database_url: str) -> dg.ScheduleDefinition | None:
    partitions_def = partitions_for(group.cadence)
    if partitions_def is None:
        return None
    members = group.members
    keys = {m.id: dg.AssetKey(m.asset_key_path) for m in members}

    @dg.schedule(
        name=f"{group.job.name}_schedule",
        job=group.job,
        cron_schedule=partitions_def.get_cron_schedule(),
        execution_timezone=group.cadence.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"{group.cadence.frequency} sync of {len(members)} mappings, {group.cadence.timezone} "
            "time; each tick syncs the window that just closed, skipping mappings not active."
        ),
    )
    def _tick(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        with partition_loading_context(effective_dt=context.scheduled_execution_time):
            partition_key = partitions_def.get_last_partition_key()
        if partition_key is None:
            return dg.SkipReason("no window has closed yet since the start date")
        runnable = runnable_mapping_ids(database_url, list(keys))
        paused = [m.system_name for m in members if m.id not in runnable]
        if not runnable:
            return dg.SkipReason(f"every mapping of the group is paused: {', '.join(paused)}")
        if paused:
            context.log.info(f"not scheduling mappings that are not active: {', '.join(paused)}")
        chosen = [m for m in members if m.id in runnable]
        return dg.RunRequest(
            run_key=partition_key,
            partition_key=partition_key,
            asset_selection=[keys[m.id] for m in chosen],
            tags={"dagster/priority": run_priority(chosen)},
        )

    return _tick


def build_jobs_and_schedules(
    specs: Sequence[MappingSpec], database_url: str
) -> tuple[list[Group], list[dg.ScheduleDefinition]]:
    groups = build_groups(specs)
    schedules = [s for s in (build_schedule(g, database_url) for g in groups) if s is not None]
    return groups, schedules
