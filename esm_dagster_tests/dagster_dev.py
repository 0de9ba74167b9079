"""Test helper: `dagster dev` as a subprocess, driven through the UI's own GraphQL API.

`DagsterDev(...).start()` launches `dagster dev` in its own process group on a free loopback port,
waits until the webserver answers and the code location has loaded, and `stop()` ends the whole
group (webserver, daemon, code server and any run workers), escalating to SIGKILL. Every failure
message carries the tail of the subprocess log, so a CI failure can be read without re-running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}
TERMINAL_BACKFILL_STATUSES = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

WORKSPACE_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { name repositories { name } }
          ... on PythonError { message stack }
        }
      }
    }
    ... on PythonError { message stack }
  }
}
"""

RUN_QUERY = """
query($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status jobName tags { key value } }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
"""

RUN_LOGS_QUERY = """
query($runId: ID!, $cursor: String) {
  logsForRun(runId: $runId, afterCursor: $cursor, limit: 1000) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events {
        __typename
        ... on MessageEvent { message level stepKey }
        ... on ExecutionStepFailureEvent { error { message } }
        ... on RunFailureEvent { pipelineFailureError: error { message } }
        ... on MaterializationEvent {
          assetKey { path }
          partition
          metadataEntries {
            label
            ... on IntMetadataEntry { intValue }
            ... on BoolMetadataEntry { boolValue }
            ... on TextMetadataEntry { text }
          }
        }
      }
    }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DagsterDevError(AssertionError):
    """Something about the `dagster dev` process or its API went wrong; the message has the log tail."""


class DagsterDev:
    """`dagster dev -h 127.0.0.1 -p <free port> -w <workspace>` with the given environment."""

    def __init__(
        self,
        *,
        workspace: Path,
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path,
        env_for_port: Callable[[int], Mapping[str, str]] | None = None,
    ) -> None:
        self.workspace = workspace
        self.env = dict(env)
        self.env_for_port = env_for_port
        self.log_path = log_path
        self.cwd = cwd
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None
        self.repository_name: str | None = None

    # ---- lifecycle --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, location: str, timeout: float = 180.0, attempts: int = 3) -> DagsterDev:
        """Start and wait until `location` is loaded; retries on a port taken in the meantime."""
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            env = dict(self.env)
            if self.env_for_port is not None:
                env.update(self.env_for_port(self.port))
            command = [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(self.port)]
            command += ["-w", str(self.workspace)]
            with self.log_path.open("ab") as log:
                log.write(f"\n==== attempt {attempt}: {' '.join(command)}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    command,
                    cwd=self.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: stop() can end all of it
                )
            self._client = httpx.Client(base_url=self.url, timeout=60.0)
            try:
                self._wait_ready(location, timeout)
                return self
            except DagsterDevError:
                taken = "address already in use" in self.log_tail(200).lower()
                self.stop()
                if not taken or attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _wait_ready(self, location: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                info = self.client.get("/server_info", timeout=5.0)
                if info.status_code != 200:
                    last = f"/server_info answered HTTP {info.status_code}"
                    time.sleep(1.0)
                    continue
                data = self.graphql(WORKSPACE_QUERY, timeout=30.0)
            except (httpx.TransportError, DagsterDevError) as exc:
                last = f"{type(exc).__name__}: {str(exc)[:300]}"
                time.sleep(1.0)
                continue
            workspace = data["workspaceOrError"]
            if workspace["__typename"] != "Workspace":
                raise self.error(f"workspaceOrError is {workspace['__typename']}: {workspace.get('message')}")
            entries = {e["name"]: e for e in workspace["locationEntries"]}
            entry = entries.get(location)
            if entry is None:
                last = f"no location {location!r} yet (have {sorted(entries)})"
            elif entry["loadStatus"] == "LOADED":
                loaded = entry["locationOrLoadError"]
                if loaded is None:
                    last = f"location {location!r} LOADED without a location yet"
                elif loaded["__typename"] == "PythonError":
                    raise self.error(
                        f"code location {location!r} failed to load: {loaded['message']}\n"
                        + "".join(loaded.get("stack") or [])[-3000:]
                    )
                else:
                    repositories = [r["name"] for r in loaded["repositories"]]
                    if len(repositories) != 1:
                        raise self.error(f"expected one repository in {location!r}, got {repositories}")
                    self.repository_name = repositories[0]
                    return
            else:
                last = f"location {location!r} is {entry['loadStatus']}"
            time.sleep(1.0)
        raise self.error(f"dagster dev not ready after {timeout:.0f}s ({last})")

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise self.error(f"dagster dev exited with code {self.proc.returncode}")

    def stop(self, grace: float = 20.0) -> None:
        """End the whole process group: SIGTERM, then SIGKILL for anything still alive."""
        if self._client is not None:
            self._client.close()
            self._client = None
        proc, self.proc = self.proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the group id is the leader's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.2)

    # ---- diagnostics ------------------------------------------------------------------------------
    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def error(self, message: str) -> DagsterDevError:
        return DagsterDevError(
            f"{message}\n---- last lines of {self.log_path} ----\n{self.log_tail()}\n---- end of log ----"
        )

    # ---- GraphQL ----------------------------------------------------------------------------------
    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            raise DagsterDevError("dagster dev is not running")
        return self._client

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 60.0) -> Any:
        response = self.client.post(
            "/graphql", json={"query": query, "variables": dict(variables or {})}, timeout=timeout
        )
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code != 200 or not isinstance(payload, dict) or payload.get("errors"):
            detail = payload.get("errors") if isinstance(payload, dict) else response.text[:2000]
            raise DagsterDevError(f"GraphQL HTTP {response.status_code}: {detail}")
        return payload["data"]

    def wait_for(self, what: str, probe: Callable[[], T | None], timeout: float, interval: float = 1.0) -> T:
        """Poll `probe` until it returns something other than None; fail naming `what`."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            value = probe()
            if value is not None:
                return value
            if time.monotonic() >= deadline:
                raise self.error(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)

    def run(self, run_id: str) -> dict[str, Any]:
        result = self.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]
        if result["__typename"] != "Run":
            raise self.error(f"run {run_id}: {result['__typename']}: {result.get('message')}")
        return dict(result)

    def wait_for_run(self, run_id: str, timeout: float) -> dict[str, Any]:
        """The run once it is finished (SUCCESS, FAILURE or CANCELED)."""
        last: dict[str, str] = {}

        def probe() -> dict[str, Any] | None:
            run = self.run(run_id)
            last["status"] = run["status"]
            return run if run["status"] in TERMINAL_RUN_STATUSES else None

        try:
            return self.wait_for(f"run {run_id} to finish", probe, timeout)
        except DagsterDevError as exc:
            raise self.error(f"run {run_id} still {last.get('status')} after {timeout:.0f}s") from exc

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self.graphql(RUN_LOGS_QUERY, {"runId": run_id, "cursor": cursor})["logsForRun"]
            if page["__typename"] != "EventConnection":
                raise self.error(f"logsForRun({run_id}): {page['__typename']}: {page.get('message')}")
            events += page["events"]
            cursor = page["cursor"]
            if not page["hasMore"]:
                return events

    def failure_summary(self, run_id: str) -> str:
        """The error and warning messages of a run, for assertion messages."""
        lines = []
        try:
            for event in self.run_events(run_id):
                error = event.get("error") or event.get("pipelineFailureError")
                if error:
                    lines.append(f"{event['__typename']}: {error['message'].strip()}")
                elif event.get("level") in ("ERROR", "CRITICAL", "WARNING"):
                    lines.append(f"{event['__typename']} [{event.get('stepKey')}]: {event['message']}")
        except DagsterDevError as exc:
            lines.append(f"(could not read the run's events: {exc})")
        return "\n".join(lines[-30:]) or "(no error events)"


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is still running (zombies waiting to be reaped do not count)."""
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid pgrp ...: comm may contain spaces, so split after the last ')'
            fields = stat.rsplit(")", 1)[-1].split()
            if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] != "Z":
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
