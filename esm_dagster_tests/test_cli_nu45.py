"""What a new user following the README's provider sections ran into (review nu45)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine
from esm_dagster.cli import main

REPO = Path(__file__).resolve().parents[1]

# The README's Mixpanel example writes `start_date: 2026-01-01` unquoted, which YAML reads as a date.
MAPPING_WITH_A_YAML_DATE = """\
system_name: Club Stripe Dated
system_type: payment_gateway
provider_name: stripe
api_endpoint: https://api.stripe.com
authentication_type: api_key
credentials: {api_key: sk_test_nu45_not_printed}
mapping_rules:
  field_mappings:
    email: user.email
  sync_config: {stream: customers, start_date: 2026-01-01}
"""


@pytest.fixture
def cli_env(db_url: str, fernet_key: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    monkeypatch.setenv("ESM_DATABASE_URL", db_url)
    monkeypatch.setenv("ESM_HOME", str(tmp_path / "home"))
    return db_url


def stored_rules(url: str) -> object:
    with get_engine(url).connect() as conn:
        return conn.execute(sa.text("select mapping_rules from external_system_mapping")).scalar_one()


def test_mapping_add_stores_an_unquoted_yaml_date(
    cli_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dated.yaml"
    path.write_text(MAPPING_WITH_A_YAML_DATE)
    assert main(["mapping", "add", "--no-reload", str(path)]) == 0, capsys.readouterr().err
    rules = stored_rules(cli_env)
    text = rules if isinstance(rules, str) else json.dumps(rules)
    assert '"start_date": "2026-01-01"' in text


def test_mapping_edit_rules_with_an_unquoted_yaml_datetime(
    cli_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dated.yaml"
    path.write_text(MAPPING_WITH_A_YAML_DATE.replace("start_date: 2026-01-01", "batch_size: 50"))
    assert main(["mapping", "add", "--no-reload", str(path)]) == 0
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "field_mappings: {email: user.email}\nsync_config: {stream: customers, start_date: 2026-02-01}\n"
    )
    code = main(["mapping", "edit", "Club Stripe Dated", "--rules", str(rules), "--no-reload"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "INSERT" not in err and "UPDATE" not in err
    stored = stored_rules(cli_env)
    text = stored if isinstance(stored, str) else json.dumps(stored)
    assert '"start_date": "2026-02-01"' in text


def test_telegram_emulator_explains_a_short_token_in_one_line() -> None:
    """`123456789:AAsecret` looks like the `--help` form, but real bot secrets are longer."""
    token = "123456789:AAshortsecret"
    env = {**os.environ, "ESM_TELEGRAM_EMULATOR_TOKENS": token, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "esm_dagster.sandbox.telegram", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr  # no traceback
    assert "ESM_TELEGRAM_EMULATOR_TOKENS" in lines[0] and "at least 20" in lines[0]
    assert "AAshortsecret" not in done.stderr + done.stdout


@pytest.mark.parametrize("endpoint", ["http://api.twilio.com", "https://127.0.0.1:1/"])
def test_a_refused_endpoint_is_one_line_on_stderr(cli_env: str, tmp_path: Path, endpoint: str) -> None:
    """The refusal is audited (and logged), but the user sees it once: `esm: error: ...`."""
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING_WITH_A_YAML_DATE.replace("https://api.stripe.com", endpoint))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESM_", "DAGSTER_"))}
    env.update({"ESM_DATABASE_URL": cli_env, "ESM_FERNET_KEYS": os.environ["ESM_FERNET_KEYS"]})
    env.update({"ESM_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)})
    done = subprocess.run(
        [sys.executable, "-m", "esm_dagster.cli", "mapping", "add", "--no-reload", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("esm: error: mapping 'Club Stripe Dated': api_endpoint")
    assert "sk_test_nu45_not_printed" not in done.stderr


def test_output_piped_into_head_is_no_error(tmp_path: Path) -> None:
    """`esm ... | head -c 1`: the reader leaves early; the command did its work, so no error line
    (seen in a new-user pass as `esm: error: [Errno 32] Broken pipe`, exit 2)."""
    import subprocess
    import sys

    examples = Path(__file__).resolve().parents[1] / "examples"
    records = tmp_path / "many.jsonl"
    line = (examples / "stripe_customers.jsonl").read_text().splitlines()[0]
    records.write_text("\n".join([line] * 3000) + "\n")  # far more output than a pipe buffer
    command = (
        f"{sys.executable} -m esm_dagster.cli mapping preview --rules {examples / 'seed_mapping_rules.json'} "
        f'--records {records} | head -c 1 >/dev/null; echo "exit=${{PIPESTATUS[0]}}"'
    )
    env = {**os.environ, "ESM_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"}
    result = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120)
    assert "Broken pipe" not in result.stderr and "esm: error" not in result.stderr, result.stderr
    assert result.stdout.strip() == "exit=0"
