"""`esm mapping enable|disable|edit` and `esm tasks list`: changing the catalog a person operates.

Each change command also asks a running Dagster UI to reload; here no UI listens (conftest points
the URL at a closed loopback port), which must be reported in one line and never fail the command. The reload
against a real `dagster dev` is covered by the UI end-to-end test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import get_mapping, load_specs
from esm_dagster.catalog.tasks import close_tasks, open_task
from esm_dagster.cli import main
from esm_dagster.security.vault import Vault

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CLUB = "Stripe Club Account"
PLACEHOLDER_KEY = "sk_test_replace_me_with_a_restricted_key"


@pytest.fixture
def catalog(db_url: str, fernet_key: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ESM_DATABASE_URL", db_url)  # ESM_HOME and a closed UI URL: conftest
    assert main(["mapping", "add", str(EXAMPLES / "stripe_mapping.yaml")]) == 0
    return db_url


def row_values(url: str, *columns: str) -> tuple:
    with get_engine(url).connect() as conn:
        return tuple(conn.execute(sa.text(f"select {', '.join(columns)} from external_system_mapping")).one())


def test_mapping_add_reports_that_no_ui_was_there_to_reload(
    catalog: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mapping", "add", str(EXAMPLES / "stripe_mapping.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"updated {CLUB}" in out
    assert "no Dagster UI at http://127.0.0.1:" in out
    assert main(["mapping", "add", "--no-reload", str(EXAMPLES / "stripe_mapping.yaml")]) == 0
    assert "Dagster UI" not in capsys.readouterr().out


def test_disable_removes_the_asset_and_enable_brings_it_back(
    catalog: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mapping", "disable", CLUB]) == 0
    assert "disabled Stripe Club Account" in capsys.readouterr().out
    assert row_values(catalog, "is_active", "sync_status") in ((False, "inactive"), (0, "inactive"))
    with session_factory(catalog)() as session:
        (spec,) = load_specs(session)
    assert not spec.is_active and spec.sync_status == "inactive"

    assert main(["mapping", "enable", "stripe_club_account/customers"]) == 0
    assert "status active" in capsys.readouterr().out
    assert row_values(catalog, "sync_status") == ("active",)
    assert bool(row_values(catalog, "is_active")[0]) is True


def test_enable_lifts_maintenance_but_not_error(catalog: str) -> None:
    with get_engine(catalog).begin() as conn:
        conn.execute(sa.text("update external_system_mapping set sync_status = 'maintenance'"))
    assert main(["mapping", "enable", CLUB]) == 0
    assert row_values(catalog, "sync_status") == ("active",)
    with get_engine(catalog).begin() as conn:
        conn.execute(sa.text("update external_system_mapping set sync_status = 'error'"))
    assert main(["mapping", "enable", CLUB]) == 0
    # Only a successful sync or health probe proves a mapping healthy again.
    assert row_values(catalog, "sync_status") == ("error",)


def test_edit_sets_typed_columns(catalog: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["mapping", "edit", CLUB, "--set", "priority=2", "--set", "sync_frequency=hourly",
         "--set", "timeout_seconds=45", "--set", "retry_attempts=0"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "edited Stripe Club Account" in out and "priority" in out and "sync_frequency" in out
    assert row_values(catalog, "priority", "sync_frequency", "timeout_seconds", "retry_attempts") == (
        2,
        "hourly",
        45,
        0,
    )
    assert main(["mapping", "edit", CLUB, "--set", "priority=2"]) == 0
    assert "no change" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("pair", "needles"),
    [
        ("priority=high", ["priority", "'high'"]),
        ("priority=500", ["priority", "'500'"]),
        ("sync_frequency=fortnightly", ["sync_frequency", "'fortnightly'"]),
        ("credentials=abc", ["credentials", "not an editable column"]),
        ("api_endpoint=http://api.stripe.com", ["api_endpoint", "http://api.stripe.com", "https"]),
        ("priority", ["--set", "COLUMN=VALUE"]),
    ],
)
def test_edit_refuses_bad_values_naming_mapping_column_and_value(
    catalog: str, capsys: pytest.CaptureFixture[str], pair: str, needles: list[str]
) -> None:
    before = row_values(catalog, "priority", "sync_frequency", "api_endpoint", "updated_at")
    assert main(["mapping", "edit", CLUB, "--set", pair]) == 2
    err = capsys.readouterr().err
    assert err.startswith("esm: error:") and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    if "--set" not in needles:
        assert CLUB in err
    assert row_values(catalog, "priority", "sync_frequency", "api_endpoint", "updated_at") == before


def test_edit_rules_are_validated_and_may_not_change_the_stream(
    catalog: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = yaml.safe_load((EXAMPLES / "stripe_mapping.yaml").read_text())["mapping_rules"]
    rules["validation_rules"]["required_fields"] = ["email", "name"]
    good = tmp_path / "rules.json"
    good.write_text(json.dumps(rules))
    assert main(["mapping", "edit", CLUB, "--rules", str(good)]) == 0
    with session_factory(catalog)() as session:
        assert get_mapping(session, CLUB).mapping_rules["validation_rules"]["required_fields"] == [
            "email",
            "name",
        ]
    capsys.readouterr()

    rules["validation_rules"]["data_types"]["email"] = "emial"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(rules))
    assert main(["mapping", "edit", CLUB, "--rules", str(bad)]) == 2
    err = capsys.readouterr().err
    assert CLUB in err and "data_types" in err and "emial" in err

    rules["validation_rules"]["data_types"]["email"] = "email"
    rules["sync_config"]["stream"] = "charges"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(rules))
    assert main(["mapping", "edit", CLUB, "--rules", str(other)]) == 2
    err = capsys.readouterr().err
    assert "stream" in err and "'charges'" in err and "'customers'" in err


def test_edit_credentials_stores_ciphertext_only(
    catalog: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new_key = "sk_test_rotated_after_revocation_123"
    path = tmp_path / "creds.yaml"
    path.write_text(yaml.safe_dump({"api_key": new_key}))
    assert main(["mapping", "edit", CLUB, "--credentials", str(path)]) == 0
    captured = capsys.readouterr()
    assert "credentials" in captured.out
    assert new_key not in captured.out + captured.err
    with get_engine(catalog).connect() as conn:
        stored = conn.execute(sa.text("select credentials from external_system_mapping")).scalar_one()
    assert new_key not in str(stored) and PLACEHOLDER_KEY not in str(stored)
    with session_factory(catalog)() as session:
        opened = Vault.from_env().decrypt(get_mapping(session, CLUB).credentials, mapping=CLUB)
    assert opened["api_key"].reveal() == new_key


def test_edit_with_nothing_to_change_says_so(catalog: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mapping", "edit", CLUB]) == 2
    assert "nothing to change" in capsys.readouterr().err


def test_tasks_list_shows_open_tasks_and_all_with_flag(
    catalog: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tasks", "list"]) == 0
    assert "no open tasks" in capsys.readouterr().out
    with session_factory(catalog).begin() as session:
        row = get_mapping(session, CLUB)
        assert open_task(session, row, "credentials", detail="401 invalid_api_key") is not None
        mapping_id = row.id
    assert main(["tasks", "list"]) == 0
    out = capsys.readouterr().out
    assert "Stripe Club Account: credentials needs attention" in out and "pending" in out

    assert main(["tasks", "list", "--json"]) == 0
    (task,) = json.loads(capsys.readouterr().out)
    assert task["mapping"] == CLUB and task["reason"] == "credentials" and task["status"] == "pending"

    with session_factory(catalog).begin() as session:
        assert close_tasks(session, mapping_id, "probe succeeded") == 1
    assert main(["tasks", "list"]) == 0
    assert "no open tasks" in capsys.readouterr().out
    assert main(["tasks", "list", "--all"]) == 0
    out = capsys.readouterr().out
    assert "completed" in out and "probe succeeded" in out


def test_sync_status_and_is_active_never_contradict_each_other(catalog: str) -> None:
    assert main(["mapping", "edit", CLUB, "--set", "sync_status=inactive"]) == 0
    assert row_values(catalog, "sync_status") == ("inactive",)
    assert not row_values(catalog, "is_active")[0]
    assert main(["mapping", "edit", CLUB, "--set", "sync_status=maintenance"]) == 0
    assert row_values(catalog, "sync_status") == ("maintenance",)
    assert bool(row_values(catalog, "is_active")[0]) is True


def test_re_adding_the_file_keeps_a_persons_decisions(catalog: str, tmp_path: Path) -> None:
    """`esm mapping add` of an unchanged file (or `make demo` again) must not re-enable a
    disabled mapping nor lift an `error` that only a successful sync may lift."""
    assert main(["mapping", "disable", CLUB]) == 0
    assert main(["mapping", "add", str(EXAMPLES / "stripe_mapping.yaml")]) == 0
    assert row_values(catalog, "sync_status") == ("inactive",)
    assert not row_values(catalog, "is_active")[0]
    assert main(["mapping", "enable", CLUB]) == 0
    with get_engine(catalog).begin() as conn:
        conn.execute(sa.text("update external_system_mapping set sync_status = 'error', error_count = 3"))
    assert main(["mapping", "add", str(EXAMPLES / "stripe_mapping.yaml")]) == 0
    assert row_values(catalog, "sync_status", "error_count") == ("error", 3)
    # A file that says so explicitly is a person's decision too.
    doc = yaml.safe_load((EXAMPLES / "stripe_mapping.yaml").read_text())
    doc["is_active"] = False
    path = tmp_path / "off.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["mapping", "add", str(path)]) == 0
    assert row_values(catalog, "sync_status") == ("inactive",)


def test_a_new_mapping_file_with_is_active_false_is_inactive(
    db_url: str, fernet_key: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ESM_DATABASE_URL", db_url)
    doc = yaml.safe_load((EXAMPLES / "stripe_mapping.yaml").read_text())
    doc["is_active"] = False
    path = tmp_path / "off.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["mapping", "add", str(path)]) == 0
    assert row_values(db_url, "sync_status") == ("inactive",)


def test_system_name_with_stream_selects_the_mapping(catalog: str) -> None:
    with session_factory(catalog)() as session:
        assert get_mapping(session, "Stripe Club Account/customers").system_name == CLUB
        assert get_mapping(session, "stripe club account/customers").system_name == CLUB


@pytest.mark.parametrize(
    ("change", "secret", "needles"),
    [
        ({"drop": "provider_name"}, "sk_test_local_emulator_only", ["provider_name", "Field required"]),
        ({"rename": ("credentials", "credential")}, "sk_test_local_emulator_only", ["credential", "did you mean 'credentials'"]),
        ({"credentials": {"password": "S3cure!Pass", "api_key": "S3cure!Pass"}, "drop": "provider_name"}, "S3cure!Pass", ["provider_name"]),
        ({"credentials": {"api_key": 12345678}}, "12345678", ["credentials.api_key"]),
    ],
)  # fmt: skip
def test_mapping_add_errors_never_print_credentials(
    catalog: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict,
    secret: str,
    needles: list[str],
) -> None:
    doc = yaml.safe_load((EXAMPLES / "stripe_emulator_mapping.yaml").read_text())
    doc = doc["mappings"][0] if "mappings" in doc else doc
    if "credentials" in change:
        doc["credentials"] = change["credentials"]
    if "drop" in change:
        doc.pop(change["drop"])
    if "rename" in change:
        old, new = change["rename"]
        doc[new] = doc.pop(old)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    capsys.readouterr()
    assert main(["mapping", "add", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("esm: error: mapping ") and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert secret not in err, err
    assert len(err) < 600, f"one short line, not the whole document: {err}"


@pytest.fixture
def demo(db_url: str, fernet_key: str, monkeypatch: pytest.MonkeyPatch) -> str:
    from esm_dagster_tests.stripe_fixtures import demo_catalog, stripe_emulator

    monkeypatch.setenv("ESM_DATABASE_URL", db_url)
    with stripe_emulator(customers=20, charges=40) as emulator:
        demo_catalog(db_url, emulator)
        yield db_url


def test_sync_of_a_disabled_mapping_is_refused_unless_forced(
    demo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mapping", "disable", "stripe/charges"]) == 0
    capsys.readouterr()
    assert main(["sync", "stripe/charges"]) == 2
    err = capsys.readouterr().err
    assert "'Stripe' is disabled" in err and "--force" in err
    with get_engine(demo).connect() as conn:
        assert conn.execute(sa.text("select count(*) from esm_sync_run")).scalar_one() == 0
    assert main(["sync", "stripe/charges", "--force"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "success"


def test_since_without_offset_is_the_mappings_local_time(
    demo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import datetime as dt
    from zoneinfo import ZoneInfo

    assert main(["sync", "stripe/charges", "--since", "2026-11-01"]) == 0  # an Asia/Bangkok mapping
    report = json.loads(capsys.readouterr().out)
    assert report["window_start"] == int(
        dt.datetime(2026, 11, 1, tzinfo=ZoneInfo("Asia/Bangkok")).timestamp()
    )
    assert main(["sync", "stripe/charges", "--since", "2026-11-01T00:00+00:00"]) == 0
    assert json.loads(capsys.readouterr().out)["window_start"] == int(
        dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp()
    )
    for bad, needle in (
        ("yesterday", "--since: 'yesterday' is not an ISO date"),
        ("2999-01-01", "in the future"),
    ):
        assert main(["sync", "stripe/charges", "--since", bad]) == 2
        assert needle in capsys.readouterr().err


def test_a_key_pasted_into_the_rules_is_not_echoed(
    catalog: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "TopSecretValue9"
    doc = yaml.safe_load((EXAMPLES / "stripe_mapping.yaml").read_text())
    doc["credentials"] = {"api_key": secret}
    doc["mapping_rules"]["transformations"]["timezone"] = secret  # a mis-indented YAML block
    path = tmp_path / "pasted.yaml"
    path.write_text(yaml.safe_dump(doc))
    capsys.readouterr()
    assert main(["mapping", "add", str(path)]) == 2
    err = capsys.readouterr().err
    assert "transformations.timezone" in err and "IANA" in err, err
    assert secret not in err, err

    creds = tmp_path / "creds.yaml"
    creds.write_text(yaml.safe_dump({"api_key": secret}))
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(doc["mapping_rules"]))
    assert main(["mapping", "edit", CLUB, "--rules", str(rules), "--credentials", str(creds)]) == 2
    err = capsys.readouterr().err
    assert "transformations.timezone" in err and secret not in err, err


def test_a_revoked_key_in_a_cli_sync_opens_the_credentials_task(
    demo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    creds = tmp_path / "revoked.yaml"
    creds.write_text(yaml.safe_dump({"api_key": "sk_test_revokedrevokedrevoked0000"}))
    assert main(["mapping", "edit", "stripe/charges", "--credentials", str(creds)]) == 0
    capsys.readouterr()
    for _ in range(2):
        assert main(["sync", "stripe/charges"]) == 2
    capsys.readouterr()
    assert main(["tasks", "list", "--json"]) == 0
    (task,) = json.loads(capsys.readouterr().out)
    assert task["reason"] == "credentials" and task["status"] == "pending"


def test_test_connection_reports_ok_and_a_revoked_key_without_printing_it(
    demo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["test-connection", "stripe/charges"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: mapping 'Stripe' answered in "), out

    revoked = "sk_test_revokedrevokedrevoked0000"
    creds = tmp_path / "revoked.yaml"
    creds.write_text(yaml.safe_dump({"api_key": revoked}))
    assert main(["mapping", "edit", "stripe/charges", "--credentials", str(creds)]) == 0
    capsys.readouterr()
    assert main(["test-connection", "stripe/charges", "--json"]) == 1
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["ok"] is False and result["error_class"] == "auth"
    assert revoked not in captured.out + captured.err
    # The result is on the mapping row and in its run history (a `probe` run each time).
    with get_engine(demo).connect() as conn:
        message = conn.execute(
            sa.text(
                "select last_error_message from external_system_mapping where last_error_message is not null"
            )
        ).scalar_one()
        kinds = conn.execute(sa.text("select status from esm_sync_run where kind = 'probe'")).scalars().all()
    assert "HTTP 401" in message and revoked not in message
    assert sorted(kinds) == ["failed", "success"]
    capsys.readouterr()
    assert main(["audit", "list", "--action", "connection.tested", "--json"]) == 0
    tested = json.loads(capsys.readouterr().out)
    assert [(e["outcome"], e["details"]["error_class"]) for e in tested] == [("failed", "auth"), ("ok", None)]
