"""The outbound-message job and the sensor that launches it while the queue holds work.

A run per pass, not sends inside the sensor: a pass may wait on a provider's timeout for each of
several messages, far past the 60 s a sensor evaluation may take, and each pass shows in the UI
with what it sent through which route. The sensor asks for a pass only when no other is queued or
running (two passes would be safe, the claims see to that, but the second would find nothing).
No `from __future__ import annotations`: Dagster reads the op's config class from its annotation.
"""

import dagster as dg
import sqlalchemy as sa

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.models import OutboundMessage
from esm_dagster.catalog.types import utcnow
from esm_dagster.orchestration.resources import CatalogResource, ProvidersResource, VaultResource
from esm_dagster.sync.messages import Dispatcher
from esm_dagster.sync.messages.queue import claimable

MESSAGES_JOB = "esm_outbound_messages"
MESSAGES_OP = "esm_send_messages"
MESSAGES_SENSOR = "esm_outbound_messages_sensor"
LEASE_SECONDS = 300.0
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


class MessagesConfig(dg.Config):
    limit: int = 500


@dg.op(name=MESSAGES_OP, description="One pass over the outbound message queue, with fallback routing.")
def _send_messages(
    context: dg.OpExecutionContext,
    config: MessagesConfig,
    catalog: CatalogResource,
    vault: VaultResource,
    providers: ProvidersResource,
) -> dg.Output[int]:
    dispatcher = Dispatcher(
        catalog.database_url,
        vault=vault.vault(),
        provider_builder=providers.build,
        lease_seconds=LEASE_SECONDS,
    )
    report = dispatcher.run(limit=config.limit)
    context.log.info(report.summary())
    return dg.Output(
        report.sent,
        metadata={
            "claimed": dg.MetadataValue.int(report.claimed),
            "sent": dg.MetadataValue.int(report.sent),
            "found_already_sent": dg.MetadataValue.int(report.found),
            "waiting": dg.MetadataValue.int(report.waiting),
            "failed": dg.MetadataValue.int(report.failed),
            "needs_person": dg.MetadataValue.int(report.needs_person),
            "sent_by_mapping": dg.MetadataValue.json(report.by_mapping),
        },
    )


@dg.job(name=MESSAGES_JOB, description="Send queued email / SMS / chat messages, falling back by priority.")
def messages_job() -> None:
    _send_messages()


def waiting_messages(database_url: str) -> int:
    with session_factory(database_url)() as session:
        count = session.scalar(
            sa.select(sa.func.count()).select_from(OutboundMessage).where(claimable(utcnow(), LEASE_SECONDS))
        )
    return int(count or 0)


def build_messages_sensor(database_url: str) -> dg.SensorDefinition:
    @dg.sensor(
        name=MESSAGES_SENSOR,
        job=messages_job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Launches a pass of esm_outbound_messages when messages wait and no pass is under way.",
    )
    def _messages(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        waiting = waiting_messages(database_url)
        if waiting == 0:
            return dg.SensorResult(skip_reason="no message waiting")
        running = context.instance.get_runs_count(dg.RunsFilter(job_name=MESSAGES_JOB, statuses=_ACTIVE))
        if running:
            return dg.SensorResult(skip_reason=f"{waiting} waiting; a pass is already under way")
        return dg.SensorResult(run_requests=[dg.RunRequest(tags={"esm/messages_waiting": str(waiting)})])

    return _messages
