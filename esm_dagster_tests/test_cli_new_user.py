"""What a new user runs into with `esm`: key files, unmigrated catalogs, typos, bad files, ports.

Most tests run the real `esm` console script in a subprocess, with a clean environment (no key
variables) and their own `ESM_HOME`, the way a user runs it after `make demo`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from esm_dagster.catalog.db import get_engine
from esm_dagster.cli import main
from esm_dagster.demo.run import DEMO_STRIPE_KEY
from esm_dagster.security.vault import generate_key
from esm_dagster_tests.stripe_fixtures import stripe_emulator

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ESM = str(Path(sys.executable).parent / "esm")
CLUB = "Stripe Club Account"


def esm(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ESM_", "DAGSTER_"))}
    clean["ESM_ALLOW_LOOPBACK"] = "1"  # sandbox mode: every mapping here points at a loopback emulator
    return subprocess.run([ESM, *args], env={**clean, **env}, capture_output=True, text=True, timeout=120)


def mapping_file(tmp_path: Path, name: str = "m.yaml", **changes: Any) -> Path:
    doc = yaml.safe_load((EXAMPLES / "stripe_mapping.yaml").read_text())
    rules = changes.pop("mapping_rules", None)
    doc.update(changes)
    if rules is not None:
        doc["mapping_rules"] = rules
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def count(url: str, sql: str) -> int:
    with get_engine(url).connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


@pytest.fixture
def cli_env(db_url: str, fernet_key: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    monkeypatch.setenv("ESM_DATABASE_URL", db_url)
    monkeypatch.setenv("ESM_HOME", str(tmp_path / "home"))  # no key file there
    return db_url


@pytest.fixture
def emulator():
    with stripe_emulator(customers=20, charges=40) as emu:
        yield emu


# -- 1: after `make demo` the key file in ESM_HOME is enough --------------------------------------


def test_sync_uses_the_key_file_in_esm_home_without_variables(tmp_path: Path, emulator) -> None:
    home = tmp_path / "home"
    env = {"ESM_HOME": str(home)}
    assert esm("db", "upgrade", env=env).returncode == 0
    (home / "fernet.keys").write_text(generate_key() + "\n")
    path = mapping_file(tmp_path, api_endpoint=emulator.url, credentials={"api_key": DEMO_STRIPE_KEY})
    added = esm("mapping", "add", str(path), env=env)
    assert added.returncode == 0, added.stderr
    synced = esm("sync", f"{CLUB}", env=env)
    assert synced.returncode == 0, synced.stderr
    report = json.loads(synced.stdout)
    assert report["status"] == "success" and report["records_read"] == 20


# -- 2: no key configured is not the mapping's fault ------------------------------------------------


def test_sync_without_any_key_does_not_count_against_the_mapping(
    cli_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mapping", "add", str(EXAMPLES / "stripe_mapping.yaml")]) == 0
    capsys.readouterr()
    monkeypatch.delenv("ESM_FERNET_KEYS")
    for _ in range(4):
        assert main(["sync", CLUB]) == 2
        err = one_line(capsys.readouterr().err)
        assert "no Fernet key" in err and "esm keys generate" in err
    assert count(cli_env, "select error_count from external_system_mapping") == 0
    assert count(cli_env, "select count(*) from external_system_mapping where sync_status = 'active'") == 1
    assert count(cli_env, "select count(*) from esm_sync_run") == 0


def test_engine_without_any_key_does_not_count_against_the_mapping(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from esm_dagster.security.vault import VaultNotConfigured
    from esm_dagster.sync.engine import run_mapping

    assert main(["mapping", "add", str(EXAMPLES / "stripe_mapping.yaml")]) == 0
    monkeypatch.delenv("ESM_FERNET_KEYS")
    for _ in range(3):
        with pytest.raises(VaultNotConfigured):
            run_mapping(cli_env, CLUB)
    assert count(cli_env, "select error_count from external_system_mapping") == 0


# -- 3: a failed sync is printed once -----------------------------------------------------------------


def test_failed_sync_prints_one_line(db_url: str, tmp_path: Path) -> None:
    env = {"ESM_DATABASE_URL": db_url, "ESM_HOME": str(tmp_path / "home"), "ESM_FERNET_KEYS": generate_key()}
    with socket.socket() as closed:  # a loopback port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    path = mapping_file(tmp_path, api_endpoint=f"http://127.0.0.1:{port}", retry_attempts=0)
    assert esm("mapping", "add", str(path), env=env).returncode == 0
    result = esm("sync", CLUB, env=env)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith("esm: error: sync of 'Stripe Club Account'/customers failed")
    assert "sk_test_replace_me" not in result.stderr


# -- 4: typos in rules sections ----------------------------------------------------------------------


def test_preview_refuses_a_misspelt_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = json.loads((EXAMPLES / "seed_mapping_rules.json").read_text())
    rules["validation_rule"] = rules.pop("validation_rules")
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))
    code = main(
        ["mapping", "preview", "--rules", str(path), "--records", str(EXAMPLES / "stripe_customers.jsonl")]
    )
    assert code == 2
    err = one_line(capsys.readouterr().err)
    assert "validation_rule: unknown key; did you mean 'validation_rules'?" in err


def test_mapping_add_refuses_a_misspelt_option(cli_env: str, tmp_path: Path, capsys) -> None:
    rules = yaml.safe_load((EXAMPLES / "stripe_mapping.yaml").read_text())["mapping_rules"]
    rules["validation_rules"]["required_field"] = rules["validation_rules"].pop("required_fields")
    rules["transformation"] = rules.pop("transformations")
    assert main(["mapping", "add", str(mapping_file(tmp_path, mapping_rules=rules))]) == 2
    err = one_line(capsys.readouterr().err)
    assert CLUB in err
    assert "validation_rules.required_field: unknown key; did you mean 'required_fields'?" in err
    assert "transformation: unknown key; did you mean 'transformations'?" in err
    assert count(cli_env, "select count(*) from external_system_mapping") == 0


# -- 5: an unmigrated catalog ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["mapping", "list"], ["mapping", "add", "FILE"], ["sync", "stripe/customers"]]
)
def test_unmigrated_catalog_says_run_db_upgrade(blank_db: str, tmp_path: Path, args: list[str]) -> None:
    env = {
        "ESM_DATABASE_URL": blank_db,
        "ESM_HOME": str(tmp_path / "home"),
        "ESM_FERNET_KEYS": generate_key(),
    }
    args = [str(EXAMPLES / "stripe_mapping.yaml") if a == "FILE" else a for a in args]
    result = esm(*args, env=env)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "has no external_system_mapping table: run `esm db upgrade` first" in line
    assert "[SQL" not in line and "OperationalError" not in line


def test_unmigrated_default_home_catalog(tmp_path: Path) -> None:
    result = esm("mapping", "list", env={"ESM_HOME": str(tmp_path / "fresh")})
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line == (
        f"esm: error: the catalog sqlite:///{tmp_path / 'fresh' / 'catalog.db'} has no "
        "external_system_mapping table: run `esm db upgrade` first"
    )


# -- 6: broken and missing files -----------------------------------------------------------------------


def test_missing_and_broken_files_are_named_with_their_line(
    cli_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = str(EXAMPLES / "stripe_customers.jsonl")
    missing = tmp_path / "nope.yaml"
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{\n  "field_mappings": {"id": "t.external_id"},\n  "x": \n}\n')
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("system_name: x\nmapping_rules: [1,\n  field: 2\n")
    not_mapping = tmp_path / "scalar.yaml"
    not_mapping.write_text("just text\n")
    list_line = tmp_path / "lists.jsonl"
    list_line.write_text('{"id": "cus_1", "email": "a@example.org"}\n\n[1, 2]\n')
    cases = [
        (["mapping", "preview", "--rules", str(EXAMPLES / "seed_mapping_rules.json"), "--records", str(list_line)],
         f"{list_line}:3: expected one provider record (a JSON object) per line, got list"),
        (["mapping", "add", str(missing)], f"{missing}: no such file"),
        (["mapping", "preview", "--rules", str(missing), "--records", records], f"{missing}: no such file"),
        (["mapping", "preview", "--rules", str(EXAMPLES / "seed_mapping_rules.json"), "--records", str(missing)],
         f"{missing}: no such file"),
        (["mapping", "preview", "--rules", str(bad_json), "--records", records], f"{bad_json}:4:1: not valid JSON"),
        (["mapping", "add", str(bad_json)], f"{bad_json}:4:1: not valid JSON"),
        (["mapping", "add", str(bad_yaml)], f"{bad_yaml}:4:1: not valid YAML"),
        (["mapping", "add", str(not_mapping)], f"{not_mapping}: a mapping file holds"),
    ]  # fmt: skip
    for args, expected in cases:
        assert main(args) == 2, args
        err = one_line(capsys.readouterr().err)
        assert err.startswith(f"esm: error: {expected}"), (args, err)


def test_broken_yaml_through_the_console_script(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n b: c\n")
    result = esm("mapping", "add", str(bad), env={"ESM_HOME": str(tmp_path / "h")})
    assert result.returncode == 2
    assert one_line(result.stderr).startswith(f"esm: error: {bad}:3:1: not valid YAML")


# -- 7: the emulator port is busy ----------------------------------------------------------------------


def test_busy_emulator_port_names_the_port_and_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from esm_dagster.demo.run import start_stripe_emulator

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setenv("ESM_STRIPE_EMULATOR_PORT", str(port))
        with pytest.raises(RuntimeError) as info:
            start_stripe_emulator(None)
        message = str(info.value)
        assert f"127.0.0.1:{port}" in message and "ESM_STRIPE_EMULATOR_PORT" in message
        assert "in use" in message
        result = esm("demo", env={"ESM_HOME": str(tmp_path / "h"), "ESM_STRIPE_EMULATOR_PORT": str(port)})
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert f"port {port}" in line and "ESM_STRIPE_EMULATOR_PORT" in line


@pytest.mark.slow
def test_demo_twice_then_with_a_persons_failing_mapping_in_the_catalog(tmp_path: Path) -> None:
    """`make demo` as the README runs it, twice; then the README's own emulator mapping is added to
    the same catalog, pointing at an emulator that is not running: the demo still syncs only its
    own mappings, exits 0 and names the other one."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    env = {"ESM_HOME": str(tmp_path / "home"), "ESM_STRIPE_EMULATOR_PORT": str(port)}
    args = ("demo", "--customers", "30", "--charges", "90")

    def counts() -> tuple[int, int, int]:
        url = f"sqlite:///{tmp_path / 'home' / 'catalog.db'}"
        with get_engine(url).connect() as conn:
            return tuple(  # type: ignore[return-value]
                conn.execute(sa.text(f'select count(*) from "{t}"')).scalar_one()
                for t in ("user", "payment", "esm_quarantine")
            )

    first = esm(*args, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "2 Dagster runs (success)" in first.stdout
    assert "esm/stripe/charges    90" in first.stdout and "esm/stripe/customers  30" in first.stdout
    after_first = counts()
    assert after_first[1] > 0 and after_first[0] > 1
    second = esm(*args, env=env)
    assert second.returncode == 0 and counts() == after_first

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = closed.getsockname()[1]
    mine = mapping_file(
        tmp_path, "mine.yaml", system_name="My Emulator", api_endpoint=f"http://127.0.0.1:{nobody}"
    )
    assert esm("mapping", "add", "--no-reload", str(mine), env=env).returncode == 0
    third = esm(*args, env=env)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert "Not part of the demo, not synced (`esm sync MAPPING`): My Emulator/customers" in third.stdout
    assert "FAILED" not in third.stdout and counts() == after_first


# -- 8: the endpoint rule at add time --------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint", ["http://evil.example.com", "ftp://api.stripe.com", "https://user:pw@api.stripe.com"]
)
def test_mapping_add_refuses_an_unsafe_endpoint(
    cli_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], endpoint: str
) -> None:
    assert main(["mapping", "add", str(mapping_file(tmp_path, api_endpoint=endpoint))]) == 2
    err = one_line(capsys.readouterr().err)
    assert f"mapping {CLUB!r}: api_endpoint" in err
    assert "pw" not in err.replace("api_endpoint", "")
    assert count(cli_env, "select count(*) from external_system_mapping") == 0


def test_mapping_add_accepts_https_and_loopback_http(cli_env: str, tmp_path: Path) -> None:
    assert main(["mapping", "add", str(mapping_file(tmp_path, api_endpoint="http://127.0.0.1:12111"))]) == 0
    assert main(["mapping", "add", str(mapping_file(tmp_path, api_endpoint="https://api.stripe.com/"))]) == 0


# -- 9: ids in the listing, and id prefixes ----------------------------------------------------------


def test_list_shows_a_short_id_that_sync_accepts(
    cli_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from esm_dagster.catalog.db import session_factory
    from esm_dagster.catalog.mappings import MappingError, get_mapping

    assert main(["mapping", "add", str(EXAMPLES / "stripe_mapping.yaml")]) == 0
    charges = yaml.safe_load((EXAMPLES / "stripe_mapping.yaml").read_text())["mapping_rules"]
    charges["sync_config"]["stream"] = "charges"
    assert main(["mapping", "add", str(mapping_file(tmp_path, mapping_rules=charges))]) == 0
    capsys.readouterr()
    assert main(["mapping", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert "id" in header
    column = header.index("id")
    short_ids = [line.split()[column + 2] for line in lines[2:]]  # "Stripe Club Account" is 3 words
    assert all(len(s) == 8 for s in short_ids) and len(set(short_ids)) == 2
    assert main(["sync", CLUB]) == 2
    assert "names 2 mappings" in capsys.readouterr().err
    with session_factory(cli_env)() as session:
        for short in short_ids:
            row = get_mapping(session, short)
            assert str(row.id).startswith(short)
            assert get_mapping(session, short.upper()).id == row.id
        with pytest.raises(MappingError, match="no mapping"):
            get_mapping(session, "0123456")  # fewer than 8 characters is not an id prefix
        with pytest.raises(MappingError, match="no mapping"):
            get_mapping(session, uuid.uuid4().hex[:8] + "zz")


def test_ambiguous_id_prefix_is_refused(cli_env: str) -> None:
    from esm_dagster.catalog.db import session_factory
    from esm_dagster.catalog.mappings import MappingError, get_mapping
    from esm_dagster.catalog.models import ExternalSystemMapping

    assert main(["mapping", "add", str(EXAMPLES / "stripe_mapping.yaml")]) == 0
    with session_factory(cli_env).begin() as session:
        row = session.scalars(sa.select(ExternalSystemMapping)).one()
        twin = ExternalSystemMapping(
            **{
                c.key: getattr(row, c.key)
                for c in sa.inspect(ExternalSystemMapping).column_attrs
                if c.key != "id"
            }
        )
        twin.id = uuid.UUID(str(row.id)[:8] + "-0000-4000-8000-000000000000")
        twin.system_name = "Other"
        session.add(twin)
    with session_factory(cli_env)() as session:
        with pytest.raises(MappingError, match="matches 2 mappings"):
            get_mapping(session, str(twin.id)[:8])
        assert get_mapping(session, str(twin.id)[:13]).system_name == "Other"
