"""`esm quarantine list` and `esm quarantine replay`, end to end: records refused by bad rules
in a real sync (Stripe emulator on loopback), the rules fixed with `esm mapping edit --rules`,
the quarantine replayed into the target table without duplicates."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import get_mapping
from esm_dagster.catalog.models import QuarantineRecord
from esm_dagster.cli import main
from esm_dagster_tests.stripe_fixtures import demo_catalog, stripe_emulator

MAPPING = "stripe/charges"
FIELD = "metadata.member_code"
TOKEN = "tok_sandbox_member_7781"  # a secret-looking value: masked in the quarantine payload


@pytest.fixture
def emulator():
    with stripe_emulator(customers=5, charges=20) as emu:
        yield emu


@pytest.fixture
def catalog(db_url: str, fernet_key: str, emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    monkeypatch.setenv("ESM_DATABASE_URL", db_url)
    monkeypatch.setenv("ESM_HOME", str(tmp_path / "home"))
    with socket.socket() as sock:  # no Dagster UI to reload
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("ESM_DAGSTER_UI_URL", f"http://127.0.0.1:{sock.getsockname()[1]}")
    demo_catalog(db_url, emulator)
    return db_url


def rules_file(url: str, tmp_path: Path, member_code_type: str) -> str:
    """The demo charges rules plus two metadata columns, `member_code` typed as given.

    The types tried all store text: a target column is never retyped once created (see
    `sync.target_tables`), so a fix that changes a column's storage type is not what this tests.
    """
    with session_factory(url)() as session:
        rules = json.loads(json.dumps(get_mapping(session, MAPPING).mapping_rules))
    rules["field_mappings"][FIELD] = {"target": "payment.member_code", "type": member_code_type}
    rules["field_mappings"]["metadata.api_token"] = "payment.member_token"
    path = tmp_path / f"rules_{member_code_type}.json"
    path.write_text(json.dumps(rules))
    return str(path)


def quarantined(url: str) -> dict[str, QuarantineRecord]:
    with session_factory(url)() as session:
        rows = session.scalars(sa.select(QuarantineRecord)).all()
    return {r.external_id: r for r in rows if r.external_id}


def payments(url: str, external_ids: list[str]) -> list[tuple[str, str | None]]:
    with get_engine(url).connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.text("select esm_external_id, member_code from payment where esm_external_id in :ids")
                .bindparams(sa.bindparam("ids", expanding=True))
                .params(ids=external_ids)
            )
        ]


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    capsys.readouterr()  # what earlier commands printed
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_quarantine_list_and_replay_after_fixing_the_rules(
    catalog: str, emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Created a minute ago: a sync reads [high_water, now), so a charge of this very second would
    # wait for the next one.
    created = int(time.time()) - 60
    members = [
        emulator.add_charge(amount=150_000, metadata={"member_code": c}, created=created)["id"]
        for c in ("A17", "B2")
    ]
    secret = emulator.add_charge(
        amount=90_000, metadata={"member_code": "C3", "api_token": TOKEN}, created=created
    )["id"]
    assert main(["mapping", "edit", MAPPING, "--rules", rules_file(catalog, tmp_path, "phone_number")]) == 0
    assert main(["sync", MAPPING]) == 0
    capsys.readouterr()

    listed = cli_json(capsys, "quarantine", "list", MAPPING)
    mine = {r["external_id"]: r for r in listed if FIELD in r["failed"]}
    assert set(mine) == {*members, secret}
    assert all(r["mapping"] == MAPPING and r["seen"] == 1 and not r["resolved"] for r in mine.values())
    assert mine[members[0]]["failed"] == f"{FIELD}:phone_number"
    (error,) = mine[members[0]]["errors"]
    assert "'A17'" in error["message"]  # names the value
    assert main(["quarantine", "list"]) == 0
    table = capsys.readouterr().out
    assert f"{FIELD}:phone_number" in table and members[0] in table and "first_seen" in table
    assert TOKEN not in table and TOKEN not in json.dumps(listed)
    assert quarantined(catalog)[secret].payload["metadata"]["api_token"] == "***"

    # Rules still wrong (email): still rejected, with the new errors; seen_count stays a count of
    # sightings at the provider.
    assert main(["mapping", "edit", MAPPING, "--rules", rules_file(catalog, tmp_path, "email")]) == 0
    before = quarantined(catalog)
    report = cli_json(capsys, "quarantine", "replay", MAPPING)
    assert report["accepted"] == 0 and report["still_rejected"] >= 2
    after = quarantined(catalog)
    for external_id in members:
        assert before[external_id].errors[0]["rule"] == "phone_number"
        assert after[external_id].errors[0]["rule"] == "email"
        assert after[external_id].last_seen_at > before[external_id].last_seen_at
        assert (after[external_id].seen_count, after[external_id].resolved_at) == (1, None)
    assert payments(catalog, members) == []

    # Fixed (string): replayed into `payment` and resolved; the masked one cannot be and says so.
    assert main(["mapping", "edit", MAPPING, "--rules", rules_file(catalog, tmp_path, "string")]) == 0
    capsys.readouterr()
    assert main(["quarantine", "replay", MAPPING]) == 0
    out = capsys.readouterr().out
    assert "2 accepted (payment: 2)" in out
    assert "1 not replayable" in out and "redacted" in out and f"{secret}: metadata.api_token" in out
    assert sorted(payments(catalog, members)) == sorted(zip(members, ["A17", "B2"], strict=True))
    after = quarantined(catalog)
    assert all(after[e].resolved_at is not None for e in members)
    assert after[secret].resolved_at is None

    # Twice: nothing left to replay, nothing doubled.
    again = cli_json(capsys, "quarantine", "replay", MAPPING)
    assert (again["accepted"], again["replayed"], again["not_replayable"]) == (0, again["still_rejected"], 1)
    assert len(payments(catalog, members)) == 2

    # Re-read from the provider: the masked record loads with its real value and is resolved; the
    # replayed ones are updated in place.
    assert main(["sync", MAPPING, "--full-refresh"]) == 0
    capsys.readouterr()
    assert len(payments(catalog, [*members, secret])) == 3
    assert quarantined(catalog)[secret].resolved_at is not None
    open_now = {r["external_id"] for r in cli_json(capsys, "quarantine", "list", MAPPING)}
    assert open_now.isdisjoint({*members, secret})
    everything = cli_json(capsys, "quarantine", "list", MAPPING, "--all")
    assert {r["external_id"] for r in everything if r["resolved"]} >= {*members, secret}


def test_quarantine_commands_name_an_unknown_mapping(
    catalog: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["quarantine", "replay", "nosuch/stream"]) == 2
    assert "no mapping named 'nosuch/stream'" in capsys.readouterr().err
    assert main(["quarantine", "list", "--all"]) == 0
    assert "no quarantined records" in capsys.readouterr().out
