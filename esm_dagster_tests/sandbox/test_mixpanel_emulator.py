"""The Mixpanel emulator on its own, over raw HTTP: both auth forms, import formats, export shape."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from esm_dagster.sandbox.mixpanel import MixpanelEmulator
from esm_dagster_tests.mixpanel_fixtures import PROJECT_ID, SECRET, USER

PROJECT_SECRET = "legacy-project-secret-0f9e8d7c6b5a"


@pytest.fixture
def emulator() -> Iterator[MixpanelEmulator]:
    with MixpanelEmulator(
        service_accounts={USER: SECRET},
        project_id=PROJECT_ID,
        project_secret=PROJECT_SECRET,
        events=60,
        seed=1,
    ) as em:
        yield em


def export(emulator: MixpanelEmulator, auth: tuple[str, str], **params: object) -> httpx.Response:
    query = {"from_date": "2026-01-01", "to_date": "2026-01-31", **params}
    return httpx.get(f"{emulator.url}/api/2.0/export", params=query, auth=auth)  # type: ignore[arg-type]


def test_export_is_json_lines_of_events_in_time_order(emulator: MixpanelEmulator) -> None:
    answer = export(emulator, (USER, SECRET), project_id=PROJECT_ID)
    assert answer.status_code == 200
    lines = [orjson.loads(line) for line in answer.content.splitlines()]
    assert len(lines) == 60 and lines == emulator.events
    assert all(
        {"time", "distinct_id", "$insert_id", "mp_processing_time_ms"} <= set(e["properties"]) for e in lines
    )
    times = [e["properties"]["time"] for e in lines]
    assert times == sorted(times)


def test_both_auth_forms_and_their_failures(emulator: MixpanelEmulator) -> None:
    assert export(emulator, (PROJECT_SECRET, ""), limit=1).status_code == 200
    no_project = export(emulator, (USER, SECRET))
    assert no_project.status_code == 400 and "project_id" in no_project.json()["error"]
    other_project = export(emulator, (USER, SECRET), project_id=1)
    assert other_project.status_code == 403
    wrong = export(emulator, (USER, "not-the-secret"), project_id=PROJECT_ID)
    assert wrong.status_code == 401
    assert wrong.json() == {"code": 401, "error": "Unable to authenticate request", "status": "Unauthorized"}


def test_export_filters_by_event_name_and_limit(emulator: MixpanelEmulator) -> None:
    answer = export(emulator, (PROJECT_SECRET, ""), event='["Court Booked"]', limit=3)
    names = [orjson.loads(line)["event"] for line in answer.content.splitlines()]
    assert names == ["Court Booked"] * 3
    bad = export(emulator, (PROJECT_SECRET, ""), event="Court Booked")
    assert bad.status_code == 400


def test_ndjson_and_gzip_imports_are_deduplicated_on_insert_id(emulator: MixpanelEmulator) -> None:
    now = int(time.time())
    event = {"event": "Sign Up", "properties": {"time": now, "distinct_id": "u-1", "$insert_id": "abc123"}}
    url = f"{emulator.url}/import?strict=1&project_id={PROJECT_ID}"
    ndjson = httpx.post(
        url,
        content=orjson.dumps(event) + b"\n",
        auth=(USER, SECRET),
        headers={"Content-Type": "application/x-ndjson"},
    )
    zipped = httpx.post(
        url,
        content=gzip.compress(orjson.dumps([event])),
        auth=(USER, SECRET),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert ndjson.json() == zipped.json() == {"code": 200, "num_records_imported": 1, "status": "OK"}
    assert sum(1 for e in emulator.events if e["properties"]["$insert_id"] == "abc123") == 1


def test_strict_import_lists_failed_records(emulator: MixpanelEmulator) -> None:
    events = [{"event": "A", "properties": {"time": 10, "distinct_id": "u"}}, {"event": "", "properties": {}}]
    answer = httpx.post(
        f"{emulator.url}/import?strict=1&project_id={PROJECT_ID}", json=events, auth=(USER, SECRET)
    )
    body = answer.json()
    assert answer.status_code == 400 and body["num_records_imported"] == 0
    assert [(f["index"], f["field"]) for f in body["failed_records"]] == [
        (0, "properties.time"),
        (1, "event"),
    ]


def test_a_rate_limit_fault_uses_mixpanels_body_without_retry_after(emulator: MixpanelEmulator) -> None:
    emulator.faults.rate_limit_next(1)
    answer = export(emulator, (PROJECT_SECRET, ""))
    assert answer.status_code == 429 and answer.json()["code"] == 429
    assert "retry-after" not in answer.headers


def test_the_request_log_never_holds_a_secret(emulator: MixpanelEmulator) -> None:
    httpx.get(
        f"{emulator.url}/api/2.0/export?from_date=2026-01-01&to_date=2026-01-01&api_secret={PROJECT_SECRET}",
        auth=(PROJECT_SECRET, ""),
    )
    assert emulator.requests and all(PROJECT_SECRET not in r.query for r in emulator.requests)
