"""The OAuth2 lifecycle through the engine: real runs, the Salesforce emulator's token endpoint over
loopback, the catalog on SQLite and PostgreSQL.

What must hold: however many runs (threads or processes) find the token expired, the token
endpoint sees one refresh; a rotated refresh token is in the catalog, encrypted, when the run
ends and the next run uses it; a revoked grant or a JWT signed with the wrong key puts the mapping
in error with a task and an alert, while a 5xx at the token endpoint is only retried.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.models import ExternalSystemMapping, SyncStatus, Task
from esm_dagster.sandbox.salesforce import SalesforceEmulator
from esm_dagster.sync.engine import SyncFailed, SyncReport, run_mapping
from esm_dagster_tests.alerts.receivers import HOOK_PATH, HttpReceiver
from esm_dagster_tests.oauth_fixtures import (
    SF_AUDIENCE,
    SF_CLIENT_ID,
    SF_CLIENT_SECRET,
    SF_USERNAME,
    add_mapping,
    prepare_target_tables,
    rsa_pair,
    salesforce_mapping,
    stored_credentials,
)

TOKEN_PATH = "/services/oauth2/token"


@pytest.fixture
def emulator() -> Iterator[SalesforceEmulator]:
    emu = SalesforceEmulator(
        clients={SF_CLIENT_ID: SF_CLIENT_SECRET},
        contacts=60,
        max_batch=25,
        jwt_public_key=rsa_pair()[1],
        login_audience=SF_AUDIENCE,
    ).start()
    yield emu
    emu.stop()


@pytest.fixture
def alerts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    config = tmp_path / "alerts.yaml"
    config.write_text(f"channels:\n  - name: oncall\n    type: webhook\n    url: {receiver.url(HOOK_PATH)}\n")
    monkeypatch.setenv("ESM_ALERTS_FILE", str(config))
    yield receiver
    receiver.close()


def expired_session(emulator: SalesforceEmulator) -> dict[str, str]:
    """A refresh token and an access token that expired ten seconds ago, as a past run left them."""
    return {
        "client_secret": SF_CLIENT_SECRET,
        "refresh_token": emulator.oauth.issue_refresh_token(SF_CLIENT_ID),
        "access_token": emulator.oauth.issue_access_token(SF_CLIENT_ID, lifetime=-10),
        "expires_at": str(int(time.time()) - 10),
        "instance_url": emulator.url,
    }


def refresh_answer(emulator: SalesforceEmulator, refresh_token: str) -> httpx.Response:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": SF_CLIENT_ID,
        "client_secret": SF_CLIENT_SECRET,
    }
    return httpx.post(emulator.url + TOKEN_PATH, data=form)


def mapping_row(url: str, mapping_id: str) -> ExternalSystemMapping:
    with session_factory(url)() as session:
        row = session.get(ExternalSystemMapping, uuid.UUID(mapping_id))
        assert row is not None
        session.expunge(row)
        return row


def contacts_loaded(url: str) -> int:
    with get_engine(url).connect() as conn:
        return conn.execute(
            sa.text('select count(*) from "user" where esm_external_id is not null')
        ).scalar_one()


def test_two_concurrent_runs_with_an_expired_token_refresh_once(
    db_url: str, fernet_key: str, emulator: SalesforceEmulator
) -> None:
    start = expired_session(emulator)
    raw = salesforce_mapping(emulator.url, start)
    mapping = add_mapping(db_url, raw)
    prepare_target_tables(db_url, raw)
    # The token answer takes half a second: the second run asks while the first refresh is in flight.
    emulator.faults.delay_next(2, seconds=0.5, path=TOKEN_PATH)
    barrier = threading.Barrier(2)
    reports: list[SyncReport] = []
    failures: list[BaseException] = []

    def one_run() -> None:
        barrier.wait()
        try:
            reports.append(run_mapping(db_url, mapping))
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures
    assert [r.status for r in reports] == ["success", "success"]
    assert emulator.oauth.refreshes == 1
    assert sum(emulator.oauth.refused.values()) == 0  # rotation: a second refresh would be invalid_grant
    stored = stored_credentials(db_url, mapping)
    assert stored["refresh_token"].reveal() != start["refresh_token"]
    assert stored["access_token"].reveal() != start["access_token"]


_CHILD = textwrap.dedent(
    """
    import pathlib, sys, time
    from esm_dagster.sync.engine import run_mapping
    url, mapping, ready, go = sys.argv[1:5]
    pathlib.Path(ready).write_text("ready")
    while not pathlib.Path(go).exists():
        time.sleep(0.005)
    report = run_mapping(url, mapping)
    print(report.status, report.records_read)
    """
)


def test_two_processes_with_an_expired_token_refresh_once(
    db_url: str, fernet_key: str, emulator: SalesforceEmulator, tmp_path: Path
) -> None:
    raw = salesforce_mapping(emulator.url, expired_session(emulator))
    mapping = add_mapping(db_url, raw)
    prepare_target_tables(db_url, raw)
    emulator.faults.delay_next(2, seconds=0.5, path=TOKEN_PATH)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), *sys.path])}
    children = []
    for i in range(2):
        ready = tmp_path / f"ready{i}"
        cmd = [sys.executable, "-c", _CHILD, db_url, mapping, str(ready), str(go)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        children.append((proc, ready))
    deadline = time.monotonic() + 60
    while not all(ready.exists() for _, ready in children) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.write_text("go")  # both processes are imported and waiting: they start their runs together
    outputs = [proc.communicate(timeout=60) for proc, _ in children]
    for (proc, _), (out, err) in zip(children, outputs, strict=True):
        assert proc.returncode == 0, err[-2000:]
        assert out.split()[0] == "success"
    assert emulator.oauth.refreshes == 1
    assert sum(emulator.oauth.refused.values()) == 0


def test_rotated_refresh_token_survives_to_the_next_run(
    db_url: str, fernet_key: str, emulator: SalesforceEmulator
) -> None:
    start = expired_session(emulator)
    mapping = add_mapping(db_url, salesforce_mapping(emulator.url, start))
    first = run_mapping(db_url, mapping)
    assert first.status == "success" and emulator.oauth.refreshes == 1
    rotated = stored_credentials(db_url, mapping)["refresh_token"].reveal()
    assert rotated != start["refresh_token"]
    assert refresh_answer(emulator, start["refresh_token"]).json()["error"] == "invalid_grant"

    # The session times out between runs; Salesforce says nothing of expiry, so the next run learns
    # it from a 401 INVALID_SESSION_ID and renews with the refresh token the first run stored.
    emulator.oauth.expire_access_tokens()
    second = run_mapping(db_url, mapping, full_refresh=True)
    assert second.status == "success" and second.records_read == first.records_read
    assert emulator.oauth.refreshes == 2
    assert sum(emulator.oauth.refused.values()) == 1  # only the old token this test presented itself
    assert stored_credentials(db_url, mapping)["refresh_token"].reveal() not in (
        rotated,
        start["refresh_token"],
    )
    with session_factory(db_url)() as session:
        raw = str(session.get(ExternalSystemMapping, uuid.UUID(mapping)).credentials)  # type: ignore[union-attr]
    assert rotated not in raw and "rt_" not in raw  # encrypted at rest


def test_revoked_token_puts_the_mapping_in_error_with_a_task_and_an_alert(
    db_url: str, fernet_key: str, emulator: SalesforceEmulator, alerts: HttpReceiver
) -> None:
    start = expired_session(emulator)
    mapping = add_mapping(db_url, salesforce_mapping(emulator.url, start))
    emulator.oauth.revoke_all()
    with pytest.raises(SyncFailed) as info:
        run_mapping(db_url, mapping)
    report = info.value.report
    assert (report.error_class, report.error_code) == ("auth", "invalid_grant")
    assert emulator.oauth.refused["invalid_grant"] == 1  # not retried: no retry can fix a revoked grant
    row = mapping_row(db_url, mapping)
    assert row.sync_status == SyncStatus.ERROR  # at once, not after error_threshold failures
    with session_factory(db_url)() as session:
        tasks = session.scalars(sa.select(Task).where(Task.mapping_id == row.id)).all()
    assert [t.reason for t in tasks] == ["credentials"]
    posts = alerts.received(HOOK_PATH)
    assert len(posts) == 1
    alert = posts[0]["json"]
    assert alert["kind"] == "mapping_error" and alert["error_class"] == "auth"
    assert alert["mapping_id"] == mapping and "invalid_grant" in alert["message"]
    leaked = [start["refresh_token"], start["access_token"], SF_CLIENT_SECRET]
    for text in (
        str(info.value),
        repr(info.value),
        row.last_error_message or "",
        str(alert),
        tasks[0].description,
    ):
        for secret in leaked:
            assert secret not in text


def test_jwt_signed_with_the_wrong_key_is_invalid_grant(
    db_url: str, fernet_key: str, emulator: SalesforceEmulator, alerts: HttpReceiver
) -> None:
    wrong_private, _ = rsa_pair("not the connected app's key")
    credentials = {"private_key": wrong_private, "username": SF_USERNAME, "audience": SF_AUDIENCE}
    mapping = add_mapping(db_url, salesforce_mapping(emulator.url, credentials))
    with pytest.raises(SyncFailed) as info:
        run_mapping(db_url, mapping)
    assert (info.value.report.error_class, info.value.report.error_code) == ("auth", "invalid_grant")
    assert emulator.oauth.issued["jwt_bearer"] == 0 and emulator.oauth.refused["invalid_grant"] == 1
    assert mapping_row(db_url, mapping).sync_status == SyncStatus.ERROR
    assert len(alerts.received(HOOK_PATH)) == 1
    body = "".join(wrong_private.splitlines()[1:-1])
    assert body[:40] not in str(info.value) and body[:40] not in (
        mapping_row(db_url, mapping).last_error_message or ""
    )


def test_jwt_with_the_right_key_syncs_and_stores_the_session(
    db_url: str, fernet_key: str, emulator: SalesforceEmulator
) -> None:
    private, _ = rsa_pair()
    credentials = {"private_key": private, "username": SF_USERNAME, "audience": SF_AUDIENCE}
    mapping = add_mapping(db_url, salesforce_mapping(emulator.url, credentials))
    report = run_mapping(db_url, mapping)
    assert report.status == "success" and report.records_read == 60
    assert emulator.oauth.issued["jwt_bearer"] == 1
    stored = stored_credentials(db_url, mapping)
    assert emulator.oauth.authenticate(stored["access_token"].reveal()) is not None
    assert stored["instance_url"].reveal() == emulator.url
    run_mapping(db_url, mapping, full_refresh=True)
    assert emulator.oauth.issued["jwt_bearer"] == 1  # the stored session is reused by the next run


def test_token_endpoint_5xx_is_retried_not_reauthorization(
    db_url: str, fernet_key: str, emulator: SalesforceEmulator, alerts: HttpReceiver
) -> None:
    mapping = add_mapping(db_url, salesforce_mapping(emulator.url, expired_session(emulator)))
    emulator.faults.fail_next(1, 503, path=TOKEN_PATH)
    report = run_mapping(db_url, mapping)
    assert report.status == "success" and report.retries >= 1
    assert emulator.oauth.refreshes == 1
    assert mapping_row(db_url, mapping).sync_status == SyncStatus.ACTIVE
    assert alerts.received(HOOK_PATH) == []
    assert contacts_loaded(db_url) > 0
