"""Sensors: failed runs -> mapping row + alert; mappings in error -> health probes and tasks;
real_time mappings -> a sync when webhook events wait in the inbox or the provider has new events.

Sensors run in the code server, not in a run: everything they decide is written to the catalog
(rows, tasks, alert deliveries), so a restarted daemon repeats nothing. Alerts deduplicate on
their key in `esm_alert`; runs deduplicate on their run key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import re
import time
import uuid
from collections.abc import Sequence

import dagster as dg
import sqlalchemy as sa

from esm_dagster.alerts import Alert, AlertDispatcher, channels_from_env
from esm_dagster.catalog.circuit import CIRCUIT_OPEN, circuit_of
from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.mappings import MappingSpec, record_failure
from esm_dagster.catalog.models import ExternalSystemMapping, SyncRun, SyncStatus
from esm_dagster.catalog.tasks import close_tasks, open_task
from esm_dagster.catalog.types import utcnow
from esm_dagster.orchestration.naming import step_key
from esm_dagster.orchestration.probe_job import PROBE_JOB, probe_run_config
from esm_dagster.orchestration.schedules import Group
from esm_dagster.orchestration.status import runnable_mapping_ids
from esm_dagster.providers.factory import build_provider
from esm_dagster.security.redact import redact_text
from esm_dagster.security.vault import Vault
from esm_dagster.webhooks.inbox import (
    RETENTION,
    claim_new,
    claimed_batches,
    has_event,
    mark_processed,
    next_key,
    prune,
    rekey,
)
from esm_dagster.webhooks.schemes import receives_webhooks, scheme_for

log = logging.getLogger("esm_dagster.sensors")

# How often a mapping in error is probed at most (seconds); the sensor ticks every 30 s.
PROBE_INTERVAL = 300
# A mapping in error for longer than this, with failing probes, gets a task for a person.
STUCK_AFTER = dt.timedelta(days=1)


# "dagster._core.definitions.events.Failure: <our message>": the class path means nothing to the
# person reading the alert or the mapping row.
_DAGSTER_ERROR_PREFIX = re.compile(r"^dagster\._core\.[\w.]+: ")


def without_dagster_prefix(text: str) -> str:
    return _DAGSTER_ERROR_PREFIX.sub("", text.strip())


def _dispatcher(database_url: str) -> AlertDispatcher:
    return AlertDispatcher(database_url, channels_from_env())


# ---- run failures ---------------------------------------------------------------------------------
def failed_mappings(
    instance: dg.DagsterInstance, run: dg.DagsterRun, specs: Sequence[MappingSpec]
) -> tuple[list[MappingSpec], dict[str, str]]:
    """The mappings whose steps failed in `run` (all of its mappings if no step ran), with the
    failure message of each step."""
    by_step = {step_key(s): s for s in specs}
    messages: dict[str, str] = {}
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    for record in records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None or event.step_key not in by_step:
            continue
        data = event.step_failure_data
        text = data.error.message if data is not None and data.error is not None else entry.message
        messages[by_step[event.step_key].id] = without_dagster_prefix(text)
    failed = [s for s in specs if s.id in messages]
    if not failed and not records:
        selected = run.asset_selection or set()
        failed = [s for s in specs if dg.AssetKey(s.asset_key_path) in selected]
    return failed, messages


def build_run_failure_sensor(specs: Sequence[MappingSpec], database_url: str) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name="esm_run_failure_sensor",
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description=(
            "Records a failed sync on its mapping row and alerts once per failure; a sync refused by "
            "an open circuit (error class circuit_open) is neither counted nor alerted."
        ),
    )
    def _on_failure(context: dg.RunFailureSensorContext) -> None:
        run = context.dagster_run
        if run.job_name == PROBE_JOB:
            return  # a failed probe is expected while a mapping is down: no alert storm
        failed, messages = failed_mappings(context.instance, run, specs)
        partition = run.tags.get("dagster/partition")
        run_message = context.failure_event.message or "run failed"
        dispatcher = _dispatcher(database_url)
        Session = session_factory(database_url)
        for spec in failed:
            message = redact_text(messages.get(spec.id) or run_message)
            with Session.begin() as session:
                recorded = session.scalars(
                    sa.select(SyncRun).where(
                        SyncRun.mapping_id == _uuid(spec.id),
                        SyncRun.dagster_run_id == run.run_id,
                        SyncRun.status == "failed",
                    )
                ).first()
                error_class = recorded.error_class if recorded else "orchestration"
                if error_class == CIRCUIT_OPEN:
                    # Refused by the open circuit without a provider call: not a new failure. The
                    # run that opened the circuit alerted already; one alert per refusal would be
                    # the storm the breaker exists to prevent.
                    context.log.info(f"{spec.system_name!r}: run {run.run_id} refused by its open circuit")
                    continue
                if recorded is None:
                    # The engine never saw this failure (crash, timeout, resource error): count it.
                    record_failure(session, spec.id, message, threshold=spec.error_threshold)
                row = session.get(ExternalSystemMapping, _uuid(spec.id))
                state = ""
                if row is not None:
                    circuit = circuit_of(session, row, utcnow())
                    opened = f" ({circuit.describe()})" if circuit.is_open else ""
                    state = f" The mapping's status is now {row.sync_status}{opened}."
            alert = Alert.run_failure(
                run_id=run.run_id,
                message=message + state,
                mapping_id=spec.id,
                mapping_name=spec.system_name,
                asset_key="/".join(spec.asset_key_path),
                partition=partition,
                error_class=error_class,
            )
            alert = dataclasses.replace(alert, dedup_key=f"run_failure:{run.run_id}:{spec.id}")
            results = dispatcher.send(alert)
            if results:
                context.log.info(f"alerted {spec.system_name!r} failure of run {run.run_id}: {results}")
            else:
                context.log.info(
                    f"failure of {spec.system_name!r} in run {run.run_id} recorded; no alert channel "
                    "is configured (ESM_ALERTS_FILE)"
                )

    return _on_failure


# ---- mappings in error: probes and tasks ----------------------------------------------------------
def build_error_state_sensor(database_url: str) -> dg.SensorDefinition:
    @dg.sensor(
        name="esm_error_state_sensor",
        job_name=PROBE_JOB,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Mappings in `error` get a health probe every few minutes once their circuit's cool-down "
            "is over (success returns them to `active`); those needing a person get a task. "
            "Schedules skip mappings not active."
        ),
    )
    def _error_state(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        now = utcnow()
        requests: list[dg.RunRequest] = []
        notes: list[str] = []
        Session = session_factory(database_url)
        with Session.begin() as session:
            rows = session.scalars(
                sa.select(ExternalSystemMapping).where(ExternalSystemMapping.is_active.is_(True))
            ).all()
            last_probe = dict(
                session.execute(
                    sa.select(SyncRun.mapping_id, sa.func.max(SyncRun.started_at))
                    .where(SyncRun.kind == "probe")
                    .group_by(SyncRun.mapping_id)
                ).all()
            )
            last_success = dict(
                session.execute(
                    sa.select(SyncRun.mapping_id, sa.func.max(SyncRun.finished_at))
                    .where(SyncRun.status == "success")
                    .group_by(SyncRun.mapping_id)
                ).all()
            )
            for row in rows:
                if row.sync_status == SyncStatus.MAINTENANCE:
                    notes.append(f"{row.system_name}: maintenance (schedules paused)")
                    continue
                if row.sync_status != SyncStatus.ERROR:
                    closed = close_tasks(
                        session, row.id, "mapping back to active", reasons=["stuck_in_error"]
                    )
                    if closed:
                        context.log.info(f"closed {closed} task(s) of {row.system_name!r}: recovered")
                    continue
                since_success = last_success.get(row.id) or row.created_at
                if now - since_success > STUCK_AFTER:
                    open_task(session, row, "stuck_in_error", row.last_error_message or "")
                circuit = circuit_of(session, row, now)
                if circuit.is_open:  # the cool-down holds for probes too
                    notes.append(f"{row.system_name}: in error, {circuit.describe()}")
                    continue
                probed = last_probe.get(row.id)
                if probed is not None and (now - probed).total_seconds() < PROBE_INTERVAL:
                    notes.append(
                        f"{row.system_name}: in error, probed {int((now - probed).total_seconds())}s ago"
                    )
                    continue
                bucket = int(time.time() // PROBE_INTERVAL)
                requests.append(
                    dg.RunRequest(
                        run_key=f"probe:{row.id}:{bucket}",
                        run_config=probe_run_config(str(row.id)),
                        tags={"esm/mapping_id": str(row.id), "esm/probe": "true"},
                    )
                )
        if requests:
            return dg.SensorResult(run_requests=requests)
        return dg.SensorResult(skip_reason="; ".join(notes) or "no mapping in error")

    return _error_state


# ---- real_time mappings ---------------------------------------------------------------------------
# The tag that ties a run to the webhook batch it syncs: the sensor finds a batch's runs by it.
WEBHOOK_BATCH_TAG = "esm/webhook_batch"
_FAILED = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
# A webhook-fed mapping's provider is still polled this often (seconds), one `latest_event` call:
# a delivery the provider gave up on (or never sent) shows as a newest event missing from the inbox.
RECONCILE_INTERVAL = 300


def _reconciled(mapping_id: str) -> str:
    return f"{mapping_id}:reconciled_at"


def build_real_time_sensor(groups: Sequence[Group], database_url: str) -> dg.SensorDefinition | None:
    members = [(g, m) for g in groups if g.cadence.frequency == "real_time" for m in g.members]
    if not members:
        return None

    @dg.sensor(
        name="esm_real_time_sensor",
        jobs=[g.job for g in groups if g.cadence.frequency == "real_time"],
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Syncs each real_time mapping when its provider has news: webhook events waiting in the "
            "inbox (`esm webhooks serve`), run key from their event ids, marked processed once that "
            "run succeeded; mappings without a webhook key are polled for their newest event "
            "(Stripe /v1/events) instead, run key the event id; webhook-fed ones are polled every "
            "5 minutes to catch a newest event that never arrived as a webhook."
        ),
    )
    def _real_time(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cursor: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        runnable = runnable_mapping_ids(database_url, [m.id for _, m in members])
        requests: list[dg.RunRequest] = []
        problems: list[str] = []
        for group, spec in members:
            if spec.id not in runnable:
                continue
            try:
                requests += inbox_requests(context, database_url, group, spec)
                fed = webhook_fed(database_url, spec.id)
                if fed and time.time() - float(cursor.get(_reconciled(spec.id), 0)) < RECONCILE_INTERVAL:
                    continue  # pushed: its inbox is its change feed between reconciliations
                newest = newest_event(database_url, spec.id)
                missed = fed and newest is not None and not has_event(database_url, spec.id, newest)
            except Exception as exc:  # one broken mapping must not stop the others
                problems.append(f"{spec.system_name}: {redact_text(str(exc))}")
                continue
            marker = newest or "none"
            if fed:
                cursor[_reconciled(spec.id)] = str(int(time.time()))
                if not missed:  # the newest event came as a webhook (or there is none)
                    cursor[spec.id] = marker
                    continue
            if cursor.get(spec.id) == marker:
                continue
            cursor[spec.id] = marker
            tags = {"esm/mapping_id": spec.id, "esm/trigger_event": marker}
            if fed:
                tags["esm/reconcile"] = "missed_webhook"
                context.log.info(f"{spec.system_name!r}: newest event {marker} never came as a webhook")
            requests.append(
                dg.RunRequest(
                    run_key=f"{spec.id}:{marker}",
                    job_name=group.job.name,
                    asset_selection=[dg.AssetKey(spec.asset_key_path)],
                    tags=tags,
                )
            )
        with session_factory(database_url).begin() as session:
            pruned = prune(session, utcnow())
        if pruned:
            context.log.info(
                f"deleted {pruned} webhook inbox event(s) processed over {RETENTION.days} days ago"
            )
        for problem in problems:
            context.log.warning(f"real_time poll failed: {problem}")
        skip = None if requests else ("; ".join(problems) or "no new events")
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor), skip_reason=skip)

    return _real_time


def inbox_requests(
    context: dg.SensorEvaluationContext, database_url: str, group: Group, spec: MappingSpec
) -> list[dg.RunRequest]:
    """The runs this mapping's webhook inbox needs now.

    Events are marked processed when a run that covers them has *succeeded*, not when it is
    requested: a request can still be lost (the daemon stops before creating the run) and a run
    can fail, and either would drop the events if they were marked already. Until then each tick
    asks again under the same run key, which Dagster launches at most once; a batch whose runs
    all failed moves to a new key and is asked for again.
    """
    requests: list[dg.RunRequest] = []

    def ask(key: str, count: int) -> None:
        requests.append(
            dg.RunRequest(
                run_key=key,
                job_name=group.job.name,
                asset_selection=[dg.AssetKey(spec.asset_key_path)],
                tags={"esm/mapping_id": spec.id, WEBHOOK_BATCH_TAG: key, "esm/webhook_events": str(count)},
            )
        )

    with session_factory(database_url).begin() as session:
        for key, count in claimed_batches(session, spec.id).items():
            runs = context.instance.get_runs(filters=dg.RunsFilter(tags={WEBHOOK_BATCH_TAG: key}))
            if any(run.status == dg.DagsterRunStatus.SUCCESS for run in runs):
                done = mark_processed(session, spec.id, key, utcnow())
                context.log.info(f"{spec.system_name!r}: {done} webhook event(s) synced by batch {key}")
            elif runs and all(run.status in _FAILED for run in runs):
                new_key = next_key(key)
                rekey(session, spec.id, key, new_key)
                ask(new_key, count)
            elif not runs:
                ask(key, count)  # asked before but not launched yet: the same key launches once
        claimed = claim_new(session, spec.id)
        if claimed is not None:
            ask(*claimed)
    return requests


def webhook_fed(database_url: str, mapping_id: str) -> bool:
    """Whether the mapping's provider signs webhooks and its key is in the mapping's credentials."""
    with session_factory(database_url)() as session:
        row = session.get(ExternalSystemMapping, _uuid(mapping_id))
        if row is None or scheme_for(row.provider_name) is None:
            return False
        stored, name, provider = row.credentials, row.system_name, row.provider_name
    return receives_webhooks(provider, Vault.from_env().decrypt(stored, mapping=repr(name)))


def newest_event(database_url: str, mapping_id: str) -> str | None:
    """The id of the provider's newest event for this mapping (one authenticated call)."""
    with session_factory(database_url)() as session:
        row = session.get(ExternalSystemMapping, _uuid(mapping_id))
        if row is None:
            return None
        session.expunge(row)
    credentials = Vault.from_env().decrypt(row.credentials, mapping=repr(row.system_name))
    provider = build_provider(row, credentials, catalog_url=database_url)
    try:
        latest = provider.latest_event()
    finally:
        provider.close()
    return None if latest is None else latest[0]


def _uuid(value: str) -> uuid.UUID:
    return uuid.UUID(value)
