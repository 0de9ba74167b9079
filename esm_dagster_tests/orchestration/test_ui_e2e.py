"""End to end through the Dagster UI's own API: `dagster dev` on a throwaway instance and catalog.

One test, in the order a data engineer would use the UI:

1. the generated assets are listed (keys `esm/stripe/customers` and `esm/stripe/charges`, group
   `stripe`);
2. a manual full-refresh sync of the customers mapping (`launchRun` of its cadence-group job with
   `SyncRunConfig` as run config) succeeds and fills `user`;
3. a backfill of three daily Asia/Bangkok partitions of `esm/stripe/charges`
   (`launchPartitionBackfill`) completes with three successful runs, loads exactly the charges the
   emulator has in those three local days, and a second identical backfill adds no rows;
4. `esm mapping disable` and `enable` of the customers mapping reload the running UI (the asset
   leaves and comes back);
5. with the emulator answering 500 to everything and the mapping set to fail fast (no retries,
   error threshold 1, code location reloaded through GraphQL), a charges sync fails; the
   run-failure sensor (under the real daemon) posts exactly one alert to a loopback webhook, naming
   the mapping and the run and holding no Stripe key; the mapping row is in `error` with its
   counter and message; one more sensor interval later there is still exactly one alert.

Everything runs on loopback, in `tmp_path`, on SQLite (independent of `ESM_TEST_DATABASE_URL`).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import yaml

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import get_mapping
from esm_dagster.catalog.migrate import upgrade
from esm_dagster.catalog.models import ExternalSystemMapping, QuarantineRecord, SyncStatus
from esm_dagster.demo.run import DEMO_STRIPE_KEY, REPO_ROOT, register_demo_catalog
from esm_dagster.rules.preview import preview
from esm_dagster.sandbox.stripe import StripeEmulator
from esm_dagster.security.vault import generate_key
from esm_dagster_tests.dagster_dev import DagsterDev, DagsterDevError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

LOCATION = "esm"
HOURLY_JOB = "esm_sync_hourly__asia_bangkok"  # the demo's customers mapping (hourly, Asia/Bangkok)
DAILY_JOB = "esm_sync_daily__asia_bangkok"  # the demo's charges mapping (daily, Asia/Bangkok)
CUSTOMERS = ["esm", "stripe", "customers"]
CHARGES = ["esm", "stripe", "charges"]
CUSTOMERS_OP = "esm__stripe__customers"
BANGKOK = ZoneInfo("Asia/Bangkok")
SEED_START = dt.datetime(2026, 11, 1, tzinfo=BANGKOK)  # charges created 2026-11-01 .. 2026-11-04 local
SEED_END = dt.datetime(2026, 11, 5, tzinfo=BANGKOK)
PARTITIONS = ["2026-11-01", "2026-11-02", "2026-11-03"]
WINDOW = (dt.datetime(2026, 11, 1, tzinfo=BANGKOK), dt.datetime(2026, 11, 4, tzinfo=BANGKOK))
HOOK_PATH = "/esm-alerts"

# Timeouts: generous for a loaded 2-core CI machine, but bounded.
READY_TIMEOUT = 240  # dagster dev: webserver + daemon + code server, and the location loaded
RUN_TIMEOUT = 150  # one run: queued -> dequeued (<=5 s) -> worker and step processes -> done
BACKFILL_TIMEOUT = 240  # the backfill daemon loops every 30 s: submit, runs, then mark complete
ALERT_TIMEOUT = 120  # the run-failure sensor ticks every ~30 s under the daemon
NEXT_TICK_TIMEOUT = 100  # one more run-failure sensor tick (30 s interval plus the daemon's slack)
FAILURE_SENSOR = "esm_run_failure_sensor"


# ---- GraphQL documents ---------------------------------------------------------------------------
ASSETS = """
query {
  assetNodes {
    assetKey { path }
    groupName
    opName
    jobNames
    isPartitioned
    kinds
  }
}
"""

SCHEDULES = """
query($repo: RepositorySelector!) {
  schedulesOrError(repositorySelector: $repo) {
    __typename
    ... on Schedules { results { name scheduleState { id status } } }
    ... on PythonError { message }
  }
}
"""

STOP_SCHEDULE = """
mutation($id: String!) {
  stopRunningSchedule(id: $id) {
    __typename
    ... on ScheduleStateResult { scheduleState { name status } }
    ... on PythonError { message }
    ... on ScheduleNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}
"""

SENSORS = """
query($repo: RepositorySelector!) {
  sensorsOrError(repositorySelector: $repo) {
    __typename
    ... on Sensors { results { name sensorState { status } } }
    ... on PythonError { message }
  }
}
"""

LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

BACKFILL = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id
      status
      numPartitions
      error { message }
      assetBackfillData {
        assetBackfillStatuses {
          ... on AssetPartitionsStatusCounts {
            assetKey { path }
            numPartitionsTargeted
            numPartitionsMaterialized
            numPartitionsFailed
            numPartitionsInProgress
          }
        }
      }
    }
    ... on BackfillNotFoundError { message }
    ... on PythonError { message }
  }
}
"""

SENSOR_TICKS = """
query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor {
      sensorState { ticks(limit: 20) { status timestamp endTimestamp skipReason error { message } } }
    }
    ... on PythonError { message }
    ... on Error { message }
  }
}
"""

RUNS_BY_TAG = """
query($filter: RunsFilter!) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status jobName tags { key value } } }
    ... on PythonError { message }
    ... on InvalidPipelineRunsFilterError { message }
  }
}
"""

RELOAD = """
mutation($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry {
      name
      loadStatus
      locationOrLoadError {
        __typename
        ... on RepositoryLocation { name }
        ... on PythonError { message stack }
      }
    }
    ... on ReloadNotSupported { message }
    ... on RepositoryLocationNotFound { message }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""


# ---- a loopback receiver for generic-webhook alerts -----------------------------------------------
class AlertReceiver:
    """Records every POST (path, headers, raw body, parsed JSON) and answers 200."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = None
                with receiver.lock:
                    receiver.posts.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "raw": raw.decode("utf-8", errors="replace"),
                            "json": body,
                        }
                    )
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1})
        self.thread.daemon = True
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.posts)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def describe_posts(posts: list[dict[str, Any]]) -> str:
    return (
        "\n".join(
            f"  {p['path']} run_id={(p['json'] or {}).get('run_id')} subject={(p['json'] or {}).get('subject')!r}"
            for p in posts
        )
        or "  (none)"
    )


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def emulator() -> Iterator[StripeEmulator]:
    emu = StripeEmulator(
        api_keys=[DEMO_STRIPE_KEY],
        customers=60,
        charges=240,
        seed=11,
        start=int(SEED_START.timestamp()),
        end=int(SEED_END.timestamp()),
    )
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def receiver() -> Iterator[AlertReceiver]:
    server = AlertReceiver()
    try:
        yield server
    finally:
        server.close()


def write_dagster_yaml(dagster_home: Path) -> None:
    """The repo's dagster.yaml (queued run coordinator, per-provider limits), checked not to block.

    Only two things are adjusted for the test: the queue is polled every second instead of every
    five, and run monitoring is left on but with limits no healthy run of this test can reach.
    """
    dagster_home.mkdir(parents=True)
    source = REPO_ROOT / "dagster.yaml"
    assert source.exists(), f"{source} is missing: the test runs the repo's own instance settings"
    config = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    coordinator = config.get("run_coordinator") or {}
    assert coordinator.get("class") == "QueuedRunCoordinator", (
        f"{source}: expected the QueuedRunCoordinator, got {coordinator!r}"
    )
    coordinator.setdefault("config", {})["dequeue_interval_seconds"] = 1
    runs = (config.get("concurrency") or {}).get("runs") or {}
    max_runs = runs.get("max_concurrent_runs", -1)
    assert max_runs == -1 or max_runs >= 2, f"{source}: max_concurrent_runs={max_runs} would block"
    for limit in runs.get("tag_concurrency_limits") or []:
        assert limit.get("limit", 1) >= 1, f"{source}: tag concurrency limit {limit!r} blocks every run"
    pools = (config.get("concurrency") or {}).get("pools") or {}
    assert pools.get("default_limit", 1) >= 1, (
        f"{source}: pools.default_limit={pools['default_limit']} blocks"
    )
    monitoring = config.get("run_monitoring")
    if monitoring is not None and monitoring.get("enabled", True):
        monitoring["start_timeout_seconds"] = max(int(monitoring.get("start_timeout_seconds", 0)), 300)
    config.setdefault("telemetry", {})["enabled"] = False
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def count(url: str, table: str) -> int:
    with get_engine(url).connect() as conn:
        if not sa.inspect(conn).has_table(table):
            return 0
        return int(conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one())


def external_ids(url: str, table: str, source: str | None = None) -> set[str]:
    """The synced rows' external ids (`source` = `<system>/<stream>` to keep only those)."""
    query = f'SELECT esm_external_id FROM "{table}" WHERE esm_external_id IS NOT NULL'
    params = {}
    if source is not None:
        query += " AND esm_source = :source"
        params["source"] = source
    with get_engine(url).connect() as conn:
        rows = conn.execute(sa.text(query), params).scalars().all()
    return {str(r) for r in rows}


def charges_in_window(emulator: StripeEmulator) -> list[dict[str, Any]]:
    start, end = (int(moment.timestamp()) for moment in WINDOW)
    out = []
    for charge_id in emulator.object_ids("charges"):
        charge = emulator.get_object("charges", charge_id)
        assert charge is not None
        if start <= charge["created"] < end:
            out.append(charge)
    return out


# ---- the test ------------------------------------------------------------------------------------
def test_dagster_ui_graphql_end_to_end(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    emulator: StripeEmulator,
    receiver: AlertReceiver,
) -> None:
    started = time.monotonic()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = round(time.monotonic() - started, 1)

    # ---- 1. catalog, key, instance, alerts --------------------------------------------------------
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    key = generate_key()
    env_vars = {
        "ESM_HOME": str(tmp_path / "esm_home"),
        "ESM_DATABASE_URL": url,
        "ESM_FERNET_KEYS": key,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "ESM_ALERTS_FILE": str(tmp_path / "alerts.yaml"),
    }
    for name, value in env_vars.items():
        monkeypatch.setenv(name, value)
    for name in ("ESM_FERNET_KEYS_FILE", "ESM_PARTITIONS_START", "ESM_DAGSTER_UI_URL"):
        monkeypatch.delenv(name, raising=False)
    upgrade(url)
    register_demo_catalog(url, emulator.url)
    write_dagster_yaml(tmp_path / "dagster_home")
    (tmp_path / "alerts.yaml").write_text(
        yaml.safe_dump({"channels": {"data-eng-hook": {"type": "webhook", "url": receiver.url(HOOK_PATH)}}}),
        encoding="utf-8",
    )
    with session_factory(url)() as session:
        customers_row = get_mapping(session, "stripe/customers")
        charges_row = get_mapping(session, "stripe/charges")
        charges_id = charges_row.id
        charges_rules = copy.deepcopy(charges_row.mapping_rules)
    window_charges = charges_in_window(emulator)
    expected = preview(charges_rules, window_charges)
    accepted_ids = {window_charges[a["index"]]["id"] for a in expected["accepted"]}
    assert window_charges and accepted_ids, "the emulator has no charges in 2026-11-01..03 Asia/Bangkok"
    assert emulator.count("charges") > len(window_charges), (
        "the seed must also have charges outside the window"
    )

    workspace = REPO_ROOT / "workspace.yaml"
    assert workspace.exists(), f"{workspace} is missing"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env.update(env_vars)
    env["PYTHONUNBUFFERED"] = "1"
    dev = DagsterDev(
        workspace=workspace,
        env=env,
        env_for_port=lambda port: {"ESM_DAGSTER_UI_URL": f"http://127.0.0.1:{port}"},
        log_path=tmp_path / "dagster_dev.log",
        cwd=tmp_path,
    )

    try:
        # ---- 2. dagster dev -------------------------------------------------------------------------
        dev.start(LOCATION, timeout=READY_TIMEOUT)
        lap("ready")
        repo = {"repositoryName": dev.repository_name, "repositoryLocationName": LOCATION}

        # No schedule may tick into the test (the hourly one fires at every full hour): stop them
        # all, as a person would in the UI. The sensors stay on: the failure sensor is under test.
        schedules = dev.graphql(SCHEDULES, {"repo": repo})["schedulesOrError"]
        assert schedules["__typename"] == "Schedules", schedules
        for schedule in schedules["results"]:
            if schedule["scheduleState"]["status"] == "RUNNING":
                stopped = dev.graphql(STOP_SCHEDULE, {"id": schedule["scheduleState"]["id"]})
                result = stopped["stopRunningSchedule"]
                assert result["__typename"] == "ScheduleStateResult", (schedule["name"], result)
                assert result["scheduleState"]["status"] == "STOPPED", (schedule["name"], result)
        sensors = dev.graphql(SENSORS, {"repo": repo})["sensorsOrError"]
        assert sensors["__typename"] == "Sensors", sensors
        sensor_status = {s["name"]: s["sensorState"]["status"] for s in sensors["results"]}
        assert sensor_status.get("esm_run_failure_sensor") == "RUNNING", sensor_status

        # ---- 3a. the assets ------------------------------------------------------------------------
        nodes = {tuple(n["assetKey"]["path"]): n for n in dev.graphql(ASSETS)["assetNodes"]}
        for path in (CUSTOMERS, CHARGES):
            assert tuple(path) in nodes, f"asset {'/'.join(path)} not listed; have {sorted(nodes)}"
            assert nodes[tuple(path)]["groupName"] == "stripe", nodes[tuple(path)]
            assert nodes[tuple(path)]["isPartitioned"], nodes[tuple(path)]
        assert not [p for p in nodes if p[:2] == ("esm", "stripe_legacy_account")], "inactive mapping listed"
        assert nodes[tuple(CUSTOMERS)]["opName"] == CUSTOMERS_OP, nodes[tuple(CUSTOMERS)]
        assert HOURLY_JOB in nodes[tuple(CUSTOMERS)]["jobNames"], nodes[tuple(CUSTOMERS)]["jobNames"]
        assert DAILY_JOB in nodes[tuple(CHARGES)]["jobNames"], nodes[tuple(CHARGES)]["jobNames"]

        # ---- 3b. manual full-refresh sync of the customers --------------------------------------
        def launch_run(job: str, run_config: dict[str, Any], tags: dict[str, str]) -> str:
            params = {
                "selector": {**repo, "jobName": job},
                "runConfigData": run_config,
                "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
            }
            result = dev.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
            if result["__typename"] != "LaunchRunSuccess":
                raise dev.error(f"launchRun of {job} failed: {json.dumps(result, indent=1)[:4000]}")
            return str(result["run"]["runId"])

        def launch_backfill(title: str) -> str:
            params = {
                "partitionsByAssets": [
                    {
                        "assetKey": {"path": CHARGES},
                        "partitions": {"range": {"start": PARTITIONS[0], "end": PARTITIONS[-1]}},
                    }
                ],
                "title": title,
                "tags": [{"key": "esm/test", "value": "ui_e2e"}],
            }
            result = dev.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
            if result["__typename"] != "LaunchBackfillSuccess":
                raise dev.error(f"launchPartitionBackfill failed: {json.dumps(result, indent=1)[:4000]}")
            return str(result["backfillId"])

        customers_run = launch_run(
            HOURLY_JOB,
            {"ops": {CUSTOMERS_OP: {"config": {"full_refresh": True}}}},
            {"esm/trigger": "manual"},
        )
        # The backfill daemon picks backfills up on its own 30 s loop: launch it now, overlapping.
        first_backfill = launch_backfill("ui e2e: charges 2026-11-01..03")

        run = dev.wait_for_run(customers_run, RUN_TIMEOUT)
        assert run["status"] == "SUCCESS", (
            f"manual customers sync {customers_run} ended {run['status']}:\n{dev.failure_summary(customers_run)}"
        )
        lap("customers synced")
        written = {
            e["assetKey"]["path"][-1]: {
                m["label"]: m.get("intValue", m.get("boolValue")) for m in e["metadataEntries"]
            }
            for e in dev.run_events(customers_run)
            if e["__typename"] == "MaterializationEvent"
        }
        assert set(written) == {"customers"}, f"materializations of the customers run: {written}"
        assert written["customers"]["full_refresh"] is True, written
        users = len(external_ids(url, "user", source="stripe/customers"))
        assert written["customers"]["records_written"] == users, (
            f"records_written={written['customers']['records_written']} but user has {users} Stripe rows"
        )
        assert users + written["customers"]["records_rejected"] == emulator.count("customers"), (
            f"{users} users + {written['customers']['records_rejected']} rejected != "
            f"{emulator.count('customers')} customers in the emulator"
        )

        # ---- 3c. backfill of three partitions, then the same again --------------------------------
        def wait_for_backfill(backfill_id: str) -> list[dict[str, Any]]:
            last: dict[str, Any] = {}

            def probe() -> dict[str, Any] | None:
                data = dev.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
                assert data["__typename"] == "PartitionBackfill", data
                last.update(data)
                return data if data["status"] not in ("REQUESTED", "CANCELING", "FAILING") else None

            try:
                backfill = dev.wait_for(f"backfill {backfill_id}", probe, BACKFILL_TIMEOUT, interval=2.0)
            except DagsterDevError as exc:
                raise dev.error(f"backfill {backfill_id} not finished: {json.dumps(last)[:3000]}") from exc
            runs = dev.graphql(
                RUNS_BY_TAG, {"filter": {"tags": [{"key": "dagster/backfill", "value": backfill_id}]}}
            )["runsOrError"]
            assert runs["__typename"] == "Runs", runs
            results = runs["results"]
            failures = {
                r["runId"]: dev.failure_summary(r["runId"]) for r in results if r["status"] != "SUCCESS"
            }
            assert backfill["status"] == "COMPLETED_SUCCESS", (
                f"backfill {backfill_id}: {json.dumps(backfill)[:3000]}\nfailed runs: {failures}"
            )
            assert not failures, f"backfill {backfill_id} runs did not all succeed: {failures}"
            partitions = sorted(
                next(t["value"] for t in r["tags"] if t["key"] == "dagster/partition") for r in results
            )
            assert partitions == PARTITIONS, f"backfill {backfill_id} ran partitions {partitions}"
            return list(results)

        wait_for_backfill(first_backfill)
        lap("backfill 1")
        payments = count(url, "payment")
        quarantined = _quarantined(url, charges_id)
        assert external_ids(url, "payment") == accepted_ids, (
            f"payment holds {payments} rows; the emulator has {len(window_charges)} charges in "
            f"2026-11-01..03 Asia/Bangkok, of which the rules accept {len(accepted_ids)}"
        )
        assert payments == len(window_charges) - len(expected["rejected"])
        assert quarantined == len(expected["rejected"]), (quarantined, expected["rejected"][:3])

        second_backfill = launch_backfill("ui e2e: charges 2026-11-01..03 again")
        assert second_backfill != first_backfill
        wait_for_backfill(second_backfill)
        lap("backfill 2")
        assert count(url, "payment") == payments, "re-running the same backfill added payment rows"
        assert external_ids(url, "payment") == accepted_ids
        assert _quarantined(url, charges_id) == quarantined, "re-running the backfill added quarantine rows"

        # ---- 3d. a table change reaches the running UI: `esm mapping disable`, then `enable` -------
        def esm_cli(*args: str) -> str:
            done = subprocess.run(
                [str(Path(sys.executable).parent / "esm"), *args],
                env={**env, "ESM_DAGSTER_UI_URL": dev.url},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, f"esm {' '.join(args)}: {done.stderr}"
            assert f"reloaded code location 'esm' in the Dagster UI at {dev.url}" in done.stdout, done.stdout
            return done.stdout

        def listed() -> set[tuple[str, ...]]:
            return {tuple(n["assetKey"]["path"]) for n in dev.graphql(ASSETS)["assetNodes"]}

        esm_cli("mapping", "disable", "stripe/customers")
        assert tuple(CUSTOMERS) not in listed() and tuple(CHARGES) in listed(), listed()
        esm_cli("mapping", "enable", "stripe/customers")
        assert tuple(CUSTOMERS) in listed(), listed()
        lap("disable/enable reloaded")

        # ---- 4. a failing mapping: one alert, the row in error -----------------------------------
        with session_factory(url).begin() as session:
            row = session.get(ExternalSystemMapping, charges_id)
            assert row is not None
            assert row.error_count == 0 and row.sync_status == SyncStatus.ACTIVE, (
                row.error_count,
                row.sync_status,
            )
            row.retry_attempts = 0
            rules = copy.deepcopy(row.mapping_rules)
            rules.setdefault("sync_config", {})["error_threshold"] = 1
            row.mapping_rules = rules
        reloaded = dev.graphql(RELOAD, {"name": LOCATION})["reloadRepositoryLocation"]
        assert reloaded["__typename"] == "WorkspaceLocationEntry", reloaded
        assert reloaded["loadStatus"] == "LOADED", reloaded
        assert reloaded["locationOrLoadError"]["__typename"] == "RepositoryLocation", reloaded
        emulator.faults.fail_next(1_000_000, status=500)  # every request from here on: 500

        failing_run = launch_run(DAILY_JOB, {}, {"esm/trigger": "manual"})
        run = dev.wait_for_run(failing_run, RUN_TIMEOUT)
        assert run["status"] == "FAILURE", (
            f"charges sync {failing_run} should fail against a provider answering 500, "
            f"ended {run['status']}:\n{dev.failure_summary(failing_run)}"
        )
        lap("failed run")

        def alerts_for_run() -> list[dict[str, Any]]:
            return [p for p in receiver.received() if (p["json"] or {}).get("run_id") == failing_run]

        dev.wait_for(
            f"an alert for run {failing_run} at the webhook (sensor ticks every ~30 s)",
            lambda: alerts_for_run() or None,
            ALERT_TIMEOUT,
            interval=1.0,
        )
        alert_seen = time.time()
        lap("alert")
        alerts = alerts_for_run()
        assert len(alerts) == 1, f"expected one alert for run {failing_run}, got:\n{describe_posts(alerts)}"
        alert = alerts[0]
        body = alert["json"]
        assert alert["path"] == HOOK_PATH
        assert body["kind"] == "run_failure", body
        assert body["mapping_name"] == "Stripe", body
        assert body["mapping_id"] == str(charges_id), body
        assert body["asset_key"] == "esm/stripe/charges", body
        assert body["run_url"] == f"{dev.url}/runs/{failing_run}", body
        assert failing_run in body["body"] and "Stripe" in body["subject"], body
        assert alert["headers"].get("idempotency-key") == body["dedup_key"], alert["headers"]
        for secret in (DEMO_STRIPE_KEY, DEMO_STRIPE_KEY[len("sk_test_") :], key):
            assert secret not in alert["raw"], "the alert carries a secret (Stripe key or Fernet key)"

        with session_factory(url)() as session:
            row = session.get(ExternalSystemMapping, charges_id)
            assert row is not None
            assert row.error_count == 1, f"error_count={row.error_count} after one failed run"
            assert row.last_error_message, "last_error_message not set"
            assert DEMO_STRIPE_KEY not in row.last_error_message
            assert row.sync_status == SyncStatus.ERROR, (
                f"sync_status={row.sync_status} with error_threshold 1 after a failed run"
            )
            customers = session.get(ExternalSystemMapping, customers_row.id)
            assert customers is not None and customers.sync_status == SyncStatus.ACTIVE

        # One more complete tick of the failure sensor, started after the alert arrived, must not
        # repeat it (its cursor and the esm_alert dedup row both guard against that).
        selector = {**repo, "sensorName": FAILURE_SENSOR}

        def ticks() -> list[dict[str, Any]]:
            data = dev.graphql(SENSOR_TICKS, {"selector": selector})["sensorOrError"]
            assert data["__typename"] == "Sensor", data
            return list(data["sensorState"]["ticks"])

        dev.wait_for(
            f"a {FAILURE_SENSOR} tick that started after the alert arrived",
            lambda: [t for t in ticks() if t["timestamp"] > alert_seen and t["status"] != "STARTED"] or None,
            NEXT_TICK_TIMEOUT,
            interval=2.0,
        )
        failed_ticks = [t for t in ticks() if t["status"] == "FAILURE"]
        assert not failed_ticks, f"{FAILURE_SENSOR} ticks failed: {json.dumps(failed_ticks)[:3000]}"
        assert len(alerts_for_run()) == 1, (
            f"the alert for run {failing_run} was repeated:\n{describe_posts(alerts_for_run())}"
        )
        everything = receiver.received()
        assert len(everything) == 1, f"expected exactly one alert in all, got:\n{describe_posts(everything)}"
        lap("done")
    finally:
        dev.stop()
        print(f"ui e2e timings (s since start): {timings}", file=sys.stderr)
        print(
            f"ui e2e charges in window: {len(window_charges)}, accepted {len(accepted_ids)}, "
            f"rejected {len(expected['rejected'])}",
            file=sys.stderr,
        )


def _quarantined(url: str, mapping_id: uuid.UUID) -> int:
    with session_factory(url)() as session:
        return int(
            session.scalar(
                sa.select(sa.func.count())
                .select_from(QuarantineRecord)
                .where(QuarantineRecord.mapping_id == mapping_id, QuarantineRecord.stream == "charges")
            )
            or 0
        )
