"""The leak scan's machinery: failure classes, the Dagster and CLI legs, the places scanned.

`test_leak_scan*.py` each run a shard of `leak_cases.CASES` through `scan_provider` (the files are
split so that `pytest -n --dist loadfile` spreads the providers over workers); the module docstring
of `test_leak_scan.py` says what is run and scanned.
"""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import (
    MappingError,
    MappingInput,
    get_mapping,
    spec_from_row,
    upsert_mapping,
)
from esm_dagster.catalog.migrate import upgrade
from esm_dagster.catalog.models import User, UserRole
from esm_dagster.cli import main
from esm_dagster.orchestration.assets import build_mapping_asset
from esm_dagster.orchestration.resources import CatalogResource, ProvidersResource, VaultResource
from esm_dagster.orchestration.sensors import build_run_failure_sensor
from esm_dagster.providers.factory import build_provider
from esm_dagster.sandbox._http import LoopbackEmulator
from esm_dagster.security.vault import Vault, generate_key
from esm_dagster_tests.security.hostile import HostileServer
from esm_dagster_tests.security.leak_cases import CASES, OWNER, LeakCase

PAGER_AUTH = "Bearer pager-leakscan-Tk8Jm2WqR4"
PAGER_TOKEN = "hookleak7Yp3ZrQ9sL2xV5"
CHAT_TOKEN = "T0CHATLEAK/B0CHATLEAK/chatHookToken8Kd3"  # a Slack webhook URL's path is its token


@dataclass(frozen=True)
class Fault:
    inject: Callable[[LoopbackEmulator], None] | None = None
    hostile: str | None = None  # the HostileServer mode that answers instead of the emulator
    undecryptable: bool = False


FAULTS: dict[str, Fault] = {
    "success": Fault(),
    "401_revoked_key": Fault(lambda e: e.faults.expire_credentials_after(0)),
    "403": Fault(lambda e: e.faults.fail_next(3, status=403)),
    "429_beyond_max_delay": Fault(lambda e: e.faults.rate_limit_next(3, retry_after=3600)),
    "5xx_burst": Fault(lambda e: e.faults.fail_next(4, status=503)),
    "timeout": Fault(lambda e: e.faults.delay_next(2, seconds=1.5)),
    "dropped_connection": Fault(lambda e: e.faults.disconnect_next(3)),
    "invalid_json": Fault(hostile="invalid_json"),
    "redirect": Fault(hostile="redirect"),
    "error_body_echoes_credential": Fault(hostile="echo_error"),
    "undecryptable_credential": Fault(undecryptable=True),
}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Scan:
    """Text gathered from every place a secret could land, labelled by where and when."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("latin-1")
        self.texts.append((where, text))

    def hits(self, secrets: list[str]) -> list[str]:
        found = []
        for where, text in self.texts:
            for secret in secrets:
                at = text.find(secret)
                if at >= 0:
                    found.append(f"{where}: {secret!r} in ...{text[max(0, at - 160) : at + 40]!r}...")
        return found


def register(url: str, case: LeakCase, root: str, *, undecryptable: bool = False) -> None:
    with session_factory(url).begin() as session:
        if session.scalar(sa.select(User).where(User.email == OWNER)) is None:
            session.add(User(email=OWNER, full_name="Leak scan", role=UserRole.ADMIN))
            session.flush()
        upsert_mapping(session, Vault.from_env(), MappingInput.model_validate(case.mapping(root)))
        if undecryptable:
            row = get_mapping(session, case.ref)
            row.credentials = Vault([generate_key()]).encrypt(case.credentials)


def prepare(
    url: str, case: LeakCase, fault: Fault, emulator: LoopbackEmulator, hostile: HostileServer
) -> None:
    emulator.faults.clear()
    if fault.hostile:
        hostile.mode = fault.hostile
    register(url, case, hostile.url if fault.hostile else emulator.url, undecryptable=fault.undecryptable)
    if fault.inject:
        fault.inject(emulator)


class DagsterLeg:
    """The mapping's asset as a job on a real instance, and the run-failure sensor after a failure."""

    def __init__(self, url: str, case: LeakCase, instance: dg.DagsterInstance) -> None:
        with session_factory(url)() as session:
            spec = spec_from_row(get_mapping(session, case.ref))
        job = dg.define_asset_job("leak_scan_sync", selection=dg.AssetSelection.all())
        defs = dg.Definitions(
            assets=[build_mapping_asset(spec)],
            jobs=[job],
            resources={
                "catalog": CatalogResource(database_url=url),
                "vault": VaultResource(),
                "providers": ProvidersResource(),
            },
        )
        self.job = defs.resolve_job_def("leak_scan_sync")
        self.on_failure = build_run_failure_sensor([spec], url)
        self.instance = instance

    def run(self) -> bool:
        result = self.job.execute_in_process(instance=self.instance, raise_on_error=False)
        if result.success:
            return True
        event = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
        context = dg.build_run_status_sensor_context(
            sensor_name=self.on_failure.name,
            dagster_instance=self.instance,
            dagster_run=result.dagster_run,
            dagster_event=event,
        ).for_run_failure()
        self.on_failure(context)
        return False


def through_client(url: str, case: LeakCase, scan: Scan, label: str) -> None:
    """The failure provoked on a client built from the row: the error objects themselves."""
    with session_factory(url)() as session:
        row = get_mapping(session, case.ref)
        session.expunge(row)
    try:
        provider = build_provider(row, Vault.from_env().decrypt(row.credentials, mapping=repr(case.ref)))
        scan.add(f"{label} repr(provider)", f"{provider!r} {provider}")
        with provider:
            provider.probe()
    except Exception as exc:
        scan.add(f"{label} error", f"{exc!s} {exc!r} {''.join(traceback.format_exception(exc))}")


def dump_catalog(url: str, scan: Scan, db_file: Path) -> dict[str, list[Any]]:
    """Every row of every table into the scan; the rows by table for the caller's checks."""
    engine = get_engine(url)
    metadata = sa.MetaData()
    metadata.reflect(engine)
    assert {"esm_quarantine", "esm_sync_run", "esm_audit_log", "esm_webhook_inbox", "esm_alert"} <= set(
        metadata.tables
    )
    tables: dict[str, list[Any]] = {}
    with engine.connect() as conn:
        for name, table in metadata.tables.items():
            tables[name] = [row._mapping for row in conn.execute(sa.select(table)).all()]
            for row in tables[name]:
                scan.add(f"catalog table {name}", repr(tuple(row.values())))
    engine.dispose()
    for path in db_file.parent.glob(db_file.name + "*"):
        scan.add(f"catalog file {path.name}", path.read_bytes())
    return tables


def dump_dagster(instance: dg.DagsterInstance, home: Path, scan: Scan) -> int:
    runs = instance.get_runs()
    for run in runs:
        scan.add(f"dagster run {run.run_id}", dg.serialize_value(run))
        for entry in instance.all_logs(run.run_id):
            scan.add(f"dagster event {entry.dagster_event_type}", dg.serialize_value(entry))
    for path in home.rglob("*"):
        if path.is_file():
            scan.add(f"dagster file {path.relative_to(home)}", path.read_bytes())
    return len(runs)


def add_logs(scan: Scan, records: list[logging.LogRecord]) -> None:
    formatter = logging.Formatter("%(message)s")
    for record in records:
        scan.add(f"log {record.name} {record.levelname}", f"{formatter.format(record)} {record.__dict__!r}")


def scan_provider(
    provider: str,
    tmp_path: Path,
    fernet_key: str,
    alert_secrets: list[str],
    debug_logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sync `provider`'s mapping in every failure class both ways, scan everything, assert no hit."""
    case = CASES[provider]
    db_file = tmp_path / "catalog.db"
    url = f"sqlite:///{db_file}"
    monkeypatch.setenv("ESM_DATABASE_URL", url)
    upgrade(url)
    scan = Scan()
    outcomes: dict[str, tuple[bool, str]] = {}  # failure class -> (both legs succeeded, stderr)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with (
        dg.DagsterInstance.local_temp(tempdir=str(home)) as instance,
        case.start(case) as emulator,
        HostileServer() as hostile,
    ):
        register(url, case, emulator.url)
        # A key pasted into the rules is refused on write, without being echoed or stored.
        pasted = case.mapping(emulator.url)
        secret_value = next(v for k, v in case.credentials.items() if k not in case.not_secret)
        pasted["mapping_rules"]["field_mappings"][f"metadata.{secret_value}"] = f"{case.table}.pasted"
        with session_factory(url).begin() as session, pytest.raises(MappingError) as refused:
            upsert_mapping(session, Vault.from_env(), MappingInput.model_validate(pasted))
        scan.add("pasted key refusal", f"{refused.value!s} {refused.value!r}")
        assert "mapping_rules" in str(refused.value)

        dagster = DagsterLeg(url, case, instance)
        for name, fault in FAULTS.items():
            prepare(url, case, fault, emulator, hostile)
            dagster_ok = dagster.run()
            prepare(url, case, fault, emulator, hostile)
            code = main(["sync", case.ref])
            prepare(url, case, fault, emulator, hostile)
            through_client(url, case, scan, name)
            out, err = capfd.readouterr()
            scan.add(f"{name} stdout", out)
            scan.add(f"{name} stderr", err)
            outcomes[name] = (dagster_ok and code == 0, err[-3000:])
        scan.add("emulator request log", repr(emulator.requests))
        runs = dump_dagster(instance, home, scan)
    out, err = capfd.readouterr()
    scan.add("stdout", out)
    scan.add("stderr", err)
    add_logs(scan, debug_logs.records)
    tables = dump_catalog(url, scan, db_file)

    # The matrix did what it says: one Dagster run per failure class, the failures failed, in
    # the classes the transport gives them, and each Dagster failure tried the alert channel.
    assert runs == len(FAULTS)
    classes = {r["error_class"] for r in tables["esm_sync_run"]}
    assert {"auth", "rate_limit", "server", "timeout", "network", "credential_error"} <= classes, classes
    by_channel = {
        c: [r["status"] for r in tables["esm_alert"] if r["channel"] == c] for c in ("pager", "chat")
    }
    assert by_channel == {"pager": ["failed"] * (len(FAULTS) - 1), "chat": ["sent"] * (len(FAULTS) - 1)}
    assert outcomes["success"][0], outcomes["success"][1]
    assert [n for n, (ok, _) in outcomes.items() if ok] == ["success"]
    assert "httpx" in {r.name for r in debug_logs.records}  # the transport's own logger was captured
    secrets = case.secrets() + alert_secrets
    hits = scan.hits(secrets)
    assert not hits, "\n".join([f"{len(hits)} leaks:", *hits])


SHARDS = 3  # test_leak_scan.py, test_leak_scan_b.py, test_leak_scan_c.py


def shard(index: int) -> list[str]:
    """The providers one test file scans: every provider lands in exactly one file."""
    return sorted(CASES)[index::SHARDS]
