"""The `esm` command: catalog, mappings, previews, syncs and the demo.

Every failure a user can cause ends in one line on stderr naming the mapping, field and value,
and exit status 2; secrets never appear in that line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from esm_dagster.security.redact import redact_text


def _read_text(path: str) -> str:
    """The file's text, or a one-line error that names the file."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _load_document(path: str) -> Any:
    """A YAML (`.yaml`, `.yml`) or JSON file; a syntax error names the file, line and column."""
    text = _read_text(path)
    if path.endswith((".yaml", ".yml")):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
            problem = getattr(exc, "problem", None) or str(exc)
            raise ValueError(f"{where}: not valid YAML ({_one_line(problem)})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from None


def _items(document: Any, path: str) -> list[dict[str, Any]]:
    if isinstance(document, dict) and "mappings" in document:
        document = document["mappings"]
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list) and all(isinstance(i, dict) for i in document):
        return document
    raise ValueError(
        f"{path}: a mapping file holds one mapping object, a list of them, or {{mappings: [...]}}"
    )


def _catalog_url() -> str:
    """The catalog's URL, refused in one line when `esm db upgrade` has not created it yet."""
    import sqlalchemy as sa

    from esm_dagster.catalog.db import database_url, get_engine, redacted_url
    from esm_dagster.catalog.schemas import no_catalog_message

    url = database_url()
    with get_engine(url).connect() as conn:
        if not sa.inspect(conn).has_table("external_system_mapping"):
            raise ValueError(no_catalog_message(redacted_url(url), conn, "run `esm db upgrade` first"))
    return url


def _error_line(exc: BaseException) -> str:
    """One line for stderr; a database error without its SQL and parameters (they may hold PII)."""
    import sqlalchemy as sa

    if isinstance(exc, sa.exc.StatementError) and exc.orig is not None:  # never the SQL or its parameters
        text = f"{type(exc.orig).__name__}: {exc.orig}"
    else:
        text = str(exc)
    return _one_line(redact_text(text))


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from esm_dagster.catalog.db import database_url, redacted_url
    from esm_dagster.catalog.migrate import current_revision, upgrade

    url = database_url()
    upgrade(url)
    print(f"catalog {redacted_url(url)} at revision {current_revision(url)}")
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from esm_dagster.security.vault import generate_key

    print(generate_key())
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """Exit 0 when every row is under the newest key, 1 when some could not be opened."""
    from esm_dagster.alerts.dispatch import AlertDispatcher
    from esm_dagster.catalog.key_rotation import rotate_credentials
    from esm_dagster.security.vault import Vault

    url = _catalog_url()
    vault = Vault.from_env()
    stale = _key_files_without_the_newest_key()
    report = rotate_credentials(url, vault, batch_size=args.batch_size, alerts=AlertDispatcher.from_env(url))
    from esm_dagster.catalog import audit

    audit.record_now(
        url,
        "keys.rotated",
        outcome="failed" if report.failed else "ok",
        details={k: v for k, v in report.to_dict().items() if isinstance(v, int)},
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.summary())
        for failure in report.failures:
            print(f"  failed: {failure.system_name} ({failure.mapping_id}): {failure.reason}")
    for path in stale:
        print(
            f"esm: warning: {path} does not hold the newest key of ESM_FERNET_KEYS: the credentials are now "
            "under that key, so put the keys (newest first) in the file before you unset the variable",
            file=sys.stderr,
        )
    return 1 if report.failed else 0


def _key_files_without_the_newest_key() -> list[str]:
    """Key files a later command would read instead of `ESM_FERNET_KEYS` that lack its newest key:
    after the rotation they could open nothing (the key would live only in this shell)."""
    from pathlib import Path

    from esm_dagster.security.vault import (
        KEYS_ENV,
        KEYS_FILE_ENV,
        _split_keys,
        home_keys_file,
        keys_and_source,
    )

    keys, source = keys_and_source()
    if source != KEYS_ENV:
        return []
    newest = keys[0]
    files = [Path(os.environ[KEYS_FILE_ENV])] if os.environ.get(KEYS_FILE_ENV) else []
    files.append(home_keys_file(os.environ))
    stale = []
    for path in files:
        try:
            if path.is_file() and newest not in _split_keys(path.read_text()):
                stale.append(str(path))
        except OSError:
            continue
    return stale


def cmd_mapping_add(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from esm_dagster.catalog.db import session_factory
    from esm_dagster.catalog.mappings import MappingError, MappingInput, upsert_mapping, validation_problems
    from esm_dagster.security.vault import Vault

    items = _items(_load_document(args.file), args.file)
    inputs = []
    for position, raw in enumerate(items):
        try:
            inputs.append(MappingInput.model_validate(raw))
        except ValidationError as exc:
            name = raw.get("system_name", f"#{position + 1}")
            problems = validation_problems(exc, raw, tuple(MappingInput.model_fields))
            raise MappingError(f"mapping {name!r}: {problems}") from None
    url = _catalog_url()
    if any(item.credentials for item in inputs):
        _require(url, "credentials.write", "write credentials")
    vault = Vault.from_env()
    with session_factory(url).begin() as session:
        for item in inputs:
            row, created = upsert_mapping(session, vault, item)
            print(f"{'added' if created else 'updated'} {row.system_name} ({row.id})")
    _reload_ui(args)
    return 0


def cmd_mapping_list(args: argparse.Namespace) -> int:
    from esm_dagster.catalog.circuit import circuit_of
    from esm_dagster.catalog.db import session_factory
    from esm_dagster.catalog.mappings import age, load_specs, short_id
    from esm_dagster.catalog.models import ExternalSystemMapping
    from esm_dagster.catalog.types import utcnow

    url = _catalog_url()
    now = utcnow()
    with session_factory(url)() as session:
        specs = load_specs(session)
        rows = {str(r.id): r for r in session.query(ExternalSystemMapping)}
        circuits = {i: circuit_of(session, r, now) for i, r in rows.items()}
    records = [
        {
            "system": s.system_name,
            "type": s.system_type,
            "provider": s.provider_name,
            "stream": s.stream,
            "status": s.sync_status,
            "circuit": circuits[s.id].state,
            "half_opens_at": _iso(circuits[s.id].half_opens_at),
            "active": s.is_active,
            "frequency": s.sync_frequency,
            "timezone": s.timezone,
            "last_sync": age(rows[s.id].last_sync_at),
            "errors": rows[s.id].error_count,
            "id": s.id,
        }
        for s in specs
    ]
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    for spec, record in zip(specs, records, strict=True):
        record["id"] = short_id(spec.id)  # enough of the id to tell rows apart; `esm sync` accepts it
        if circuits[spec.id].state != "closed":
            record["status"] = f"{record['status']} ({circuits[spec.id].describe()})"
    print(format_table(records, ["system", "type", "provider", "stream", "status", "active", "frequency",
                                 "timezone", "last_sync", "errors", "id"]))  # fmt: skip
    for s in specs:
        if s.error:
            print(f"! {s.system_name}: {s.error}")
    return 0


def _iso(moment: Any) -> str | None:
    return None if moment is None else moment.isoformat()


def _reload_ui(args: argparse.Namespace) -> None:
    """After a catalog change: have a running Dagster UI reload the `esm` code location."""
    if getattr(args, "no_reload", False):
        return
    from esm_dagster.orchestration.reload import reload_code_location

    print(reload_code_location())


def _parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    """`--set column=value` pairs; values stay text here and are typed by `MappingEdit`."""
    changes: dict[str, Any] = {}
    for pair in pairs:
        column, sep, value = pair.partition("=")
        if not sep or not column.strip():
            raise ValueError(f"--set {pair!r}: expected COLUMN=VALUE (e.g. priority=2)")
        changes[column.strip()] = value
    return changes


def cmd_mapping_set_active(args: argparse.Namespace) -> int:
    from esm_dagster.catalog.db import session_factory
    from esm_dagster.catalog.mappings import get_mapping, set_active

    url = _catalog_url()
    active = args.mapping_command == "enable"
    with session_factory(url).begin() as session:
        row = get_mapping(session, args.mapping)
        status = set_active(session, row, active)
        print(f"{'enabled' if active else 'disabled'} {row.system_name} ({row.id}): status {status}")
    _reload_ui(args)
    return 0


def cmd_mapping_edit(args: argparse.Namespace) -> int:
    from esm_dagster.catalog.db import session_factory
    from esm_dagster.catalog.mappings import edit_mapping, get_mapping
    from esm_dagster.security.vault import Vault

    changes = _parse_sets(args.set or [])
    rules = _load_document(args.rules) if args.rules else None
    if rules is not None and not isinstance(rules, dict):
        raise ValueError(f"{args.rules}: mapping_rules must be an object")
    credentials = _load_document(args.credentials) if args.credentials else None
    if credentials is not None and not (
        isinstance(credentials, dict) and all(isinstance(v, str) for v in credentials.values())
    ):
        raise ValueError(f"{args.credentials}: credentials must be an object of strings")
    if not changes and rules is None and credentials is None:
        raise ValueError("nothing to change: give --set COLUMN=VALUE, --rules FILE or --credentials FILE")
    url = _catalog_url()
    if credentials is not None:
        _require(url, "credentials.write", "change credentials")
    vault = Vault.from_env() if credentials is not None else None
    with session_factory(url).begin() as session:
        row = get_mapping(session, args.mapping)
        changed = edit_mapping(
            session, row, changes, mapping_rules=rules, credentials=credentials, vault=vault
        )
        print(f"edited {row.system_name} ({row.id}): {', '.join(changed) or 'no change'}")
    _reload_ui(args)
    return 0


def cmd_tasks_list(args: argparse.Namespace) -> int:
    from esm_dagster.catalog.db import session_factory
    from esm_dagster.catalog.mappings import age, short_id
    from esm_dagster.catalog.models import User
    from esm_dagster.catalog.tasks import list_tasks

    url = _catalog_url()
    with session_factory(url)() as session:
        emails = {u.id: u.email for u in session.query(User)}
        records = [
            {
                "id": str(task.id),
                "title": task.title,
                "mapping": name or "",
                "reason": task.reason or "",
                "status": str(task.status),
                "priority": task.priority,
                "assignee": (emails.get(task.assigned_to_user_id) if task.assigned_to_user_id else None)
                or "",
                "due": age(task.due_date),
                "created": age(task.created_at),
                "resolution": task.resolution or "",
            }
            for task, name in list_tasks(session, include_closed=args.all)
        ]
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    if not records:
        print("no open tasks" if not args.all else "no tasks")
        return 0
    for record in records:
        record["id"] = short_id(str(record["id"]))
    columns = ["title", "status", "assignee", "due", "id"] + (["resolution"] if args.all else [])
    print(format_table(records, columns))
    return 0


def _route_summary(routing: list[dict[str, Any]]) -> str:
    """`Club SMS: failed (rate_limit) > Club Bot: sent`: each route a message tried, in order."""
    steps = []
    for entry in routing:
        detail = entry.get("error_class") or entry.get("code")
        steps.append(f"{entry.get('mapping')}: {entry.get('outcome')}" + (f" ({detail})" if detail else ""))
    return " > ".join(steps)


def cmd_messages_list(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from esm_dagster.catalog.db import session_factory
    from esm_dagster.catalog.mappings import age, short_id
    from esm_dagster.catalog.models import ExternalSystemMapping, MessageStatus, OutboundMessage

    url = _catalog_url()
    query = sa.select(OutboundMessage, ExternalSystemMapping.system_name).outerjoin(
        ExternalSystemMapping, OutboundMessage.routed_mapping_id == ExternalSystemMapping.id
    )
    if args.status:
        query = query.where(OutboundMessage.status == args.status)
    elif not args.all:
        query = query.where(OutboundMessage.status != MessageStatus.SENT.value)
    query = query.order_by(OutboundMessage.created_at.desc()).limit(args.limit)
    with session_factory(url)() as session:
        records: list[dict[str, Any]] = [
            {
                "id": str(message.id),
                "key": message.idempotency_key,
                "system_type": str(message.system_type),
                "recipient": message.recipient,
                "status": message.status,
                "attempts": message.attempts,
                "sent_via": via or "",
                "provider_message_id": message.provider_message_id or "",
                "created": age(message.created_at),
                "sent": age(message.sent_at) if message.sent_at else "",
                "routing": message.routing,
                "last_error": message.last_error or "",
            }
            for message, via in session.execute(query).all()
        ]
    if args.json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
        return 0
    if not records:
        print("no messages" if args.all or args.status else "no unsent messages (--all shows sent ones)")
        return 0
    for record in records:
        record["id"] = short_id(str(record["id"]))
        record["route"] = _route_summary(record.pop("routing"))
    columns = ["created", "status", "system_type", "recipient", "sent_via", "attempts", "route", "id"]
    print(format_table(records, columns))
    return 0


def cmd_messages_send(args: argparse.Namespace) -> int:
    from esm_dagster.sync.messages import dispatch

    report = dispatch(_catalog_url(), limit=args.limit)
    if args.json:
        print(json.dumps(dataclasses.asdict(report), indent=2))
    else:
        print(report.summary())
    return 0 if report.failed == 0 and report.needs_person == 0 else 1


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    from esm_dagster.catalog.db import session_factory
    from esm_dagster.catalog.mappings import age, get_mapping, short_id, slugify
    from esm_dagster.catalog.quarantine import failed_rules, list_quarantine

    url = _catalog_url()
    with session_factory(url)() as session:
        mapping_id = get_mapping(session, args.mapping).id if args.mapping else None
        records = [
            {
                "mapping": f"{slugify(mapping.system_name)}/{item.stream}",
                "mapping_id": str(mapping.id),
                "external_id": item.external_id or "",
                "failed": failed_rules(item),
                "errors": item.errors,
                "first_seen": age(item.first_seen_at),
                "last_seen": age(item.last_seen_at),
                "seen": item.seen_count,
                "resolved": age(item.resolved_at) if item.resolved_at else "",
                "id": str(item.id),
            }
            for item, mapping in list_quarantine(session, mapping_id, include_resolved=args.all)
        ]
    if args.json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
        return 0
    if not records:
        print("no quarantined records" if args.all else "no open quarantined records")
        return 0
    for record in records:
        record["id"] = short_id(str(record["id"]))
    columns = ["mapping", "external_id", "failed", "first_seen", "last_seen", "seen", "id"]
    print(format_table(records, columns + (["resolved"] if args.all else [])))
    return 0


def cmd_conflicts_list(args: argparse.Namespace) -> int:
    from esm_dagster.catalog.conflicts import list_conflicts
    from esm_dagster.catalog.db import session_factory
    from esm_dagster.catalog.mappings import age, spec_from_row
    from esm_dagster.catalog.models import ExternalSystemMapping

    with session_factory(_catalog_url())() as session:
        names = {
            row.id: f"{row.system_name}/{spec_from_row(row).stream}"
            for row in session.query(ExternalSystemMapping)
        }
        records = [
            {
                "id": str(c.id),
                "mapping": names.get(c.mapping_id, str(c.mapping_id)),
                "mapping_id": str(c.mapping_id),
                "record": c.external_id,
                "field": c.field,
                "internal": c.internal_value,
                "external": c.external_value,
                "base": c.base_value,
                "status": c.status,
                "resolution": c.resolution or "",
                "decided_by": c.decided_by or "",
                "seen": age(c.created_at),
            }
            for c in list_conflicts(session, args.mapping, include_decided=args.all)
        ]
    if args.json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
        return 0
    if not records:
        print("no conflicts" if args.all else "no open conflicts")
        return 0
    columns = ["id", "mapping", "record", "field", "internal", "external", "status", "seen"]
    print(format_table(records, columns + (["resolution", "decided_by"] if args.all else [])))
    return 0


def cmd_conflicts_resolve(args: argparse.Namespace) -> int:
    from esm_dagster.catalog.audit import current_actor
    from esm_dagster.catalog.conflicts import resolve_conflict
    from esm_dagster.catalog.db import session_factory

    with session_factory(_catalog_url()).begin() as session:
        conflict = resolve_conflict(session, args.conflict, args.take, current_actor().name)
        field, record = conflict.field, conflict.external_id
    print(
        f"conflict {args.conflict}: {field} of {record} takes the {args.take} value at the mapping's next sync"
    )
    return 0


def cmd_quarantine_replay(args: argparse.Namespace) -> int:
    from esm_dagster.sync.replay import replay_quarantine

    report = replay_quarantine(_catalog_url(), args.mapping)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
        return 0
    where = f"{report.system_name!r}/{report.stream}"
    if report.replayed + report.not_replayable == 0:
        print(f"no open quarantined records for {where}")
        return 0
    tables = ", ".join(f"{t}: {n}" for t, n in report.tables.items())
    print(
        f"replayed {report.replayed} quarantined records of {where} through the current rules: "
        f"{report.accepted} accepted{f' ({tables})' if tables else ''}, {report.still_rejected} still "
        "rejected (errors updated; `esm quarantine list` shows them)"
    )
    if report.masked:
        print(
            f"{report.not_replayable} not replayable as stored: the quarantined payload is redacted and "
            "the rules read a masked (secret-looking) field; `esm sync MAPPING --full-refresh` "
            "re-reads them from the provider:"
        )
        for item in report.masked:
            print(f"  {item['external_id'] or '(no external id)'}: {', '.join(item['fields'])}")
    return 0


def cmd_mapping_preview(args: argparse.Namespace) -> int:
    from esm_dagster.rules.preview import preview

    rules = _load_document(args.rules)
    records = []
    for line_no, line in enumerate(_read_text(args.records).splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{args.records}:{line_no}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(
                    f"{args.records}:{line_no}: expected one provider record (a JSON object) per line, "
                    f"got {type(record).__name__}"
                )
            records.append(record)
    print(json.dumps(preview(rules, records), indent=2, ensure_ascii=False))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    import datetime as dt

    from esm_dagster.catalog.db import session_factory
    from esm_dagster.catalog.mappings import MappingError, get_mapping, spec_from_row
    from esm_dagster.security.vault import Vault
    from esm_dagster.sync.engine import run_mapping
    from esm_dagster.sync.since import parse_since

    url = _catalog_url()
    with session_factory(url)() as session:
        spec = spec_from_row(get_mapping(session, args.mapping))
    if not spec.is_active and not args.force:
        raise MappingError(
            f"mapping {spec.system_name!r} is disabled (is_active false, status {spec.sync_status}): "
            "`esm mapping enable` it, or sync it once anyway with --force"
        )
    since: dt.datetime | None = None
    if args.since:
        since = parse_since(args.since, spec.timezone)
        if since.timestamp() > dt.datetime.now(dt.UTC).timestamp():
            raise ValueError(f"--since {args.since!r} is in the future: there is nothing to read yet")
    # Keys first: a machine without a key is a setup error, not a failed sync of the mapping.
    vault = Vault.from_env()
    # The engine logs a failure and raises it; `main` prints it, so the log line would repeat it.
    quiet = logging.getLogger("esm_dagster.cli.sync")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    _audit_manual_sync(url, args.mapping, full_refresh=args.full_refresh, since=args.since, force=args.force)
    report = run_mapping(
        url,
        args.mapping,
        vault=vault,
        full_refresh=args.full_refresh,
        since=since,
        logger=quiet,
        force=args.force,
    )
    print(json.dumps(report.as_dict(), indent=2, default=str))
    return 0


def cmd_test_connection(args: argparse.Namespace) -> int:
    """One cheap authenticated call; the result goes on the mapping row and into its run history."""
    from esm_dagster.security.vault import Vault
    from esm_dagster.sync.probe import probe_mapping

    url = _catalog_url()
    vault = Vault.from_env()  # no key is a setup error, not the mapping's
    result = probe_mapping(url, args.mapping, vault=vault)
    from esm_dagster.catalog import audit

    audit.record_now(
        url,
        "connection.tested",
        outcome="ok" if result.ok else "failed",
        mapping_id=uuid.UUID(result.mapping_id),
        mapping_name=result.system_name,
        details={"seconds": result.seconds, "error_class": result.error_class},
    )
    if args.json:
        print(json.dumps(dataclasses.asdict(result), indent=2))
    elif result.ok:
        recovered = " (mapping back to active)" if result.recovered else ""
        print(f"ok: mapping {result.system_name!r} answered in {result.seconds:.3f} s{recovered}")
    else:
        print(
            f"failed: mapping {result.system_name!r} ({result.error_class}): {_one_line(result.error or '')}",
            file=sys.stderr,
        )
    return 0 if result.ok else 1


def _audit_manual_sync(url: str, ref: str, **details: Any) -> None:
    from esm_dagster.catalog import audit
    from esm_dagster.catalog.db import session_factory
    from esm_dagster.catalog.mappings import get_mapping

    with session_factory(url).begin() as session:
        audit.record(session, "sync.manual", get_mapping(session, ref), details=details)


def cmd_audit_list(args: argparse.Namespace) -> int:
    from esm_dagster.catalog import audit
    from esm_dagster.catalog.db import session_factory
    from esm_dagster.catalog.mappings import get_mapping

    url = _catalog_url()
    mapping_id = None
    if args.mapping:
        with session_factory(url)() as session:
            mapping_id = get_mapping(session, args.mapping).id
    rows = audit.list_entries(
        url, mapping_id=mapping_id, action=args.action, actor=args.actor, limit=args.limit
    )
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return 0
    records = [
        {
            "at_utc": r.at.strftime("%Y-%m-%d %H:%M:%S"),
            "who": r.actor + (f" ({r.actor_role})" if r.actor_role else ""),
            "action": r.action,
            "outcome": r.outcome,
            "mapping": r.mapping or "-",
            "details": ", ".join(f"{k}={v}" for k, v in r.details.items() if v not in (None, "", [])),
        }
        for r in rows
    ]
    columns = ["at_utc", "who", "action", "outcome", "mapping", "details"]
    print(format_table(records, columns) if records else "no entries")
    return 0


def cmd_operators_add(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from esm_dagster.catalog import audit
    from esm_dagster.catalog.db import session_factory
    from esm_dagster.catalog.models import User, UserRole

    url = _catalog_url()
    try:
        role = UserRole(args.role)
    except ValueError:
        raise ValueError(f"--role {args.role!r}: one of {', '.join(r.value for r in UserRole)}") from None
    email = args.email.strip().lower()
    if "@" not in email:
        raise ValueError(f"{args.email!r} is not an email address")
    with session_factory(url).begin() as session:
        user = session.scalar(sa.select(User).where(sa.func.lower(User.email) == email))
        action = "operator.changed" if user is not None else "operator.added"
        if user is None:
            user = User(email=email, full_name=args.name)
            session.add(user)
        user.role = role
        user.is_active = True
        session.flush()
        audit.record(session, action, details={"operator": email, "role": role.value})
    print(f"{'changed' if action == 'operator.changed' else 'added'} operator {email} ({role.value})")
    return 0


def cmd_operators_list(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from esm_dagster.catalog.db import session_factory
    from esm_dagster.catalog.models import User

    url = _catalog_url()
    with session_factory(url)() as session:
        rows = session.execute(
            sa.select(User.email, User.role, User.is_active)
            .where(User.role.is_not(None))
            .order_by(User.email)
        ).all()
    records = [{"email": str(e), "role": str(r), "active": "yes" if a else "no"} for e, r, a in rows]
    print(
        format_table(records, ["email", "role", "active"])
        if records
        else "no operators: single-operator mode"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from esm_dagster.demo.run import run_demo

    return run_demo(charges=args.charges, customers=args.customers, port=args.port)


def cmd_ui(args: argparse.Namespace) -> int:
    from esm_dagster.demo.run import run_ui

    return run_ui(port=args.port, ui_port=args.ui_port)


def cmd_webhooks_serve(args: argparse.Namespace) -> int:
    from esm_dagster.webhooks.serve import serve

    serve(_catalog_url(), host=args.host, port=args.port)
    return 0


def format_table(records: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[str(r.get(c, "")) for c in columns] for r in records]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


# The permission each command checks before it touches anything (security.access); commands that
# touch no catalog (key generation, the demo's own sandbox) need none.
PERMISSION_OF: dict[Any, str | None] = {
    cmd_db_upgrade: "catalog.upgrade",
    cmd_keys_generate: None,
    cmd_keys_rotate: "keys.rotate",
    cmd_mapping_add: "mapping.write",
    cmd_mapping_list: "mapping.read",
    cmd_mapping_set_active: "mapping.write",
    cmd_mapping_edit: "mapping.write",
    cmd_mapping_preview: "mapping.read",
    cmd_tasks_list: "tasks.read",
    cmd_quarantine_list: "quarantine.read",
    cmd_messages_list: "mapping.read",
    cmd_messages_send: "sync.run",
    cmd_quarantine_replay: "quarantine.replay",
    cmd_conflicts_list: "mapping.read",
    cmd_conflicts_resolve: "mapping.write",
    cmd_sync: "sync.run",
    cmd_test_connection: "connection.test",
    cmd_webhooks_serve: "webhooks.serve",
    cmd_audit_list: "audit.read",
    cmd_operators_add: "operators.manage",
    cmd_operators_list: "mapping.read",
    cmd_demo: None,
    cmd_ui: None,
}


def _require(url: str, permission: str, what: str) -> None:
    from esm_dagster.catalog.audit import current_actor
    from esm_dagster.security.access import Operator, require

    actor = current_actor()
    require(url, Operator(actor.name, actor.role or ""), permission, what=what)


def _catalog_exists(url: str) -> bool:
    import sqlalchemy as sa

    from esm_dagster.catalog.db import get_engine

    with get_engine(url).connect() as conn:
        return bool(sa.inspect(conn).has_table("user"))


def _run_as_operator(args: argparse.Namespace) -> int:
    """Identify the operator, check the command's permission, then run it as them."""
    from esm_dagster.catalog import audit
    from esm_dagster.catalog.db import database_url
    from esm_dagster.security.access import identify, require

    if args.func not in PERMISSION_OF:
        raise RuntimeError(f"command {args.command!r} declares no permission (cli.PERMISSION_OF)")
    permission = PERMISSION_OF[args.func]
    if permission is None:
        return int(args.func(args) or 0)
    url = database_url()
    if not _catalog_exists(url):
        # Nothing to protect yet: `db upgrade` creates the catalog, `mapping preview` needs none,
        # and every other command says the catalog is missing.
        return int(args.func(args) or 0)
    operator = identify(url, getattr(args, "as_user", None))
    what = " ".join(a for a in (args.command, _subcommand(args)) if a)
    require(url, operator, permission, what=what)
    with audit.acting_as(operator.actor("cli")), audit.using_catalog(url):
        return int(args.func(args) or 0)


def _subcommand(args: argparse.Namespace) -> str | None:
    for name, value in vars(args).items():
        if name.endswith("_command") and isinstance(value, str):
            return value
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esm", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--as",
        dest="as_user",
        metavar="EMAIL",
        help="the operator this command runs as (default: ESM_USER); roles decide what is allowed",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="catalog database").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply Alembic migrations").set_defaults(func=cmd_db_upgrade)

    keys = sub.add_parser("keys", help="Fernet keys").add_subparsers(dest="keys_command", required=True)
    keys.add_parser("generate", help="print a new Fernet key").set_defaults(func=cmd_keys_generate)
    rotate = keys.add_parser(
        "rotate", help="re-encrypt every mapping's credentials under the newest key of ESM_FERNET_KEYS"
    )
    rotate.add_argument("--batch-size", type=int, default=100, help="rows per transaction (default 100)")
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(func=cmd_keys_rotate)

    mapping = sub.add_parser("mapping", help="external_system_mapping rows").add_subparsers(
        dest="mapping_command", required=True
    )
    add = mapping.add_parser(
        "add", help="add or update mappings from a YAML/JSON file (encrypts credentials)"
    )
    add.add_argument("file")
    add.set_defaults(func=cmd_mapping_add)
    for verb, text in (("enable", "make a mapping active again"), ("disable", "stop syncing a mapping")):
        toggle = mapping.add_parser(verb, help=text)
        toggle.add_argument(
            "mapping", help="mapping id (or its first 8 characters), system name or system/stream"
        )
        toggle.set_defaults(func=cmd_mapping_set_active)
    edit = mapping.add_parser("edit", help="change columns, rules or credentials of one mapping")
    edit.add_argument("mapping", help="mapping id (or its first 8 characters), system name or system/stream")
    edit.add_argument("--set", action="append", metavar="COLUMN=VALUE", help="repeatable, e.g. priority=2")
    edit.add_argument("--rules", help="a mapping_rules JSON/YAML file that replaces the rules")
    edit.add_argument("--credentials", help="a JSON/YAML file of credentials (encrypted as written)")
    edit.set_defaults(func=cmd_mapping_edit)
    for sub_parser in (add, edit, *[mapping.choices[v] for v in ("enable", "disable")]):
        sub_parser.add_argument(
            "--no-reload", action="store_true", help="do not ask a running Dagster UI to reload"
        )
    listing = mapping.add_parser("list", help="system, type, status, frequency, last sync")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_mapping_list)
    prev = mapping.add_parser("preview", help="run mapping rules on sample records; print JSON")
    prev.add_argument("--rules", required=True, help="mapping_rules JSON/YAML file")
    prev.add_argument("--records", required=True, help="JSON Lines file of provider records")
    prev.set_defaults(func=cmd_mapping_preview)

    tasks = sub.add_parser("tasks", help="work waiting for a person").add_subparsers(
        dest="tasks_command", required=True
    )
    task_list = tasks.add_parser("list", help="open tasks (title, status, assignee, due)")
    task_list.add_argument("--all", action="store_true", help="include completed and cancelled tasks")
    task_list.add_argument("--json", action="store_true")
    task_list.set_defaults(func=cmd_tasks_list)

    outbound = sub.add_parser("messages", help="outbound email / SMS / chat messages").add_subparsers(
        dest="messages_command", required=True
    )
    m_list = outbound.add_parser("list", help="unsent messages: status, route tried, sent via")
    m_list.add_argument("--all", action="store_true", help="include sent messages")
    m_list.add_argument(
        "--status", choices=["queued", "sending", "sent", "failed", "needs_person"], help="only this status"
    )
    m_list.add_argument("--limit", type=int, default=100, help="at most this many, newest first")
    m_list.add_argument("--json", action="store_true")
    m_list.set_defaults(func=cmd_messages_list)
    m_send = outbound.add_parser("send", help="one pass over the queue, falling back by priority")
    m_send.add_argument("--limit", type=int, default=500, help="at most this many messages")
    m_send.add_argument("--json", action="store_true")
    m_send.set_defaults(func=cmd_messages_send)

    quarantine = sub.add_parser("quarantine", help="records the rules rejected").add_subparsers(
        dest="quarantine_command", required=True
    )
    q_list = quarantine.add_parser(
        "list", help="open quarantined records: mapping, external id, failed field:rule, first/last seen"
    )
    q_list.add_argument("mapping", nargs="?", help="only this mapping (id, system name or system/stream)")
    q_list.add_argument("--all", action="store_true", help="include resolved records")
    q_list.add_argument("--json", action="store_true")
    q_list.set_defaults(func=cmd_quarantine_list)
    replay = quarantine.add_parser(
        "replay", help="run a mapping's open quarantined records through its current rules"
    )
    replay.add_argument(
        "mapping", help="mapping id (or its first 8 characters), system name or system/stream"
    )
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=cmd_quarantine_replay)

    conflicts = sub.add_parser("conflicts", help="two-way fields both sides changed").add_subparsers(
        dest="conflicts_command", required=True
    )
    c_list = conflicts.add_parser("list", help="open conflicts: record, field, internal and external value")
    c_list.add_argument("mapping", nargs="?", help="only this mapping (id, system name or system/stream)")
    c_list.add_argument("--all", action="store_true", help="include decided conflicts (every decision)")
    c_list.add_argument("--json", action="store_true")
    c_list.set_defaults(func=cmd_conflicts_list)
    c_resolve = conflicts.add_parser("resolve", help="take one side of an open conflict")
    c_resolve.add_argument("conflict", help="conflict id (from `esm conflicts list`)")
    c_resolve.add_argument("--take", required=True, choices=["internal", "external"])
    c_resolve.set_defaults(func=cmd_conflicts_resolve)

    sync = sub.add_parser("sync", help="sync one mapping now, without Dagster")
    sync.add_argument("mapping", help="mapping id, system name or system/stream")
    sync.add_argument("--full-refresh", action="store_true")
    sync.add_argument(
        "--since",
        help="ISO date/datetime: re-read records created since then (no offset: the mapping's timezone)",
    )
    sync.add_argument(
        "--force",
        action="store_true",
        help="sync even if the mapping is disabled or its circuit is open (after a fix)",
    )
    sync.set_defaults(func=cmd_sync)

    audit_cmd = sub.add_parser("audit", help="the append-only audit log").add_subparsers(
        dest="audit_command", required=True
    )
    audit_list = audit_cmd.add_parser("list", help="who did what to which mapping, newest first")
    audit_list.add_argument("--mapping", help="only this mapping (id, system name or system/stream)")
    audit_list.add_argument("--action", help="only this action, or a prefix ending in '.' (credentials.)")
    audit_list.add_argument("--actor", help="only this operator (email) or 'system' / 'dagster'")
    audit_list.add_argument("--limit", type=int, default=100)
    audit_list.add_argument("--json", action="store_true")
    audit_list.set_defaults(func=cmd_audit_list)

    operators = sub.add_parser("operators", help="people who run esm, and their roles").add_subparsers(
        dest="operators_command", required=True
    )
    op_add = operators.add_parser("add", help="add an operator or change their role (admin)")
    op_add.add_argument("email")
    op_add.add_argument("--role", required=True, help="admin, engineer or viewer")
    op_add.add_argument("--name", help="full name")
    op_add.set_defaults(func=cmd_operators_add)
    operators.add_parser("list", help="operators and roles").set_defaults(func=cmd_operators_list)

    test_conn = sub.add_parser(
        "test-connection", help="one cheap authenticated call to a mapping's provider; result on the row"
    )
    test_conn.add_argument("mapping", help="mapping id, system name or system/stream")
    test_conn.add_argument("--json", action="store_true", help="print the result as JSON")
    test_conn.set_defaults(func=cmd_test_connection)

    demo = sub.add_parser("demo", help="sync the demo catalog against the local emulators through Dagster")
    demo.add_argument("--customers", type=int, default=200)
    demo.add_argument("--charges", type=int, default=1000)
    demo.add_argument("--port", type=int, default=None, help="Stripe emulator port (default 12111)")
    demo.set_defaults(func=cmd_demo)

    hooks = sub.add_parser("webhooks", help="signed provider webhooks").add_subparsers(
        dest="webhooks_command", required=True
    )
    hooks_serve = hooks.add_parser(
        "serve", help="receive webhooks at POST /webhooks/<mapping> (ASGI, uvicorn)"
    )
    hooks_serve.add_argument("--host", default="127.0.0.1")
    hooks_serve.add_argument("--port", type=int, default=8787)
    hooks_serve.set_defaults(func=cmd_webhooks_serve)

    ui = sub.add_parser("ui", help="start the emulators and `dagster dev` on the demo catalog")
    ui.add_argument("--port", type=int, default=None, help="Stripe emulator port (default 12111)")
    ui.add_argument("--ui-port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)
    return parser


def _terminated(signum: int, frame: Any) -> None:
    # SIGTERM (a service manager, `kill`) ends a sync like Ctrl-C: the engine records the run as
    # interrupted (committed batches stay, a re-run resumes) instead of dying with it `running`.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import signal
    import threading

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _run_as_operator(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `esm ... | head`: the reader left; the command's work is done, the rest of its output
        # has nowhere to go (Python's advice: point stdout at devnull so the exit flush is quiet).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # one clear line, secrets scrubbed, for every user-caused failure
        if os.environ.get("ESM_DEBUG") == "1":
            raise
        print(f"esm: error: {_error_line(exc)}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
