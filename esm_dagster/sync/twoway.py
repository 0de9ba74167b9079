"""One round of a `bidirectional` or `outbound` mapping: read, merge field by field, write both ways.

The round reads the provider's whole stream (which is also the id list that catches deletes the
stream never announced), compares every record three ways with the internal row and the shadow
of the last agreement (`sync.changes`), updates the internal rows, pushes what the provider must
take through `sync.outbound.write_records`, and only then moves the shadow to the new agreement.
Because the shadow holds exactly what both sides were told, a write of ours that comes back on the
next read equals the shadow and is not a change: the pair is at a fixed point after one round.

A read that fails on any page aborts the round before anything is applied, so a listing with a
hole in it can never be taken for deletions. A listing that would delete more than
`sync_config.max_delete_share` of the known records deletes nothing and fails the run.

An `outbound` mapping does not read the provider: the provider is taken to hold the last agreement.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine
from esm_dagster.catalog.models import SyncConflict, SyncShadow
from esm_dagster.catalog.types import utcnow
from esm_dagster.providers.base import Provider
from esm_dagster.rules.errors import RulesError
from esm_dagster.rules.inverse import InverseError, to_provider
from esm_dagster.rules.schema import FieldMapping, MappingRules, OutboundConfig
from esm_dagster.sync.changes import Merge, Side, canonical, canonical_fields, digest, merge
from esm_dagster.sync.frames import frame_to_rows
from esm_dagster.sync.outbound import idempotency_key, write_records
from esm_dagster.sync.repeats import lookup
from esm_dagster.sync.target_tables import ensure_columns, row_id, writable_table

_CONFLICTS = cast(sa.Table, SyncConflict.__table__)
_SHADOWS = cast(sa.Table, SyncShadow.__table__)
DELETE_COLUMNS = {"is_deleted": "boolean", "deleted_at": "timestamp"}


class RoundFailed(RuntimeError):
    """A round that applied what it could but must not count as a success (message names why).

    `error_class` is the first failed push's (`auth` after a 401 opens a credentials task like any
    sync), else `validation` (a refused reconciliation, a value that cannot be written back).
    """

    def __init__(self, message: str, error_class: str = "validation") -> None:
        super().__init__(message)
        self.error_class = error_class


def outbound_config(rules: MappingRules) -> OutboundConfig:
    if rules.sync.outbound is None:
        raise RulesError(
            f"sync_config.outbound: required when sync_direction is {rules.sync.sync_direction!r} "
            '(the writes that push internal changes, e.g. {"create": "create_customer", '
            '"update": "update_customer"})'
        )
    return rules.sync.outbound


def is_deletion(record: Mapping[str, Any]) -> bool:
    """A record the provider marks as deleted or archived rather than omitting it.

    Stripe answers `{"deleted": true}` for a deleted customer; HubSpot's archived objects carry
    `archived: true`; a Mailchimp member archived from the audience has `status: "archived"`.
    """
    return (
        record.get("deleted") is True or record.get("archived") is True or record.get("status") == "archived"
    )


def archived_stream(provider: Provider, stream: str) -> str | None:
    """The provider's stream of archived records of `stream` (`<stream>_archived`), if it has one.

    HubSpot and Mailchimp leave archived records out of the main listing and list them apart; a
    record there is a deletion, said outright rather than inferred from a missing id.
    """
    name = f"{stream}_archived"
    return name if any(spec.name == name for spec in provider.streams()) else None


def _moment(value: Any) -> dt.datetime | None:
    """A provider's modification time: unix seconds or milliseconds, or ISO 8601 text."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
        number = float(value)
        if number > 10**11:  # milliseconds
            number /= 1000
        return dt.datetime.fromtimestamp(number, dt.UTC)
    try:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def python_value(f: FieldMapping, value: Any) -> Any:
    """A canonical value as the Python value its column binds."""
    if value is None:
        return None
    if f.type in ("money", "decimal"):
        return Decimal(str(value))
    if f.type == "integer":
        return int(Decimal(str(value)))
    if f.type == "timestamp":
        moment = dt.datetime.fromisoformat(str(value))
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    if f.type == "date":
        return dt.date.fromisoformat(str(value))
    if f.type == "boolean":
        return bool(value)
    return str(value)


@dataclass
class ExternalRecord:
    fields: dict[str, Any]  # canonical, by column
    modified_at: dt.datetime | None


@dataclass
class InternalRow:
    key: uuid.UUID
    external_id: str | None
    fields: dict[str, Any]  # canonical, by column
    modified_at: dt.datetime | None
    deleted: bool


@dataclass
class _Push:
    """One record the provider must take, and what to remember once it has."""

    write: str
    record: dict[str, Any]
    key: str
    row: uuid.UUID
    external_id: str | None  # None: a create, the provider assigns it
    agreed: dict[str, Any]
    version: int
    internal_at: dt.datetime | None
    external_at: dt.datetime | None


def _check_writes(provider: Provider, outbound: OutboundConfig) -> None:
    for where, name in (("create", outbound.create), ("update", outbound.update)):
        if name is None:
            continue
        try:
            provider.write_spec(name)
        except ValueError as exc:
            raise RulesError(f"sync_config.outbound.{where}: {exc}") from None


def _single_table(rules: MappingRules) -> str:
    tables = list(rules.tables())
    if len(tables) != 1:
        raise RulesError(
            f"field_mappings: a two-way mapping writes one table, these map to {', '.join(tables)}"
        )
    return tables[0]


def run_round(ctx: Any, provider: Provider, *, now: dt.datetime | None = None) -> None:
    """Run one round for `ctx` (an `engine.LoadContext`); counts go to `ctx.report`.

    Raises `RoundFailed` after committing what could be applied when a push failed or a
    reconciliation was refused, so the run is recorded as failed and the person sees why.
    """
    rules: MappingRules = ctx.rules
    ctx.report.two_way = True
    outbound = outbound_config(rules)
    _check_writes(provider, outbound)
    table_name = _single_table(rules)
    engine = get_engine(ctx.url)
    columns = rules.tables()[table_name]
    extra: dict[str, str] = dict(DELETE_COLUMNS)
    updated_at = outbound.updated_at_column
    if updated_at is not None:
        if updated_at in columns:
            raise RulesError(f"sync_config.outbound.updated_at_column: {updated_at!r} is a mapped column")
        extra[updated_at] = "timestamp"
    ensure_columns(engine, table_name, extra)
    table = writable_table(table_name, {**columns, **extra})
    now = now or utcnow()
    fields = {f.column: f for f in rules.fields}

    external: dict[str, ExternalRecord] | None = None
    deleted_at_provider: set[str] = set()
    unreadable: set[str] = set()  # listed, but rejected by the rules (quarantined): not gone
    if rules.sync.sync_direction == "bidirectional":
        external, deleted_at_provider, unreadable = _read_all(ctx, provider, table_name)
    with engine.begin() as conn:
        shadows = _load_shadows(conn, ctx.mapping_id)
        decided = _manual_decisions(conn, ctx.mapping_id)
        internal = _load_internal(conn, table, ctx.source, list(columns), updated_at)
    by_row = {r.key: r for r in internal}
    by_external: dict[str, InternalRow] = {r.external_id: r for r in internal if r.external_id is not None}

    problems: list[str] = []
    pushes: list[_Push] = []
    deletions: list[str] = []
    report = ctx.report
    with engine.begin() as conn:
        known = {x for x, s in shadows.items() if s.deleted_at is None}
        ids = set(known) | set(external or {}) | {x for x in by_external if x not in shadows}
        if external is not None:
            missing = {
                x for x in known if x not in external and x not in deleted_at_provider and x not in unreadable
            }
            gone = (missing | (deleted_at_provider & known)) & known
            if known and missing and len(gone) / len(known) > rules.sync.max_delete_share:
                problems.append(
                    f"reconciliation refused: {len(gone)} of {len(known)} known records are gone from "
                    f"the listing, more than sync_config.max_delete_share={rules.sync.max_delete_share}; "
                    "nothing deleted"
                )
            else:
                deletions = sorted(gone)
            ids -= set(missing) | deleted_at_provider | unreadable
        for external_id in sorted(ids):
            shadow = shadows.get(external_id)
            row = by_row.get(shadow.row_key) if shadow is not None else None
            row = row or by_external.get(external_id)
            if row is not None and row.deleted:
                continue
            if external is not None:
                ext = external.get(external_id)
            elif shadow is not None:
                ext = ExternalRecord(dict(shadow.fields), shadow.external_modified_at)
            else:
                ext = None  # outbound: an internal row with an id we never agreed on; push it whole
            if ext is None and (row is None or (external is not None and shadow is None)):
                continue  # nothing on either side, or a row whose record left before we tracked it
            outcome = merge(
                None if shadow is None else shadow.fields,
                None if row is None else row.fields,
                None if ext is None else ext.fields,
                rules.sync.conflict_resolution,
                internal_at=None if row is None else row.modified_at,
                external_at=None if ext is None else ext.modified_at,
                decided=decided.get(external_id),
            )
            _record_conflicts(conn, ctx, external_id, outcome, row, ext, now)
            key = _apply_internal(conn, table, ctx.source, fields, external_id, row, outcome, now)
            if outcome.to_internal:
                report.local_updates += 1
            version = (shadow.version if shadow is not None else 0) + 1
            internal_at = None if row is None else row.modified_at
            external_at = None if ext is None else ext.modified_at
            if outcome.to_external and outbound.update is not None:
                try:
                    record = to_provider(rules, outcome.agreed, outcome.to_external)
                except InverseError as exc:
                    problems.append(f"record {external_id}: {exc}")
                    continue
                if outbound.key_field is not None:
                    record[outbound.key_field] = external_id
                pushes.append(
                    _Push(
                        outbound.update,
                        record,
                        idempotency_key(
                            ctx.mapping_id,
                            outbound.update,
                            external_id,
                            f"{version}:{digest(outcome.agreed)}",
                        ),
                        key,
                        external_id,
                        outcome.agreed,
                        version,
                        internal_at,
                        external_at,
                    )
                )
            elif shadow is None or outcome.agreed != shadow.fields:
                _save_shadow(
                    conn,
                    ctx,
                    table_name,
                    external_id,
                    key,
                    outcome.agreed,
                    version,
                    internal_at,
                    external_at,
                    now,
                )
        if outbound.create is not None:
            for row in internal:
                if row.external_id is not None or row.deleted:
                    continue
                try:
                    record = to_provider(rules, row.fields)
                except InverseError as exc:
                    problems.append(f"internal row {row.key}: {exc}")
                    continue
                agreed = {c: row.fields.get(c) for c in columns}
                pushes.append(
                    _Push(
                        outbound.create,
                        record,
                        idempotency_key(ctx.mapping_id, outbound.create, str(row.key), f"1:{digest(agreed)}"),
                        row.key,
                        None,
                        agreed,
                        1,
                        row.modified_at,
                        None,
                    )
                )
        if deletions:
            _apply_deletions(conn, table, ctx, shadows, by_external, deletions, rules.sync.delete_mode, now)
            report.records_deleted += len(deletions)
    failed_classes: list[str] = []
    problems.extend(_push(ctx, provider, table, table_name, pushes, rules, now, failed_classes))
    if problems:
        raise RoundFailed(
            "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""),
            failed_classes[0] if failed_classes else "validation",
        )


def _read_all(
    ctx: Any, provider: Provider, table_name: str
) -> tuple[dict[str, ExternalRecord], set[str], set[str]]:
    """Every record of the stream by external id, the ids the provider marks deleted, and the ids
    of records the rules rejected.

    Records the rules reject are quarantined (as the inbound engine does) and left out of the
    round: a record we cannot read is neither merged nor taken for deleted.
    """
    from esm_dagster.sync.engine import _quarantine

    rules: MappingRules = ctx.rules
    report = ctx.report
    out: dict[str, ExternalRecord] = {}
    deleted: set[str] = set()
    unreadable: set[str] = set()
    size = rules.sync.batch_size
    pages = provider.iter_pages(ctx.stream, page_size=min(100, size))
    batch: list[dict[str, Any]] = []
    rejected: list[Any] = []

    def take(records: list[dict[str, Any]]) -> None:
        live = []
        for record in records:
            key = lookup(record, rules.sync.key)
            if key not in (None, "") and is_deletion(record):
                deleted.add(str(key))
                out.pop(str(key), None)
            else:
                live.append(record)
        result = ctx.plan.apply(live, start_index=0)
        report.records_read += len(records)
        # Accounted for (the asset checks compare read with written + rejected): merged or deleted.
        report.records_written += len(records) - len(result.rejected)
        rejected.extend(result.rejected)
        for rejection in result.rejected:
            key = lookup(rejection.record, rules.sync.key)
            if key not in (None, ""):
                unreadable.add(str(key))
        frame = result.tables[table_name]
        for index, values in zip(frame.index, frame_to_rows(frame), strict=True):
            external_id = str(values.pop("_external_id"))
            moment = None
            if rules.sync.external_updated_at:
                moment = _moment(lookup(live[int(index)], rules.sync.external_updated_at))
            out[external_id] = ExternalRecord(canonical_fields(values), moment)
            deleted.discard(external_id)

    for page in pages:  # a failed page raises here, before anything is applied
        report.pages += 1
        batch.extend(page.records)
        if len(batch) >= size:
            take(batch)
            batch = []
    if batch:
        take(batch)
    archived = archived_stream(provider, ctx.stream)
    if archived is not None:  # HubSpot `contacts_archived`, Mailchimp `members_archived`
        for page in provider.iter_pages(archived, page_size=min(100, size)):
            report.pages += 1
            report.records_read += len(page.records)
            report.records_written += len(page.records)
            for record in page.records:
                key = lookup(record, rules.sync.key)
                if key not in (None, ""):
                    deleted.add(str(key))
                    out.pop(str(key), None)
    if rejected:
        engine = get_engine(ctx.url)
        with engine.begin() as conn:
            _quarantine(conn, ctx, rejected, utcnow())
        report.records_rejected += len(rejected)
    return out, deleted, unreadable


def _load_shadows(conn: sa.Connection, mapping_id: uuid.UUID) -> dict[str, SyncShadow]:
    table = _SHADOWS
    rows = conn.execute(sa.select(table).where(table.c.mapping_id == mapping_id)).all()
    out: dict[str, SyncShadow] = {}
    for r in rows:
        shadow = SyncShadow(**r._mapping)
        out[shadow.external_id] = shadow
    return out


def _manual_decisions(conn: sa.Connection, mapping_id: uuid.UUID) -> dict[str, dict[str, Side]]:
    """A person's decided but not yet applied conflicts: external id -> field -> winning side."""
    c = _CONFLICTS.c
    rows = conn.execute(
        sa.select(c.external_id, c.field, c.resolution).where(
            c.mapping_id == mapping_id, c.status == "decided", c.policy == "manual", c.applied_at.is_(None)
        )
    ).all()
    out: dict[str, dict[str, Side]] = {}
    for external_id, name, resolution in rows:
        if resolution in ("internal", "external"):
            out.setdefault(external_id, {})[name] = resolution
    return out


def _load_internal(
    conn: sa.Connection, table: sa.Table, source: str, columns: list[str], updated_at: str | None
) -> list[InternalRow]:
    """This mapping's rows, and the rows nobody has synced yet (new internal records).

    A `user` row with a role is an operator of esm (the catalog's owner, the people running `esm`),
    not one of the business's records: it is never created at the provider on its own.
    """
    c = table.c
    unsynced = [c.esm_source.is_(None), c.esm_external_id.is_(None)]
    if table.name == "user":  # its `role` column comes with the catalog, not with the rules
        unsynced.append(sa.literal_column("role").is_(None))
    query = sa.select(table).where(sa.or_(c.esm_source == source, sa.and_(*unsynced)))
    out = []
    for r in conn.execute(query).mappings():
        out.append(
            InternalRow(
                key=r["id"],
                external_id=r["esm_external_id"],
                fields={name: canonical(r[name]) for name in columns},
                modified_at=r[updated_at] if updated_at else None,
                deleted=bool(r["is_deleted"]),
            )
        )
    return out


def _record_conflicts(
    conn: sa.Connection,
    ctx: Any,
    external_id: str,
    outcome: Merge,
    row: InternalRow | None,
    ext: ExternalRecord | None,
    now: dt.datetime,
) -> None:
    """Every decision is a row; a manual conflict already waiting is refreshed, not repeated."""
    table = _CONFLICTS
    c = table.c
    policy = ctx.rules.sync.conflict_resolution
    internal_at = None if row is None else row.modified_at
    external_at = None if ext is None else ext.modified_at
    report = ctx.report
    for decision in outcome.decisions:
        conflict = decision.conflict
        if decision.reason == "manual":
            if not outcome.to_external:  # else applied once the push succeeded (`_push`)
                _mark_applied(conn, ctx.mapping_id, external_id, now, conflict.field)
            continue
        conn.execute(
            sa.insert(table).values(
                id=uuid.uuid4(),
                mapping_id=ctx.mapping_id,
                external_id=external_id,
                field=conflict.field,
                policy=policy,
                base_value=conflict.base,
                internal_value=conflict.internal,
                external_value=conflict.external,
                internal_modified_at=internal_at,
                external_modified_at=external_at,
                status="decided",
                resolution=decision.winner,
                decided_by=f"policy:{decision.reason}",
                decided_at=now,
                applied_at=now,
                created_at=now,
            )
        )
        report.conflicts_decided += 1
    for conflict in outcome.pending:
        values = {
            "base_value": conflict.base,
            "internal_value": conflict.internal,
            "external_value": conflict.external,
            "internal_modified_at": internal_at,
            "external_modified_at": external_at,
        }
        updated = conn.execute(
            sa.update(table)
            .where(
                c.mapping_id == ctx.mapping_id,
                c.external_id == external_id,
                c.field == conflict.field,
                c.status == "open",
            )
            .values(**values)
        ).rowcount
        if not updated:
            conn.execute(
                sa.insert(table).values(
                    id=uuid.uuid4(),
                    mapping_id=ctx.mapping_id,
                    external_id=external_id,
                    field=conflict.field,
                    policy=policy,
                    status="open",
                    created_at=now,
                    **values,
                )
            )
        report.conflicts_open += 1


def _mark_applied(
    conn: sa.Connection, mapping_id: uuid.UUID, external_id: str, now: dt.datetime, field: str | None = None
) -> None:
    """A person's decisions for a record are applied: both sides now hold the chosen value."""
    c = _CONFLICTS.c
    query = sa.update(_CONFLICTS).where(
        c.mapping_id == mapping_id,
        c.external_id == external_id,
        c.status == "decided",
        c.policy == "manual",
        c.applied_at.is_(None),
    )
    if field is not None:
        query = query.where(c.field == field)
    conn.execute(query.values(applied_at=now))


def _apply_internal(
    conn: sa.Connection,
    table: sa.Table,
    source: str,
    fields: Mapping[str, FieldMapping],
    external_id: str,
    row: InternalRow | None,
    outcome: Merge,
    now: dt.datetime,
) -> uuid.UUID:
    """Write what the internal side must take; the row's key."""
    values = {name: python_value(fields[name], v) for name, v in outcome.to_internal.items()}
    if row is None:
        key = row_id(source, external_id)
        conn.execute(
            sa.insert(table).values(
                id=key,
                esm_source=source,
                esm_external_id=external_id,
                esm_synced_at=now,
                is_deleted=False,
                **values,
            )
        )
        return key
    if values or row.external_id is None:
        conn.execute(
            sa.update(table)
            .where(table.c.id == row.key)
            .values(esm_source=source, esm_external_id=external_id, esm_synced_at=now, **values)
        )
    return row.key


def _save_shadow(
    conn: sa.Connection,
    ctx: Any,
    table_name: str,
    external_id: str,
    row_key: uuid.UUID,
    agreed: Mapping[str, Any],
    version: int,
    internal_at: dt.datetime | None,
    external_at: dt.datetime | None,
    now: dt.datetime,
) -> None:
    from esm_dagster.sync.dialect import upsert_statement

    table = _SHADOWS
    update = [
        "table_name",
        "row_key",
        "fields",
        "digest",
        "version",
        "internal_modified_at",
        "external_modified_at",
        "deleted_at",
        "synced_at",
    ]
    stmt = upsert_statement(conn.dialect.name, table, ["mapping_id", "external_id"], update)
    conn.execute(
        stmt,
        [
            {
                "mapping_id": ctx.mapping_id,
                "external_id": external_id,
                "table_name": table_name,
                "row_key": row_key,
                "fields": dict(agreed),
                "digest": digest(agreed),
                "version": version,
                "internal_modified_at": internal_at,
                "external_modified_at": external_at,
                "deleted_at": None,
                "synced_at": now,
            }
        ],
    )


def _apply_deletions(
    conn: sa.Connection,
    table: sa.Table,
    ctx: Any,
    shadows: Mapping[str, SyncShadow],
    by_external: Mapping[str, InternalRow],
    external_ids: list[str],
    mode: str,
    now: dt.datetime,
) -> None:
    """Soft (`is_deleted`, `deleted_at`) or hard deletes; the shadow remembers the deletion."""
    shadow_table = _SHADOWS
    for external_id in external_ids:
        shadow = shadows[external_id]
        row = by_external.get(external_id)
        key = shadow.row_key if row is None else row.key
        if mode == "hard":
            conn.execute(sa.delete(table).where(table.c.id == key))
        else:
            conn.execute(sa.update(table).where(table.c.id == key).values(is_deleted=True, deleted_at=now))
        conn.execute(
            sa.update(shadow_table)
            .where(shadow_table.c.mapping_id == ctx.mapping_id, shadow_table.c.external_id == external_id)
            .values(deleted_at=now, synced_at=now)
        )


def _push(
    ctx: Any,
    provider: Provider,
    table: sa.Table,
    table_name: str,
    pushes: list[_Push],
    rules: MappingRules,
    now: dt.datetime,
    failed_classes: list[str],
) -> list[str]:
    """Send the pushes, write by write and in `batch_size` chunks; a shadow moves only on success.

    The error class of each failed push is appended to `failed_classes`.
    """
    problems: list[str] = []
    report = ctx.report
    engine = get_engine(ctx.url)
    key_path = rules.sync.key
    size = rules.sync.batch_size
    for write in dict.fromkeys(p.write for p in pushes):
        todo = [p for p in pushes if p.write == write]
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            outcomes = write_records(provider, write, [p.record for p in chunk], [p.key for p in chunk])
            with engine.begin() as conn:
                for push, outcome in zip(chunk, outcomes, strict=True):
                    if outcome.status == "failed":
                        report.push_failures += 1
                        if outcome.error is not None:
                            failed_classes.append(outcome.error.error_class)
                        problems.append(f"{write} for {push.external_id or push.row}: {outcome.error}")
                        continue
                    report.records_pushed += 1
                    external_id = push.external_id
                    if external_id is None:
                        assigned = lookup(outcome.result or {}, key_path)
                        if assigned in (None, ""):
                            problems.append(f"{write}: the provider's answer has no {key_path!r}")
                            continue
                        external_id = str(assigned)
                        conn.execute(
                            sa.update(table)
                            .where(table.c.id == push.row)
                            .values(esm_source=ctx.source, esm_external_id=external_id, esm_synced_at=now)
                        )
                    if push.external_id is not None:
                        _mark_applied(conn, ctx.mapping_id, external_id, now)
                    _save_shadow(
                        conn,
                        ctx,
                        table_name,
                        external_id,
                        push.row,
                        push.agreed,
                        push.version,
                        push.internal_at,
                        push.external_at,
                        now,
                    )
    return problems
