"""`make prod-check`: the production profile (`deploy/dagster.prod.yaml`) on a real PostgreSQL.

It proves the path a production run takes, not a shortcut around it: a fresh database on the
server holds Dagster's storage and (in schema `esm`) the catalog; the instance is built from the
profile; `dagster job launch` puts a demo sync in the queue, `dagster-daemon run` dequeues it under
the per-provider tag limits and launches it, the run syncs the Stripe emulator into the catalog,
and the run, its events and the rows are read back from PostgreSQL. The database is dropped at
the end, pass or fail.

    ESM_PROD_CHECK_URL=postgresql+psycopg2://USER:PASSWORD@HOST:5432/DB python -m deploy.prod_check

(`--admin-url` also works, but a command line shows in `ps`, and the URL may hold a password.)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

PROFILE = Path(__file__).with_name("dagster.prod.yaml")
REPO_ROOT = PROFILE.parents[1]
DEFAULT_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
CATALOG_SCHEMA = "esm"
JOB = "esm_sync_hourly__asia_bangkok"  # the demo's customers mapping
RUNS = 3  # one more than the profile's per-provider limit: the last must wait for a slot
DEFINITIONS_MODULE = "esm_dagster.definitions"


@dataclass
class ProdCheck:
    """What the check saw; `ok` is the verdict, `failures` say which part broke."""

    storage: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None
    run_status: str | None = None
    queued_before_daemon: bool = False
    tag_limits: list[dict[str, object]] = field(default_factory=list)
    materializations_in_event_log: int = 0
    rows_in_catalog: int = 0
    # The per-provider limit at work: RUNS runs of one provider queued, at most `limit` at once.
    run_statuses: dict[str, str | None] = field(default_factory=dict)
    most_in_progress: int = 0
    one_waited_for_a_slot: bool = False
    seconds: float = 0.0
    leftover_processes: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


@contextmanager
def scratch_database(admin_url: str) -> Iterator[tuple[str, str]]:
    """A database of its own on the server: (Dagster storage URL, catalog URL in schema `esm`)."""
    from esm_dagster.catalog.db import normalize_url

    name = f"esm_prod_check_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = sa.engine.make_url(normalize_url(admin_url)).set(database=name)
    storage_url = base.render_as_string(hide_password=False)
    catalog_url = base.update_query_dict({"options": f"-csearch_path={CATALOG_SCHEMA}"})
    try:
        engine = sa.create_engine(storage_url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{CATALOG_SCHEMA}"'))
        engine.dispose()
        yield storage_url, catalog_url.render_as_string(hide_password=False)
    finally:
        from esm_dagster.catalog.db import get_engine

        get_engine(catalog_url.render_as_string(hide_password=False)).dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (Linux /proc; empty where there is none)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            members.append(int(stat.parent.name))
    return members


def stop_process_group(leader: subprocess.Popen[bytes], grace: float = 20) -> list[int]:
    """SIGTERM to the leader's whole group, SIGKILL to whatever is left after `grace` seconds;
    returns the processes still alive after that (none, unless something ignores SIGKILL)."""
    pgid = leader.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while group_members(pgid) and time.monotonic() < deadline:
        leader.poll()  # reap the leader as soon as it exits
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        leader.wait(5)
    deadline = time.monotonic() + 5
    while (left := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _launch(env: dict[str, str], count: int) -> str | None:
    """`dagster job launch` `count` times at once (they only queue); the stderr of one that failed."""
    command = [sys.executable, "-m", "dagster", "job", "launch", "-m", DEFINITIONS_MODULE, "-j", JOB]
    launches = [
        subprocess.Popen(  # noqa: S603 (our own interpreter, fixed arguments)
            command,
            env=env,
            cwd=env["DAGSTER_HOME"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    refused = None
    for launch in launches:
        _, err = launch.communicate(timeout=120)
        if launch.returncode != 0:
            refused = err
    return refused


_IN_PROGRESS = ("STARTING", "STARTED")
_ENDED = ("SUCCESS", "FAILURE", "CANCELED")


def _watch_runs(check: ProdCheck, storage_url: str, run_ids: list[str], deadline: float) -> None:
    """Poll PostgreSQL's `runs` table until every run ended: how many ran at once, and whether one
    waited in the queue while the provider's limit was taken."""
    limit = next((int(t["limit"]) for t in check.tag_limits if t.get("key") == "esm/provider"), 0)  # type: ignore[call-overload]
    engine = sa.create_engine(storage_url)
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text("select run_id, status from runs where run_id = any(:ids)"), {"ids": run_ids}
                ).all()
            check.run_statuses = {row.run_id: row.status for row in rows}
            statuses = list(check.run_statuses.values())
            running = sum(status in _IN_PROGRESS for status in statuses)
            check.most_in_progress = max(check.most_in_progress, running)
            if running == limit and "QUEUED" in statuses:
                check.one_waited_for_a_slot = True
            if len(statuses) == len(run_ids) and all(status in _ENDED for status in statuses):
                return
            time.sleep(0.2)
    finally:
        engine.dispose()


def run_check(admin_url: str = DEFAULT_ADMIN_URL, timeout: float = 150) -> ProdCheck:
    import dagster as dg

    from esm_dagster.demo.run import DEMO_STRIPE_KEY, register_demo_catalog
    from esm_dagster.sandbox.stripe import StripeEmulator
    from esm_dagster.security.vault import generate_key

    check = ProdCheck()
    started = time.monotonic()
    with scratch_database(admin_url) as (storage_url, catalog_url), tempfile.TemporaryDirectory() as home:
        shutil.copyfile(PROFILE, Path(home) / "dagster.yaml")
        env = {
            **os.environ,
            "DAGSTER_HOME": home,
            "DAGSTER_PG_URL": storage_url,
            "ESM_DATABASE_URL": catalog_url,
            "ESM_HOME": str(Path(home) / "esm"),
            "ESM_FERNET_KEYS": generate_key(),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
        env.pop("ESM_FERNET_KEYS_FILE", None)
        # Sandbox mode: the demo mappings point at the Stripe emulator on loopback.
        env["ESM_ALLOW_LOOPBACK"] = "1"
        saved = {k: os.environ.get(k) for k in ("DAGSTER_PG_URL", "ESM_FERNET_KEYS", "ESM_ALLOW_LOOPBACK")}
        for key in saved:
            os.environ[key] = env[key]
        try:
            emulator = StripeEmulator(api_keys=[DEMO_STRIPE_KEY], customers=60, charges=200, seed=5)
            emulator.start()
            try:
                register_demo_catalog(catalog_url, emulator.url)
                with dg.DagsterInstance.from_config(home) as instance:
                    check.storage = {
                        "runs": type(instance.run_storage).__name__,
                        "events": type(instance.event_log_storage).__name__,
                        "schedules": type(instance.schedule_storage).__name__,
                        "run_coordinator": type(instance.run_coordinator).__name__,
                    }
                    queue = instance.get_concurrency_config().run_queue_config
                    check.tag_limits = [dict(x) for x in queue.tag_concurrency_limits] if queue else []
                # The first list call of each run is slowed, so runs overlap long enough to see
                # the limit hold the last one back.
                emulator.faults.delay_next(RUNS, seconds=2.0, path="/v1/customers")
                refused = _launch(env, RUNS)
                if refused:
                    check.failures.append(f"`dagster job launch` failed: {refused[-2000:]}")
                    return check
                queued = _queued_runs(storage_url, JOB)
                check.run_id = queued[0][0]
                check.queued_before_daemon = len(queued) == RUNS and all(q for _, q in queued)
                daemon_log = Path(home) / "daemon.log"
                with daemon_log.open("w") as log_file:
                    # Its own process group: the daemon starts a code server (`dagster api grpc`)
                    # that outlived it when only the daemon was stopped.
                    daemon = subprocess.Popen(  # noqa: S603
                        [sys.executable, "-m", "dagster._daemon", "run", "-m", DEFINITIONS_MODULE],
                        env=env, cwd=home, stdout=log_file, stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )  # fmt: skip
                try:
                    _watch_runs(check, storage_url, [run_id for run_id, _ in queued], started + timeout)
                    check.run_status = check.run_statuses.get(check.run_id)
                finally:
                    check.leftover_processes = stop_process_group(daemon)
                if check.leftover_processes:
                    check.failures.append(
                        f"processes of the daemon's group survived SIGTERM and SIGKILL: {check.leftover_processes}"
                    )
                if set(check.run_statuses.values()) != {"SUCCESS"}:
                    check.failures.append(f"daemon log: {daemon_log.read_text()[-2000:]}")
                _read_back(check, storage_url, catalog_url)
            finally:
                emulator.stop()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    check.seconds = round(time.monotonic() - started, 1)
    _judge(check)
    return check


def _queued_runs(storage_url: str, job: str) -> list[tuple[str, bool]]:
    """(run id, still queued) of the job's runs, oldest first."""
    engine = sa.create_engine(storage_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("select run_id, status from runs where pipeline_name = :j order by id"), {"j": job}
            ).all()
    finally:
        engine.dispose()
    if not rows:
        raise RuntimeError(f"no launched run of {job} in PostgreSQL")
    return [(row.run_id, row.status == "QUEUED") for row in rows]


def _read_back(check: ProdCheck, storage_url: str, catalog_url: str) -> None:
    engine = sa.create_engine(storage_url)
    try:
        with engine.connect() as conn:
            check.materializations_in_event_log = conn.execute(
                sa.text(
                    "select count(*) from event_logs where run_id = :r "
                    "and dagster_event_type = 'ASSET_MATERIALIZATION'"
                ),
                {"r": check.run_id},
            ).scalar_one()
    finally:
        engine.dispose()
    catalog = sa.create_engine(catalog_url)
    try:
        with catalog.connect() as conn:
            check.rows_in_catalog = conn.execute(sa.text('select count(*) from "user"')).scalar_one()
    finally:
        catalog.dispose()


def _judge(check: ProdCheck) -> None:
    expected = {
        "runs": "PostgresRunStorage",
        "events": "PostgresEventLogStorage",
        "schedules": "PostgresScheduleStorage",
        "run_coordinator": "QueuedRunCoordinator",
    }
    for part, name in expected.items():
        if check.storage.get(part) != name:
            check.failures.append(f"{part}: expected {name}, the instance has {check.storage.get(part)}")
    if not any(limit.get("key") == "esm/provider" for limit in check.tag_limits):
        check.failures.append("no per-provider (esm/provider) tag limit in the run queue")
    if not check.queued_before_daemon:
        check.failures.append(f"the {RUNS} launched runs did not all wait in the queue for the daemon")
    for run_id, status in check.run_statuses.items():
        if status != "SUCCESS":
            check.failures.append(f"run {run_id} ended {status}")
    limit = next((t["limit"] for t in check.tag_limits if t.get("key") == "esm/provider"), None)
    if check.most_in_progress > (limit if isinstance(limit, int) else RUNS):
        check.failures.append(f"{check.most_in_progress} runs of one provider at once (limit {limit})")
    if not check.one_waited_for_a_slot:
        check.failures.append(f"no run waited in the queue while {limit} runs of its provider ran")
    if check.materializations_in_event_log < 1:
        check.failures.append("no asset materialization in the PostgreSQL event log")
    if check.rows_in_catalog < 1:
        check.failures.append("no customer rows landed in the catalog's `user` table")


def admin_url_problem(url: str) -> str | None:
    """Why `url` cannot be the server the check runs on, in one line without its password."""
    from esm_dagster.catalog.db import catalog_url_problem, unparsed_url_shown

    problem = catalog_url_problem(url, variable="PROD_CHECK_URL")
    try:
        parsed = sa.engine.make_url(url)
        parsed.port  # noqa: B018 (raises for a port that is not a number)
    except (sa.exc.ArgumentError, ValueError):
        return (
            f"PROD_CHECK_URL {unparsed_url_shown(url)!r} is not a PostgreSQL URL (e.g. {DEFAULT_ADMIN_URL})"
        )
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        return (
            f"PROD_CHECK_URL names a {parsed.get_backend_name()} database "
            f"({parsed.render_as_string(hide_password=True)}); it must name a PostgreSQL server: "
            "the production profile stores runs there"
        )
    return problem


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--admin-url", default=os.environ.get("ESM_PROD_CHECK_URL", DEFAULT_ADMIN_URL))
    args = parser.parse_args()
    if problem := admin_url_problem(args.admin_url):
        print(f"prod-check: {problem}", file=sys.stderr)
        return 2
    shown = sa.engine.make_url(args.admin_url).render_as_string(hide_password=True)
    print(f"prod-check on {shown} (a scratch database there, dropped at the end)", flush=True)
    try:
        check = run_check(args.admin_url)
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
        print(f"prod-check: cannot use {shown}: {reason}", file=sys.stderr)
        return 2
    for part, name in check.storage.items():
        print(f"{part:16} {name}")
    limits = ", ".join(
        f"{t['key']} {t['limit']}" + (" per value" if t.get("value") else "") for t in check.tag_limits
    )
    print(f"{'run queue limits':16} {limits or 'none'}")
    print(f"{'catalog':16} schema {CATALOG_SCHEMA!r} of the same database as Dagster's storage")
    ended = ", ".join(sorted(f"{v}" for v in check.run_statuses.values()))
    print(f"{RUNS} runs of one provider queued={check.queued_before_daemon} -> {ended}")
    print(
        f"at most {check.most_in_progress} in progress at once; one waited for a slot: "
        f"{check.one_waited_for_a_slot}"
    )
    print(f"materializations in event_logs: {check.materializations_in_event_log}")
    print(f"rows in catalog user table: {check.rows_in_catalog}; {check.seconds}s")
    for failure in check.failures:
        print(f"FAILED {failure}")
    print("prod-check OK" if check.ok else "prod-check FAILED")
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
