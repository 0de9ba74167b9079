"""The real Dagster webserver (`dagster dev -h 127.0.0.1`) behind the authenticating proxy.

One webserver for the module, on a throwaway SQLite catalog and instance, the Stripe emulator on
loopback. Through the proxy: no credentials get 401; a viewer reads assets and subscribes to run
logs over the websocket but is refused `launchRun` (403, audited, no run created); an engineer
launches a sync whose audit entry names them, even when the request forges the launcher tag.
The webserver's own port listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from esm_dagster.catalog.audit import list_entries
from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.migrate import upgrade
from esm_dagster.catalog.models import User, UserRole
from esm_dagster.demo.run import DEMO_STRIPE_KEY, REPO_ROOT, register_demo_catalog
from esm_dagster.proxy.app import ProxyConfig
from esm_dagster.proxy.passwords import hash_password
from esm_dagster.proxy.serve import BackgroundProxy
from esm_dagster.proxy.tags import LAUNCHED_BY, LAUNCHED_BY_ROLE
from esm_dagster.sandbox.stripe import StripeEmulator
from esm_dagster.security.secret import Secret
from esm_dagster.security.vault import generate_key
from esm_dagster_tests.dagster_dev import DagsterDev
from esm_dagster_tests.orchestration.test_ui_e2e import LAUNCH_RUN, write_dagster_yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

LOCATION = "esm"
HOURLY_JOB = "esm_sync_hourly__asia_bangkok"  # the demo's customers mapping
CUSTOMERS_OP = "esm__stripe__customers"
VIEWER, ENGINEER, STRANGER = "vera@club.example", "eng@club.example", "gone@club.example"
PASSWORDS = {VIEWER: "viewer-pass-Hq81xz", ENGINEER: "engineer-pass-Zp02vk", STRANGER: "stranger-pass-Ww55"}
ASSETS = "query { assetNodes { assetKey { path } } }"
RUNS = "query { runsOrError { __typename ... on Runs { results { runId tags { key value } } } } }"
RUN_LOGS = """
subscription($runId: ID!) {
  pipelineRunLogs(runId: $runId) {
    __typename
    ... on PipelineRunLogsSubscriptionSuccess { messages { __typename } }
  }
}
"""


@dataclass
class Stack:
    dev: DagsterDev
    proxy: BackgroundProxy
    url: str
    repo: dict[str, str]
    home: Path

    def client(self, email: str | None = None, password: str | None = None) -> httpx.Client:
        auth = (email, password or PASSWORDS[email]) if email else None
        return httpx.Client(base_url=self.proxy.url, auth=auth, timeout=60.0)

    def launch_params(self, tags: dict[str, str]) -> dict[str, Any]:
        return {
            "selector": {**self.repo, "jobName": HOURLY_JOB},
            "runConfigData": {"ops": {CUSTOMERS_OP: {"config": {"full_refresh": True}}}},
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }


def basic(email: str) -> str:
    return "Basic " + base64.b64encode(f"{email}:{PASSWORDS[email]}".encode()).decode()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("proxy")
    url = f"sqlite:///{tmp / 'catalog.db'}"
    env_vars = {
        "ESM_HOME": str(tmp / "esm_home"),
        "ESM_DATABASE_URL": url,
        "ESM_FERNET_KEYS": generate_key(),
        "DAGSTER_HOME": str(tmp / "dagster_home"),
        "ESM_ALERTS_FILE": str(tmp / "alerts.yaml"),
    }
    (tmp / "alerts.yaml").write_text("channels: {}\n", encoding="utf-8")
    emulator = StripeEmulator(api_keys=[DEMO_STRIPE_KEY], customers=20, charges=20, seed=5)
    emulator.start()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env_vars.items():
            mp.setenv(name, value)
        for name in ("ESM_FERNET_KEYS_FILE", "ESM_PARTITIONS_START", "ESM_DAGSTER_UI_URL", "ESM_USER"):
            mp.delenv(name, raising=False)
        upgrade(url)
        register_demo_catalog(url, emulator.url)
        with session_factory(url).begin() as session:
            session.add(User(email=VIEWER, full_name="Vera", role=UserRole.VIEWER))
            session.add(User(email=ENGINEER, full_name="Eng", role=UserRole.ENGINEER))
        write_dagster_yaml(tmp / "dagster_home")
        lines = [f"{email}:{hash_password(Secret(pw), n=2**10)}" for email, pw in PASSWORDS.items()]
        (tmp / "ui-passwords").write_text("\n".join(lines) + "\n", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
        env.update(env_vars)
        env["PYTHONUNBUFFERED"] = "1"
        dev = DagsterDev(
            workspace=REPO_ROOT / "workspace.yaml", env=env, log_path=tmp / "dagster.log", cwd=tmp
        )
        proxy: BackgroundProxy | None = None
        try:
            dev.start(LOCATION, timeout=240)
            proxy = BackgroundProxy(
                ProxyConfig(upstream=dev.url, password_file=tmp / "ui-passwords", database_url=url)
            ).start()
            assert dev.repository_name is not None
            repo = {"repositoryName": dev.repository_name, "repositoryLocationName": LOCATION}
            yield Stack(dev, proxy, url, repo, tmp)
        finally:
            if proxy is not None:
                proxy.stop()
            dev.stop(grace=5)  # SIGKILL for the group after that: nothing of it is kept
            emulator.stop()


@pytest.fixture(scope="module")
def engineer_run(stack: Stack) -> str:
    """A manual sync the engineer launched through the proxy, forging someone else's tag."""
    forged = {LAUNCHED_BY: "data-team@padel.example", LAUNCHED_BY_ROLE: "admin", "esm/trigger": "manual"}
    with stack.client(ENGINEER) as client:
        answer = client.post(
            "/graphql", json={"query": LAUNCH_RUN, "variables": {"params": stack.launch_params(forged)}}
        )
    assert answer.status_code == 200, answer.text
    result = answer.json()["data"]["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    run_id = str(result["run"]["runId"])
    run = stack.dev.wait_for_run(run_id, 150)
    assert run["status"] == "SUCCESS", stack.dev.failure_summary(run_id)
    return run_id


def listening_addresses(port: int) -> list[str]:
    """Local addresses of the sockets in LISTEN state on `port`, from /proc/net/tcp{,6}."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].rpartition(":")
            if int(hex_port, 16) == port and fields[3] == "0A":
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    found.append(".".join(str(b) for b in raw[::-1]))
                else:
                    found.append(raw.hex())
    return found


def test_the_webserver_listens_on_loopback_only(stack: Stack) -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp on this system")
    assert listening_addresses(stack.dev.port) == ["127.0.0.1"]
    assert listening_addresses(stack.proxy.port) == ["127.0.0.1"]


def test_no_or_wrong_credentials_get_401(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with stack.client() as anonymous:
        for method, path in (("GET", "/"), ("POST", "/graphql"), ("GET", "/server_info")):
            answer = anonymous.request(method, path, json={"query": ASSETS} if method == "POST" else None)
            assert answer.status_code == 401, (method, path, answer.status_code)
            assert answer.headers["www-authenticate"].startswith("Basic realm=")
    wrong = "not-the-viewer-password"
    with stack.client(VIEWER, wrong) as client:
        answer = client.post("/graphql", json={"query": ASSETS})
    assert answer.status_code == 401 and wrong not in answer.text
    with stack.client(STRANGER) as client:  # knows a password, is no operator of the catalog
        answer = client.get("/server_info")
    assert answer.status_code == 403 and STRANGER in answer.text
    assert PASSWORDS[STRANGER] not in answer.text
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(stack.proxy.url.replace("http", "ws") + "/graphql", subprotocols=["graphql-ws"])  # type: ignore[list-item]
    assert refused.value.response.status_code == 401
    assert not [pw for pw in [*PASSWORDS.values(), wrong] if pw in caplog.text]


def test_a_viewer_reads_but_cannot_launch(stack: Stack) -> None:
    runs_before = stack.dev.graphql(RUNS)["runsOrError"]["results"]
    with stack.client(VIEWER) as client:
        assets = client.post("/graphql", json={"query": ASSETS})
        assert assets.status_code == 200, assets.text
        paths = {tuple(n["assetKey"]["path"]) for n in assets.json()["data"]["assetNodes"]}
        assert ("esm", "stripe", "customers") in paths
        assert client.get("/").status_code == 200  # the UI itself
        launch = client.post(
            "/graphql", json={"query": LAUNCH_RUN, "variables": {"params": stack.launch_params({})}}
        )
        assert launch.status_code == 403, launch.text
        assert "may not send the GraphQL mutation launchRun" in launch.json()["errors"][0]["message"]
        # Dagster runs the query string of a non-JSON POST, and GET queries: neither carries a launch
        mutation = "mutation { terminateRuns(runIds: []) { __typename } }"
        smuggled = client.post(
            "/graphql",
            params={"query": mutation},
            content=json.dumps({"query": ASSETS}),
            headers={"content-type": "text/json"},
        )
        assert smuggled.status_code == 415, smuggled.text
        assert client.get("/graphql", params={"query": mutation}).status_code == 403
        assert client.post("/graphql", json=[{"query": mutation}]).status_code == 400
        # the REST endpoints that write events are refused too
        report = client.post("/report_asset_materialization/esm/stripe/customers", json={})
        assert report.status_code == 403
    assert stack.dev.graphql(RUNS)["runsOrError"]["results"] == runs_before
    denied = [e for e in list_entries(stack.url, action="access.denied") if e.actor == VIEWER]
    assert denied and denied[-1].source == "ui-proxy" and denied[-1].actor_role == "viewer"
    assert any("launchRun" in str(e.details.get("command")) for e in denied)


def test_an_engineers_launch_is_audited_under_their_name(stack: Stack, engineer_run: str) -> None:
    tags = {t["key"]: t["value"] for t in stack.dev.run(engineer_run)["tags"]}
    assert tags[LAUNCHED_BY] == ENGINEER and tags[LAUNCHED_BY_ROLE] == "engineer", tags
    assert tags["esm/trigger"] == "manual"
    entries = [e for e in list_entries(stack.url, limit=500) if e.run_id == engineer_run]
    by_action = {e.action: e for e in entries}
    assert by_action["sync.manual"].actor == ENGINEER, entries
    assert by_action["sync.manual"].actor_role == "engineer"
    assert by_action["sync.manual"].source == "dagster-ui"
    assert {e.actor for e in entries} == {ENGINEER}, entries


def test_the_websocket_streams_run_logs_and_takes_no_mutation(stack: Stack, engineer_run: str) -> None:
    ws_url = stack.proxy.url.replace("http", "ws") + "/graphql"
    with ws_connect(
        ws_url, subprotocols=["graphql-ws"], additional_headers={"Authorization": basic(VIEWER)}
    ) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "graphql-ws"
        ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        ws.send(
            json.dumps(
                {
                    "type": "start",
                    "id": "1",
                    "payload": {"query": RUN_LOGS, "variables": {"runId": engineer_run}},
                }
            )
        )
        while True:
            message = json.loads(ws.recv(timeout=20))
            if message["type"] == "data":
                break
            assert message["type"] == "ka", message
        payload = message["payload"]["data"]["pipelineRunLogs"]
        assert payload["__typename"] == "PipelineRunLogsSubscriptionSuccess" and payload["messages"]
        launch = {"query": LAUNCH_RUN, "variables": {"params": stack.launch_params({})}}
        ws.send(json.dumps({"type": "start", "id": str(uuid.uuid4()), "payload": launch}))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


def test_no_password_lands_in_the_catalog_or_dagsters_storage(stack: Stack, engineer_run: str) -> None:
    """After every test above (refusals, launches, logs): scan every file they wrote."""
    needles = [pw.encode() for pw in PASSWORDS.values()]
    needles += [base64.b64encode(f"{e}:{pw}".encode()) for e, pw in PASSWORDS.items()]
    scanned = 0
    for path in stack.home.rglob("*"):
        if path.is_file() and path.name != "ui-passwords":
            data = path.read_bytes()
            scanned += 1
            assert not [n for n in needles if n in data], f"a password is in {path}"
    assert scanned > 3
