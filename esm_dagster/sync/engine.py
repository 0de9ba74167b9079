"""The sync engine: extract pages -> rules -> upsert + checkpoint -> mapping row status.

It knows nothing of Dagster: the CLI, the tests and the Dagster assets all call `run_mapping`.
Each batch commits its rows, its quarantined rejects and the cursor in one transaction, so a run
that dies resumes from the last committed batch with nothing lost and nothing doubled.

Cursor model (providers that list newest first, like Stripe): a run reads the window
[high_water - lookback_seconds, now); while it is under way the cursor holds that window and the
id to continue after; when the window is done, high_water moves to its end. A failed run therefore
never moves high_water past records it has not read, and the lookback re-reads (upserts) the
records that became listable only after the run before had read past their `created`. A page's
unchanged repeats of the page before are dropped before the rules (`sync.repeats`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, cast

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from esm_dagster.alerts import Alert, AlertDispatcher, channels_from_env
from esm_dagster.catalog import audit
from esm_dagster.catalog.circuit import CIRCUIT_OPEN, circuit_of, trial_in_progress
from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import (
    DEFAULT_ERROR_THRESHOLD,
    MappingError,
    get_mapping,
    mark_error,
    record_failure,
    record_recovery,
    rules_problem,
    stream_of,
)
from esm_dagster.catalog.models import ExternalSystemMapping, QuarantineRecord, SyncRun, SyncState, SyncStatus
from esm_dagster.catalog.tasks import NEEDS_PERSON, NEEDS_REAUTHORIZATION, open_task
from esm_dagster.catalog.types import utc_stamp, utcnow
from esm_dagster.providers.base import Page, Provider, ProviderError
from esm_dagster.providers.factory import build_provider
from esm_dagster.rules.errors import Rejection
from esm_dagster.rules.plan import RulesPlan, RulesResult, compile_rules
from esm_dagster.rules.redaction import redact_record
from esm_dagster.rules.schema import EXTERNAL_ID_COLUMN, MappingRules, RulesError, parse_rules
from esm_dagster.security.redact import redact_text
from esm_dagster.security.vault import Vault, VaultError
from esm_dagster.sync.bulk import upsert_columns, upsert_rows
from esm_dagster.sync.dialect import upsert_statement
from esm_dagster.sync.frames import frame_columns
from esm_dagster.sync.gc_tuning import fewer_collections
from esm_dagster.sync.prefetch import prefetch_depth, prefetched
from esm_dagster.sync.repeats import RepeatFilter, lookup
from esm_dagster.sync.target_tables import ensure_table, row_id_texts

log = logging.getLogger("esm_dagster.sync")

MAX_PAGE_SIZE = 100


class SyncFailed(RuntimeError):
    """A sync that did not complete; carries the partial report. Message is secret-free."""

    def __init__(self, message: str, report: SyncReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class SyncReport:
    mapping_id: str
    system_name: str
    stream: str
    asset_key: str = ""
    full_refresh: bool = False
    status: str = "running"
    records_read: int = 0
    records_written: int = 0
    records_rejected: int = 0
    duplicates_skipped: int = 0  # records a page repeated unchanged from the page before
    pages: int = 0
    batches: int = 0
    duration_seconds: float = 0.0
    window_start: int | None = None
    window_end: int | None = None
    resumed: bool = False
    partition_key: str | None = None
    api_calls: int = 0
    retries: int = 0
    rate_limit_waits: int = 0
    rate_limit_wait_seconds: float = 0.0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    cursor_high_water: int | None = None
    tables: dict[str, int] = field(default_factory=dict)
    recovered: bool = False  # the mapping was in `error` and this sync brought it back
    error_class: str | None = None
    error_code: str | None = None  # the provider's code (`invalid_grant`) when a ProviderError ended the run
    error: str | None = None
    # The mapping's circuit when the run began: closed, open, half_open (this run is the trial),
    # or "... (forced)" when `force` ran it past an open circuit.
    circuit: str = "closed"
    # Two-way rounds (`sync.twoway`); zero for an inbound-only mapping.
    two_way: bool = False
    records_pushed: int = 0
    push_failures: int = 0
    local_updates: int = 0
    conflicts_decided: int = 0
    conflicts_open: int = 0
    records_deleted: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ProviderBuilder(Protocol):
    """Builds a mapping's client; `catalog_url` is where its rate-limit bucket lives."""

    def __call__(
        self, row: ExternalSystemMapping, credentials: dict[str, Any], *, catalog_url: str | None = None
    ) -> Provider: ...


@dataclass
class LoadContext:
    """What loading a batch of one mapping's stream needs (the sync and the quarantine replay)."""

    url: str
    mapping_id: uuid.UUID
    source: str
    stream: str
    rules: MappingRules
    plan: RulesPlan
    tables: dict[str, sa.Table]
    report: SyncReport
    logger: logging.Logger | Any
    track_cursor: bool = True  # False for a partition run: its window is not the incremental cursor


def source_name(row: ExternalSystemMapping, stream: str) -> str:
    from esm_dagster.catalog.mappings import slugify

    return f"{slugify(row.system_name)}/{stream}"


def target_tables(url: str, plan: RulesPlan) -> dict[str, sa.Table]:
    """The plan's target tables, created or widened to its columns."""
    engine = get_engine(url)
    return {t: ensure_table(engine, t, cols) for t, cols in plan.table_columns().items()}


@audit.catalog_of_first_argument
def run_mapping(
    url: str,
    mapping_ref: str,
    *,
    vault: Vault | None = None,
    full_refresh: bool = False,
    since: dt.datetime | None = None,
    dagster_run_id: str | None = None,
    logger: logging.Logger | Any = None,
    provider_builder: ProviderBuilder | None = None,
    window: tuple[int, int] | None = None,
    partition_key: str | None = None,
    force: bool = False,
    clock: Callable[[], dt.datetime] | None = None,
) -> SyncReport:
    """Sync one mapping now; raises `SyncFailed` (with the partial report) on failure.

    Without `window` the run is incremental from the stored cursor (or everything with
    `full_refresh`, or from `since`); with `window` (unix seconds [start, end), a partition) it
    reads exactly that window and leaves the incremental cursor alone.

    While the mapping's circuit is open (`catalog.circuit`) the run is refused at once with error
    class `circuit_open`, before any provider request, and the row's error count is left alone;
    after the cool-down one half-open trial runs. `force` (a person's `esm sync --force`) runs
    whatever the circuit says. `clock` tells the circuit the time (tests move it forward).
    """
    logger = logger or log
    started = time.perf_counter()
    # Keys first: no key on this machine (`VaultNotConfigured`) is a setup error, not a failed
    # sync, so it must raise before a run is recorded or the mapping's error count moves.
    vault = vault or Vault.from_env()
    Session = session_factory(url)
    with Session.begin() as session:
        row = get_mapping(session, mapping_ref)
        name = row.system_name
        mapping_id = row.id
        invalid: str | None = None
        try:
            rules = parse_rules(row.mapping_rules)
        except RulesError as exc:
            invalid = rules_problem(name, exc)
    if invalid is not None:
        with Session.begin() as session:
            mark_error(session, mapping_id, invalid)
        failed = SyncReport(
            str(mapping_id), name, "unknown", status="failed", error_class="validation", error=invalid
        )
        raise SyncFailed(invalid, failed)
    refusal: str | None = None
    with Session.begin() as session:
        # Locked (PostgreSQL; on SQLite the run's insert takes the write lock) so that two runs
        # arriving together cannot both become the one half-open trial.
        locked = session.get(ExternalSystemMapping, mapping_id, with_for_update=True)
        if locked is None:
            raise MappingError(f"mapping {name!r} ({mapping_id}) was deleted before its sync started")
        row = locked
        stream = stream_of(row.provider_name, rules)
        report = SyncReport(str(row.id), name, stream, full_refresh=full_refresh, partition_key=partition_key)
        report.asset_key = "esm/" + source_name(row, stream)
        source = source_name(row, stream)
        run = SyncRun(
            mapping_id=row.id,
            stream=stream,
            dagster_run_id=dagster_run_id,
            full_refresh=full_refresh,
            partition_key=partition_key,
        )
        session.add(run)
        session.flush()
        run_id = run.id
        refusal = _check_circuit(session, row, run, rules, report, force=force, now=(clock or utcnow)())
        if refusal is None:  # the credentials are opened next, inside this run
            details = {
                "purpose": "sync",
                "stream": stream,
                "partition": partition_key,
                "full_refresh": full_refresh,
            }
            audit.record(session, "credentials.read", row, details=details)
        session.flush()  # the circuit's note on the row, before the row leaves the session
        session.expunge(row)
    if refusal is not None:
        report.status = "failed"
        report.error_class = CIRCUIT_OPEN
        report.error = refusal
        report.duration_seconds = round(time.perf_counter() - started, 3)
        logger.warning(f"sync of {name!r}/{stream} refused: {refusal}")
        raise SyncFailed(f"sync of {name!r}/{stream} refused: {refusal}", report)

    provider: Provider | None = None
    try:
        credentials = vault.decrypt(row.credentials, mapping=repr(name))
        provider = (provider_builder or build_provider)(row, credentials, catalog_url=url)
        plan = compile_rules(rules)
        tables = target_tables(url, plan)
        ctx = LoadContext(url, mapping_id, source, stream, rules, plan, tables, report, logger)
        ctx.track_cursor = window is None
        if rules.sync.sync_direction == "inbound":
            _extract_and_load(ctx, provider, full_refresh=full_refresh, since=since, window=window)
        else:  # the whole round: inbound, merge, outbound, deletes
            from esm_dagster.sync.twoway import run_round

            run_round(ctx, provider)
    except Exception as exc:
        if provider is not None:
            _take_metrics(report, provider)
        report.status = "failed"
        report.error_class = error_class_of(exc)
        report.error_code = exc.code if isinstance(exc, ProviderError) else None
        report.error = redact_text(describe_error(exc), extra=secret_values(locals()))
        report.duration_seconds = round(time.perf_counter() - started, 3)
        _finish(url, mapping_id, run_id, report, rules.sync.error_threshold)
        logger.error(f"sync of {name!r}/{stream} failed: {report.error}")
        raise SyncFailed(f"sync of {name!r}/{stream} failed: {report.error}", report) from None
    except BaseException as exc:  # Ctrl-C, or Dagster terminating the run
        report.duration_seconds = round(time.perf_counter() - started, 3)
        _record_interruption(url, run_id, report, exc)
        logger.warning(f"sync of {name!r}/{stream} interrupted ({type(exc).__name__}); a re-run resumes it")
        raise
    finally:
        if provider is not None:
            provider.close()
    assert provider is not None
    _take_metrics(report, provider)
    report.status = "success"
    report.duration_seconds = round(time.perf_counter() - started, 3)
    _finish(url, mapping_id, run_id, report, rules.sync.error_threshold)
    logger.info(
        f"synced {name!r}/{stream}: read {report.records_read}, written {report.records_written}, "
        f"rejected {report.records_rejected}, pages {report.pages} in {report.duration_seconds}s"
    )
    return report


def _check_circuit(
    session: Session,
    row: ExternalSystemMapping,
    run: SyncRun,
    rules: MappingRules,
    report: SyncReport,
    *,
    force: bool,
    now: dt.datetime,
) -> str | None:
    """Why this run may not call the provider (its run row then records the refusal), or None.

    A refusal is written to the row's `last_error_message` without touching `error_count`, and a
    half-open trial says so there too: each step of the breaker shows on the row.
    """
    circuit = circuit_of(session, row, now, rules.sync)
    report.circuit = circuit.state
    if circuit.state == "closed":
        return None
    if force:
        report.circuit = f"{circuit.state} (forced)"
        return None
    assert circuit.opened_at is not None and circuit.half_opens_at is not None
    last = f" Last failure: {circuit.last_failure}" if circuit.last_failure else ""
    refusal: str | None = None
    if circuit.is_open:
        refusal = (
            f"mapping {row.system_name!r}: circuit open since {utc_stamp(circuit.opened_at)} after "
            f"{row.error_count} consecutive failed syncs; no request sent to the provider. It half-opens "
            f"at {utc_stamp(circuit.half_opens_at)} (sync_config.circuit_cooldown_seconds="
            f"{circuit.cooldown_seconds}); `esm sync --force` syncs now anyway.{last}"
        )
    else:
        trial = trial_in_progress(session, row, circuit, now, rules.sync.max_run_seconds, exclude=run.id)
        if trial is not None:
            refusal = (
                f"mapping {row.system_name!r}: circuit half-open since {utc_stamp(circuit.half_opens_at)} and "
                f"its one trial sync (started {utc_stamp(trial)}) is still running; no request sent to "
                f"the provider.{last}"
            )
    if refusal is None:
        row.last_error_message = (
            f"circuit half-open since {utc_stamp(circuit.half_opens_at)}: trial sync started {utc_stamp(now)}.{last}"
        )[:4000]
        return None
    run.status = "failed"
    run.finished_at = utcnow()
    run.error_class = CIRCUIT_OPEN
    run.error_message = refusal
    row.last_error_message = refusal[:4000]
    return refusal


def _take_metrics(report: SyncReport, provider: Provider) -> None:
    """Copy the transport's counters (calls, retries, rate-limit waits, latency) to the report."""
    metrics = getattr(provider, "metrics", None)
    if metrics is None:
        return
    report.api_calls = metrics.api_calls
    report.retries = metrics.retries
    report.rate_limit_waits = metrics.rate_limit_waits
    report.rate_limit_wait_seconds = round(metrics.rate_limit_wait_seconds, 3)
    report.latency_p50_ms = metrics.p50_ms()
    report.latency_p95_ms = metrics.p95_ms()


def describe_error(exc: BaseException) -> str:
    """One line for the row, the run and the alert; never the SQL parameters (they hold PII)."""
    if isinstance(exc, sa.exc.StatementError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {str(exc.orig).strip()}"
    return f"{type(exc).__name__}: {exc}"


def secret_values(scope: dict[str, Any]) -> list[str]:
    credentials = scope.get("credentials") or {}
    return [v.reveal() for v in credentials.values() if hasattr(v, "reveal")]


def error_class_of(exc: BaseException) -> str:
    if isinstance(exc, ProviderError):
        return exc.error_class
    from esm_dagster.sync.twoway import RoundFailed  # late: twoway builds on this module

    if isinstance(exc, RoundFailed):
        return exc.error_class
    if isinstance(exc, VaultError):
        return "credential_error"
    if isinstance(exc, (RulesError, MappingError, ValueError)):
        return "validation"
    if isinstance(exc, sa.exc.SQLAlchemyError):
        return "database"
    return "internal"


def _load_cursor(url: str, mapping_id: uuid.UUID, stream: str) -> dict[str, Any]:
    with session_factory(url)() as session:
        state = session.get(SyncState, (mapping_id, stream))
        return dict(state.cursor) if state else {}


def _plan_window(
    cursor: dict[str, Any], full_refresh: bool, since: dt.datetime | None, lookback: int = 0
) -> tuple[int | None, int, str | None, bool]:
    """(window_start, window_end, resume_after, resumed) for this run.

    An incremental window starts `lookback` seconds before the high-water mark: a record created
    just before the last run's window end but listable only after that run read past it (Stripe
    sets `created` when a charge starts, lists it when it is done) would otherwise fall behind the
    cursor for good.
    """
    pending = cursor.get("pending")
    if pending and not full_refresh and since is None:
        return pending.get("start"), int(pending["end"]), pending.get("after"), True
    end = int(time.time())
    if since is not None:
        start: int | None = int(since.timestamp())
    elif full_refresh:
        start = None
    else:
        high_water = cursor.get("high_water")
        start = None if high_water is None else int(high_water) - lookback
    return start, end, None, False


def _extract_and_load(
    ctx: LoadContext,
    provider: Provider,
    *,
    full_refresh: bool,
    since: dt.datetime | None,
    window: tuple[int, int] | None,
) -> None:
    cursor = _load_cursor(ctx.url, ctx.mapping_id, ctx.stream)
    start: int | None
    if window is not None:
        start, end, after, resumed = window[0], window[1], None, False
    else:
        start, end, after, resumed = _plan_window(
            cursor, full_refresh, since, ctx.rules.sync.lookback_seconds
        )
    report = ctx.report
    report.window_start, report.window_end, report.resumed = start, end, resumed
    if resumed:
        ctx.logger.info(f"resuming {ctx.source} window [{start}, {end}) after {after}")
    batch_size = ctx.rules.sync.batch_size
    page_size = min(MAX_PAGE_SIZE, batch_size)
    batch: list[dict[str, Any]] = []
    last_cursor: str | None = after
    repeats = RepeatFilter(ctx.rules.sync.key)
    pages: Iterator[Page] = provider.iter_pages(
        ctx.stream, window_start=start, window_end=end, page_size=page_size, cursor=after
    )
    # A consuming read (Telegram) confirms a page by asking for the next: store each page first.
    consuming = bool(getattr(provider, "consuming_reads", False))
    if not consuming:
        pages = prefetched(pages, depth=prefetch_depth(batch_size, page_size))
    with fewer_collections():
        for page in pages:
            report.pages += 1
            batch.extend(repeats.fresh(page.records))
            report.duplicates_skipped = repeats.dropped
            last_cursor = page.next_cursor or last_cursor
            if len(batch) >= batch_size or not page.has_more or consuming:
                pending = {"start": start, "end": end, "after": last_cursor} if page.has_more else None
                _load_batch(ctx, batch, cursor, pending=pending, done_end=None if page.has_more else end)
                batch = []
        if batch or report.pages == 0:
            _load_batch(ctx, batch, cursor, pending=None, done_end=end)


def _load_batch(
    ctx: LoadContext,
    records: list[dict[str, Any]],
    cursor: dict[str, Any],
    *,
    pending: dict[str, Any] | None,
    done_end: int | None,
) -> None:
    """Upsert accepted rows, quarantine rejects and move the cursor, all in one transaction."""
    report = ctx.report
    result = ctx.plan.apply(records, start_index=report.records_read)
    report.records_read += len(records)
    report.batches += 1
    now = utcnow()
    engine = get_engine(ctx.url)
    new_cursor = dict(cursor)
    new_cursor["pending"] = pending
    if done_end is not None:
        new_cursor["high_water"] = done_end
        new_cursor["pending"] = None
    with engine.begin() as conn:
        written = upsert_accepted(conn, ctx, result, now)
        if written:
            resolve_quarantined(conn, ctx, [f"id:{e}" for e in written.values()], now)
        if result.rejected:
            _quarantine(conn, ctx, result.rejected, now)
            report.records_rejected += len(result.rejected)
        if ctx.track_cursor:
            _save_cursor(conn, engine.dialect.name, ctx, new_cursor, now)
    if ctx.track_cursor:
        cursor.clear()
        cursor.update(new_cursor)
        report.cursor_high_water = new_cursor.get("high_water")


def upsert_accepted(
    conn: sa.Connection, ctx: LoadContext, result: RulesResult, now: dt.datetime
) -> dict[int, str]:
    """Upsert the accepted rows of `result` into their target tables; record index -> external id
    of every record written.

    Rows are keyed by (`esm_source`, `esm_external_id`), so writing a record again (a re-run, a
    full refresh, a quarantine replay) updates its row and never adds a second one.
    """
    report = ctx.report
    written_ids: dict[int, str] = {}
    for table_name, frame in result.tables.items():
        if frame.empty:
            continue
        columns = frame_columns(frame)
        external_ids = [str(e) for e in columns.pop(EXTERNAL_ID_COLUMN)]
        written_ids.update(zip(frame.index.tolist(), external_ids, strict=True))
        last = {external_id: n for n, external_id in enumerate(external_ids)}
        if len(last) < len(external_ids):  # page-boundary duplicates: the last copy wins
            keep = sorted(last.values())
            columns = {name: [values[n] for n in keep] for name, values in columns.items()}
            external_ids = [external_ids[n] for n in keep]
        count = len(external_ids)
        columns["id"] = row_id_texts(ctx.source, external_ids)
        columns["esm_source"] = [ctx.source] * count
        columns["esm_external_id"] = external_ids
        columns["esm_synced_at"] = [now] * count
        table = ctx.tables[table_name]
        update_columns = [
            c.name for c in table.columns if c.name not in ("id", "esm_source", "esm_external_id")
        ]
        upsert_columns(conn, table, columns, ["esm_source", "esm_external_id"], update_columns)
        report.tables[table_name] = report.tables.get(table_name, 0) + count
    report.records_written += len(written_ids)
    return written_ids


def _quarantine(conn: sa.Connection, ctx: LoadContext, rejected: list[Any], now: dt.datetime) -> None:
    table = cast(sa.Table, QuarantineRecord.__table__)
    key_path = ctx.rules.sync.key
    rows: dict[str, dict[str, Any]] = {}
    for rejection in rejected:
        payload = redact_record(rejection.record)
        external_id = lookup(rejection.record, key_path)
        fingerprint = (
            f"id:{external_id}"
            if external_id not in (None, "")
            else "sha256:"
            + hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
        )
        rows[fingerprint] = {
            "id": uuid.uuid4(),
            "mapping_id": ctx.mapping_id,
            "stream": ctx.stream,
            "fingerprint": fingerprint,
            "external_id": None if external_id is None else str(external_id)[:200],
            "errors": quarantine_errors(rejection),
            "payload": json_document(payload),
            "first_seen_at": now,
            "last_seen_at": now,
            "seen_count": 1,
            "resolved_at": None,
        }
    # On a re-run the same bad record refreshes its row instead of adding one.
    upsert_rows(
        conn,
        table,
        list(rows.values()),
        ["mapping_id", "stream", "fingerprint"],
        ["errors", "payload", "last_seen_at"],
        update_values={"seen_count": table.c.seen_count + 1, "resolved_at": None},
    )


_AS_TEXT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def json_document(value: Any) -> Any:
    """`value` as a JSON document holds it: what is not JSON (dates, decimals) becomes its `str`.

    orjson, about four times faster than `json` on a Stripe charge; it writes NaN as null (which
    PostgreSQL's jsonb needs) and refuses what `json` alone writes (integers past 64 bits, keys
    that are not text), for which `json` is used.
    """
    try:
        return orjson.loads(orjson.dumps(value, default=str, option=_AS_TEXT))
    except TypeError:
        return json.loads(json.dumps(value, default=str))


def resolve_quarantined(
    conn: sa.Connection, ctx: LoadContext, fingerprints: list[str], now: dt.datetime
) -> int:
    """Mark open quarantine rows of records that have now loaded as resolved; how many were.

    A record rejected once and accepted later (rules fixed, then a full refresh or a replay) must
    not stay listed as an open problem.
    """
    q = QuarantineRecord
    still_open = (q.mapping_id == ctx.mapping_id, q.stream == ctx.stream, q.resolved_at.is_(None))
    if conn.dialect.name == "postgresql":  # one statement, the list bound as one array
        if not fingerprints:
            return 0
        matches = q.fingerprint == sa.any_(sa.bindparam("fingerprints", fingerprints, type_=ARRAY(sa.String)))
        return conn.execute(sa.update(q).where(*still_open, matches).values(resolved_at=now)).rowcount
    resolved = 0
    for start in range(0, len(fingerprints), 500):  # bounded IN lists
        chunk = fingerprints[start : start + 500]
        resolved += conn.execute(
            sa.update(q).where(*still_open, q.fingerprint.in_(chunk)).values(resolved_at=now)
        ).rowcount
    return resolved


def quarantine_errors(rejection: Rejection) -> list[dict[str, Any]]:
    """A rejection's errors as stored in `esm_quarantine.errors` (values already masked)."""
    return [{"field": e.field, "rule": e.rule, "message": e.message} for e in rejection.errors]


def _save_cursor(
    conn: sa.Connection, dialect: str, ctx: LoadContext, cursor: dict[str, Any], now: dt.datetime
) -> None:
    table = cast(sa.Table, SyncState.__table__)
    stmt = upsert_statement(dialect, table, ["mapping_id", "stream"], ["cursor", "updated_at"])
    conn.execute(
        stmt, [{"mapping_id": ctx.mapping_id, "stream": ctx.stream, "cursor": cursor, "updated_at": now}]
    )


def _moment(seconds: int | None) -> dt.datetime | None:
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.UTC)


def _record_interruption(url: str, run_id: uuid.UUID, report: SyncReport, exc: BaseException) -> None:
    """Close the run row of a sync stopped by a person or the orchestrator, leaving the mapping be.

    Left `running`, the row would pass for a half-open circuit's trial still under way and refuse
    every sync until `max_run_seconds`; marked `failed`, a Ctrl-C would count towards the circuit.
    The committed batches and the cursor are kept, so the next run resumes after them.
    """
    try:
        with session_factory(url).begin() as session:
            run = session.get(SyncRun, run_id)
            if run is not None and run.status == "running":
                run.finished_at = utcnow()
                run.status = "interrupted"
                run.records_read = report.records_read
                run.records_written = report.records_written
                run.records_rejected = report.records_rejected
                run.pages = report.pages
                run.error_message = f"interrupted ({type(exc).__name__}) after {report.records_read} records"
    except Exception:  # the interruption itself is what must propagate
        log.warning("could not record the interrupted sync run", exc_info=True)


def _finish(
    url: str,
    mapping_id: uuid.UUID,
    run_id: uuid.UUID,
    report: SyncReport,
    error_threshold: int = DEFAULT_ERROR_THRESHOLD,
) -> None:
    """Record the outcome on the sync run and on the mapping row."""
    reauthorize: Alert | None = None
    Session = session_factory(url)
    with Session.begin() as session:
        run = session.get(SyncRun, run_id)
        if run is not None:
            run.finished_at = utcnow()
            run.status = report.status
            run.records_read = report.records_read
            run.records_written = report.records_written
            run.records_rejected = report.records_rejected
            run.pages = report.pages
            run.error_class = report.error_class
            run.error_message = report.error
            run.window_start = _moment(report.window_start)
            run.window_end = _moment(report.window_end)
            run.api_calls = report.api_calls
            run.retries = report.retries
            run.rate_limit_waits = report.rate_limit_waits
            run.latency_p50_ms = report.latency_p50_ms
            run.latency_p95_ms = report.latency_p95_ms
        if report.status == "success":
            report.recovered = record_recovery(session, mapping_id, "synced successfully")
        else:
            row = record_failure(session, mapping_id, report.error or "failed", threshold=error_threshold)
            if row is not None and report.error_class in NEEDS_PERSON:
                # However the sync was started (`esm sync`, Dagster), revoked keys need a person.
                open_task(session, row, "credentials", report.error or "")
            if row is not None and report.error_code in NEEDS_REAUTHORIZATION:
                # A revoked grant fails every retry alike: in error now, not after the threshold.
                if row.sync_status == SyncStatus.ACTIVE:
                    row.sync_status = SyncStatus.ERROR
                reauthorize = Alert.mapping_error(
                    mapping_id=mapping_id,
                    episode=str(run_id),
                    message=f"{report.error} The mapping needs new credentials (re-authorization).",
                    mapping_name=row.system_name,
                    asset_key=report.asset_key or None,
                    error_class=report.error_class,
                )
    if reauthorize is not None:
        _send_alert(url, reauthorize)


def _send_alert(url: str, alert: Alert) -> None:
    """Deliver now, whoever started the run (`esm sync` has no sensor behind it); never raises."""
    try:
        AlertDispatcher(url, channels_from_env()).send(alert)
    except Exception as exc:  # a broken alerts file must not turn a recorded failure into a crash
        log.warning(f"alert for mapping {alert.mapping_name!r} not sent: {redact_text(str(exc))}")
