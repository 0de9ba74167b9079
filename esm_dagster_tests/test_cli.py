"""The `esm` command through its real entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine
from esm_dagster.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def cli_env(db_url: str, fernet_key: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ESM_DATABASE_URL", db_url)
    return db_url


def test_preview_gives_the_documented_json_for_the_seed_rules(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["mapping", "preview", "--rules", str(EXAMPLES / "seed_mapping_rules.json"),
         "--records", str(EXAMPLES / "stripe_customers.jsonl")]
    )  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"accepted", "rejected"}
    accepted = {a["index"]: a["rows"] for a in out["accepted"]}
    assert set(accepted) == {0, 1}
    john = accepted[0]["user"]
    assert john["email"] == "jsmith+test@example.org"
    assert john["phone_number"] == "+66812345678" and accepted[1]["user"]["phone_number"] == "+66812345678"
    assert john["external_id"] == "cus_0001"
    # Seconds and milliseconds give the same instant, rendered in the mapping's timezone.
    assert john["external_created_at"] == accepted[1]["user"]["external_created_at"]
    assert john["external_created_at"].endswith("+07:00")
    (rejected,) = out["rejected"]
    assert rejected["index"] == 2
    found = {(e["field"], e["rule"]) for e in rejected["errors"]}
    assert {("email", "email"), ("name", "required"), ("phone", "phone_number")} <= found
    assert all(e["message"] for e in rejected["errors"])


def test_mapping_add_encrypts_and_list_shows_the_overview(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mapping", "add", str(EXAMPLES / "stripe_mapping.yaml")]) == 0
    assert "added Stripe Club Account" in capsys.readouterr().out
    assert main(["mapping", "add", str(EXAMPLES / "stripe_mapping.yaml")]) == 0
    assert "updated Stripe Club Account" in capsys.readouterr().out
    with get_engine(cli_env).connect() as conn:
        stored = conn.execute(sa.text("select credentials from external_system_mapping")).scalars().all()
    assert len(stored) == 1
    assert "sk_test_replace_me" not in json.dumps(stored, default=str)
    assert main(["mapping", "list"]) == 0
    listing = capsys.readouterr().out
    header = listing.splitlines()[0].split()
    assert header[:5] == ["system", "type", "provider", "stream", "status"]
    assert "Stripe Club Account" in listing and "payment_gateway" in listing and "never" in listing
    assert main(["mapping", "list", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["frequency"] == "daily" and row["stream"] == "customers" and row["last_sync"] == "never"


def test_mapping_add_with_bad_rules_names_mapping_field_and_value(
    cli_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    doc = yaml.safe_load((EXAMPLES / "stripe_mapping.yaml").read_text())
    doc["mapping_rules"]["field_mappings"]["created"]["type"] = "timestap"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert main(["mapping", "add", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Stripe Club Account" in err and "field_mappings.created" in err and "timestap" in err
    assert "sk_test_replace_me" not in err
    with get_engine(cli_env).connect() as conn:
        assert conn.execute(sa.text("select count(*) from external_system_mapping")).scalar_one() == 0


def test_mapping_add_without_key_is_a_clear_error(
    cli_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ESM_FERNET_KEYS")
    assert main(["mapping", "add", str(EXAMPLES / "stripe_mapping.yaml")]) == 2
    assert "esm keys generate" in capsys.readouterr().err


def test_console_script_and_db_upgrade(tmp_path: Path) -> None:
    env = {"ESM_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}", "PATH": str(Path(sys.executable).parent)}
    out = subprocess.run(
        [str(Path(sys.executable).parent / "esm"), "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "at revision 0007_two_way_sync" in out.stdout
    key = subprocess.run(
        [sys.executable, "-m", "esm_dagster.cli", "keys", "generate"], capture_output=True, text=True
    )
    assert len(key.stdout.strip()) == 44


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        ({"provider_name": "strype"}, ["provider_name", "strype", "stripe"]),
        ({"mapping_rules.stream": "chargez"}, ["sync_config.stream", "chargez", "customers"]),
        (
            {"api_endpoint": "http://api.stripe.com"},
            ["api_endpoint", "http://api.stripe.com", "must use https"],
        ),
    ],
)
def test_mapping_add_names_the_unknown_provider_or_stream(
    cli_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict, needles: list[str]
) -> None:
    import yaml

    doc = yaml.safe_load((EXAMPLES / "stripe_mapping.yaml").read_text())
    for key, value in change.items():
        if key == "mapping_rules.stream":
            doc["mapping_rules"]["sync_config"]["stream"] = value
        else:
            doc[key] = value
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    code = main(["mapping", "add", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "Stripe Club Account" in err
    for needle in needles:
        assert needle in err
    assert "sk_test_replace_me" not in err


def test_sync_refuses_cleartext_http_to_a_remote_host(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # `esm mapping add` refuses such an endpoint; a row written some other way is refused at run time.
    assert main(["mapping", "add", str(EXAMPLES / "stripe_mapping.yaml")]) == 0
    with get_engine(cli_env).begin() as conn:
        conn.execute(sa.text("update external_system_mapping set api_endpoint = 'http://api.stripe.com'"))
    capsys.readouterr()
    assert main(["sync", "Stripe Club Account"]) == 2
    err = capsys.readouterr().err
    assert "must use https" in err and "Stripe Club Account" in err
    assert "sk_test_replace_me" not in err
