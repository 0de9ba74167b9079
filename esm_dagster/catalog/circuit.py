"""The circuit breaker of one mapping, read from the catalog: no state of its own.

A mapping's circuit is *open* when its row is in `error` because of consecutive failed syncs
(`error_count >= sync_config.error_threshold`) and its latest real failure in `esm_sync_run` is
newer than its latest success. It opened at that failure's `finished_at`; for
`sync_config.circuit_cooldown_seconds` after it a sync fails fast (error class `circuit_open`)
without calling the provider. Then it is *half-open*: one trial sync is let through; its success
closes the circuit (the row back to `active`), its failure is a newer failure and so opens it
again with a fresh cool-down.

Everything is derived from the row and the run history, so the engine, the sensors and `esm
mapping list` agree without a migration or a second source of truth. A row put in `error` some
other way (invalid rules, a person, a crash the engine never recorded) has no such failure
history and is not an open circuit: its syncs run as before.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from esm_dagster.catalog.models import ExternalSystemMapping, SyncRun, SyncStatus
from esm_dagster.rules.schema import MappingRules, RulesError, SyncConfig, parse_rules

# The error class of a sync refused by an open circuit: not a failure of the provider, so it never
# counts against the mapping, never opens the circuit again and never alerts.
CIRCUIT_OPEN = "circuit_open"

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class Circuit:
    state: State
    opened_at: dt.datetime | None = None  # finished_at of the failure that (re)opened it
    half_opens_at: dt.datetime | None = None  # opened_at + circuit_cooldown_seconds
    last_failure: str | None = None  # that failure's error message (already redacted)
    cooldown_seconds: int = 0

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    def describe(self) -> str:
        """The status word `esm mapping list` shows next to `error`."""
        if self.state == "open" and self.half_opens_at is not None:
            return f"circuit open until {clock_time(self.half_opens_at)}"
        if self.state == "half_open":
            return "circuit half-open: the next sync is a trial"
        return "circuit closed"


def clock_time(moment: dt.datetime) -> str:
    """To the second: a cool-down of a few minutes shown as HH:MM would look over too early."""
    return moment.astimezone(dt.UTC).strftime("%H:%M:%S UTC")


def sync_config_of(row: ExternalSystemMapping) -> SyncConfig:
    """The row's sync settings, or the defaults when its rules do not validate."""
    try:
        rules: MappingRules = parse_rules(row.mapping_rules)
    except RulesError:
        return SyncConfig()
    return rules.sync


def _real_failure() -> sa.ColumnElement[bool]:
    return sa.and_(
        SyncRun.status == "failed",
        sa.or_(SyncRun.error_class.is_(None), SyncRun.error_class != CIRCUIT_OPEN),
    )


def circuit_of(
    session: Session,
    row: ExternalSystemMapping,
    now: dt.datetime,
    config: SyncConfig | None = None,
) -> Circuit:
    """The circuit of `row` at `now`; `config` defaults to the row's own sync_config."""
    config = config or sync_config_of(row)
    if row.sync_status != SyncStatus.ERROR or (row.error_count or 0) < config.error_threshold:
        return Circuit("closed", cooldown_seconds=config.circuit_cooldown_seconds)
    failure = session.execute(
        sa.select(SyncRun.finished_at, SyncRun.error_message)
        .where(SyncRun.mapping_id == row.id, SyncRun.kind == "sync", SyncRun.finished_at.is_not(None))
        .where(_real_failure())
        .order_by(SyncRun.finished_at.desc())
        .limit(1)
    ).first()
    if failure is None or failure[0] is None:
        return Circuit("closed", cooldown_seconds=config.circuit_cooldown_seconds)
    opened_at: dt.datetime = failure[0]
    message: str | None = failure[1]
    succeeded = session.scalar(
        sa.select(sa.func.max(SyncRun.finished_at)).where(
            SyncRun.mapping_id == row.id, SyncRun.status == "success"
        )
    )
    if succeeded is not None and succeeded >= opened_at:
        return Circuit("closed", cooldown_seconds=config.circuit_cooldown_seconds)
    half_opens_at = opened_at + dt.timedelta(seconds=config.circuit_cooldown_seconds)
    return Circuit(
        "open" if now < half_opens_at else "half_open",
        opened_at=opened_at,
        half_opens_at=half_opens_at,
        last_failure=message,
        cooldown_seconds=config.circuit_cooldown_seconds,
    )


def trial_in_progress(
    session: Session,
    row: ExternalSystemMapping,
    circuit: Circuit,
    now: dt.datetime,
    max_run_seconds: int,
    *,
    exclude: uuid.UUID | None = None,
) -> dt.datetime | None:
    """When the half-open trial already under way started (other than run `exclude`), or None.

    Every sync refused by the open circuit is recorded as failed at once, so a sync still
    `running` that started after the circuit opened is the trial (or a person's forced sync). One
    that has run longer than `max_run_seconds` is taken as dead (killed with its process), so that
    a crash cannot hold the circuit shut for ever.
    """
    if circuit.state != "half_open" or circuit.opened_at is None:
        return None
    started: dt.datetime | None = session.scalar(
        sa.select(sa.func.min(SyncRun.started_at)).where(
            SyncRun.mapping_id == row.id,
            SyncRun.kind == "sync",
            SyncRun.status == "running",
            SyncRun.started_at >= circuit.opened_at,
            SyncRun.started_at > now - dt.timedelta(seconds=max_run_seconds),
            SyncRun.id != exclude if exclude is not None else sa.true(),
        )
    )
    return started
