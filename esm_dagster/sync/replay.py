"""Quarantine replay: run a mapping's open quarantined records through its *current* rules.

After a data engineer fixes the rules (`esm mapping edit --rules`), the records the old rules
refused need not wait for a full refresh: the stored payloads go through the same plan and the
same upsert as a sync (`engine.upsert_accepted`), so a replayed record lands in the row a later
sync would write (no duplicate), and its quarantine row is resolved in the same transaction.
Records still refused get their new errors and `last_seen_at`; `seen_count` counts sightings
from the provider, so a replay leaves it alone.

The payloads were redacted when quarantined (`rules.redaction`: secret-looking keys hold ``***``).
A record whose rules read such a masked value cannot be replayed as it is (it would load the
mask): it is left open and reported, and a sync that re-reads it from the provider
(`esm sync MAPPING --full-refresh`, or `--since`) loads and resolves it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import MappingError, get_mapping, stream_of
from esm_dagster.catalog.models import QuarantineRecord
from esm_dagster.catalog.quarantine import list_quarantine
from esm_dagster.catalog.types import utcnow
from esm_dagster.rules.plan import compile_rules
from esm_dagster.rules.redaction import MASK, is_secret_key
from esm_dagster.rules.schema import RulesError, parse_rules
from esm_dagster.sync.engine import (
    LoadContext,
    SyncReport,
    quarantine_errors,
    source_name,
    target_tables,
    upsert_accepted,
)

log = logging.getLogger("esm_dagster.replay")


@dataclass
class ReplayReport:
    mapping_id: str
    system_name: str
    stream: str
    replayed: int = 0  # open quarantine rows run through the rules
    accepted: int = 0  # loaded and resolved
    still_rejected: int = 0  # errors and last_seen_at updated
    not_replayable: int = 0  # read a masked value: left open
    tables: dict[str, int] = field(default_factory=dict)
    masked: list[dict[str, Any]] = field(default_factory=list)  # {external_id, fields}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def masked_paths(payload: dict[str, Any], paths: tuple[str, ...]) -> list[str]:
    """The source paths whose value (or a parent of it) was masked when the record was quarantined."""
    found = []
    for path in paths:
        value: Any = payload
        for part in path.split("."):
            if isinstance(value, dict) and part in value:
                value = value[part]
                if value == MASK and is_secret_key(part):
                    found.append(path)
                    break
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                break
    return found


def replay_quarantine(url: str, mapping_ref: str, *, logger: logging.Logger | Any = None) -> ReplayReport:
    """Replay the open quarantine rows of one mapping's stream; see the module docstring."""
    logger = logger or log
    with session_factory(url)() as session:
        row = get_mapping(session, mapping_ref)
        try:
            rules = parse_rules(row.mapping_rules)
        except RulesError as exc:
            raise MappingError(f"mapping {row.system_name!r}: mapping_rules.{exc}") from None
        stream = stream_of(row.provider_name, rules)
        items = [q for q, _ in list_quarantine(session, row.id, stream=stream)]
        session.expunge_all()
    report = ReplayReport(str(row.id), row.system_name, stream)
    plan = compile_rules(rules)
    replayable = []
    for item in items:
        masked = masked_paths(item.payload, plan.source_paths)
        if masked:
            report.masked.append({"external_id": item.external_id, "fields": masked})
        else:
            replayable.append(item)
    report.not_replayable = len(report.masked)
    report.replayed = len(replayable)
    if not replayable:
        return report
    sync_report = SyncReport(str(row.id), row.system_name, stream)
    ctx = LoadContext(
        url,
        row.id,
        source_name(row, stream),
        stream,
        rules,
        plan,
        target_tables(url, plan),
        sync_report,
        logger,
    )
    ctx.track_cursor = False
    engine = get_engine(url)
    batch_size = rules.sync.batch_size
    for start in range(0, len(replayable), batch_size):
        batch = replayable[start : start + batch_size]
        result = plan.apply([item.payload for item in batch])
        now = utcnow()
        with engine.begin() as conn:
            written = upsert_accepted(conn, ctx, result, now)
            accepted_ids = [batch[i].id for i in written]
            if accepted_ids:
                conn.execute(
                    sa.update(QuarantineRecord)
                    .where(QuarantineRecord.id.in_(accepted_ids))
                    .values(resolved_at=now)
                )
            for rejection in result.rejected:
                conn.execute(
                    sa.update(QuarantineRecord)
                    .where(QuarantineRecord.id == batch[rejection.index].id)
                    .values(errors=quarantine_errors(rejection), last_seen_at=now)
                )
        report.accepted += len(written)
        report.still_rejected += len(result.rejected)
    report.tables = dict(sync_report.tables)
    logger.info(
        f"replayed {report.replayed} quarantined records of {row.system_name!r}/{stream}: "
        f"{report.accepted} accepted, {report.still_rejected} still rejected, "
        f"{report.not_replayable} not replayable (masked)"
    )
    return report
