"""The outbound-message job and sensor on a real Dagster instance, against loopback emulators."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest

from esm_dagster.catalog.models import MessageStatus
from esm_dagster.orchestration.loader import defs_from_specs
from esm_dagster.orchestration.messages_job import MESSAGES_JOB, MESSAGES_SENSOR
from esm_dagster.sandbox.telegram import TelegramEmulator
from esm_dagster.sandbox.twilio import TwilioEmulator
from esm_dagster_tests.sync.message_helpers import (
    MESSAGES_PATH,
    mapping_id,
    messages,
    queue,
    register_routes,
    telegram_emulator,
    twilio_emulator,
)


@pytest.fixture
def twilio() -> Iterator[TwilioEmulator]:
    with twilio_emulator() as em:
        yield em


@pytest.fixture
def telegram() -> Iterator[TelegramEmulator]:
    with telegram_emulator() as em:
        yield em


@pytest.fixture
def catalog(db_url: str, fernet_key: str, twilio: TwilioEmulator, telegram: TelegramEmulator) -> str:
    return register_routes(db_url, twilio, telegram)


def test_the_sensor_launches_a_pass_that_falls_back_and_records_its_routes(
    catalog: str, twilio: TwilioEmulator, telegram: TelegramEmulator
) -> None:
    defs = defs_from_specs([], catalog)
    job = defs.resolve_job_def(MESSAGES_JOB)
    sensor = defs.resolve_sensor_def(MESSAGES_SENSOR)
    instance = dg.DagsterInstance.ephemeral()
    idle = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    assert idle.run_requests == [] and idle.skip_message == "no message waiting"

    queue(catalog, telegram, 4)
    tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    assert tick.run_requests is not None and len(tick.run_requests) == 1
    assert tick.run_requests[0].tags["esm/messages_waiting"] == "4"

    twilio.faults.rate_limit_next(2, retry_after=None, path=MESSAGES_PATH)  # the first two go to Telegram
    result = job.execute_in_process(instance=instance, tags=tick.run_requests[0].tags)
    assert result.success
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.step_output_data.metadata  # the pass's figures, as the UI shows them
    assert metadata["sent"].value == 4 and metadata["waiting"].value == 0
    assert metadata["sent_by_mapping"].value == {"Club Bot SMS fallback": 2, "Club SMS": 2}

    sms, bot = mapping_id(catalog, "club sms/messages"), mapping_id(catalog, "club bot sms fallback/updates")
    rows = messages(catalog)
    assert [r.routed_mapping_id for r in rows] == [bot, bot, sms, sms]
    assert {r.status for r in rows} == {MessageStatus.SENT.value}
    assert len(telegram.sent_messages()) == 2

    after = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    assert after.run_requests == [] and after.skip_message == "no message waiting"


def test_no_second_pass_while_one_is_under_way(catalog: str, telegram: TelegramEmulator) -> None:
    instance = dg.DagsterInstance.ephemeral()
    defs = defs_from_specs([], catalog)
    sensor = defs.resolve_sensor_def(MESSAGES_SENSOR)
    queue(catalog, telegram, 1)
    instance.create_run_for_job(defs.resolve_job_def(MESSAGES_JOB), status=dg.DagsterRunStatus.STARTED)
    tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    assert tick.run_requests == [] and "already under way" in (tick.skip_message or "")
