"""`esm keys rotate` on a real catalog (SQLite and PostgreSQL): K1 -> K2, resumable, one bad row."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.key_rotation import RotationReport, rotate_credentials
from esm_dagster.catalog.mappings import MappingInput, upsert_mapping
from esm_dagster.catalog.models import ExternalSystemMapping, Task
from esm_dagster.cli import main
from esm_dagster.orchestration.loader import build_definitions
from esm_dagster.security.audit_hook import AUDIT_LOGGER
from esm_dagster.security.vault import Vault, VaultError, generate_key
from esm_dagster_tests.alerts.receivers import HOOK_PATH, HttpReceiver

K1, K2, K_LOST = generate_key(), generate_key(), generate_key()
SECRETS = [f"sk_test_rotation_{n:02d}_abcdef" for n in range(5)]


def _mapping(n: int) -> MappingInput:
    return MappingInput.model_validate(
        {
            "system_name": f"Stripe {n}",
            "system_type": "payment_gateway",
            "provider_name": "stripe",
            "api_endpoint": "https://api.stripe.com",
            "authentication_type": "api_key",
            "credentials": {"api_key": SECRETS[n]},
            "mapping_rules": {
                "field_mappings": {"email": "user.email"},
                "sync_config": {"stream": "customers"},
            },
        }
    )


@pytest.fixture
def catalog(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Five mappings written under K1; ESM_FERNET_KEYS then puts K2 in front."""
    with session_factory(db_url).begin() as session:
        for n in range(5):
            upsert_mapping(session, Vault([K1]), _mapping(n))
    monkeypatch.setenv("ESM_DATABASE_URL", db_url)
    monkeypatch.setenv("ESM_FERNET_KEYS", f"{K2},{K1}")
    monkeypatch.delenv("ESM_FERNET_KEYS_FILE", raising=False)
    return db_url


def _stored(url: str) -> dict[str, Any]:
    with session_factory(url)() as session:
        return {r.system_name: r.credentials for r in session.scalars(sa.select(ExternalSystemMapping))}


def _opens(vault: Vault, stored: dict[str, Any]) -> set[str]:
    opened = set()
    for name, credentials in stored.items():
        try:
            vault.decrypt(credentials, mapping=name)
        except VaultError:
            continue
        opened.add(name)
    return opened


def test_after_rotation_the_new_key_alone_opens_everything_and_the_old_one_nothing(
    catalog: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    before = _stored(catalog)
    assert _opens(Vault([K1]), before) == set(before) and _opens(Vault([K2]), before) == set()
    assert main(["keys", "rotate", "--batch-size", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["rotated"], report["already_current"], report["failed"], report["batches"]) == (5, 0, 0, 3)
    after = _stored(catalog)
    assert _opens(Vault([K2]), after) == set(after) and _opens(Vault([K1]), after) == set()
    assert {Vault([K2]).decrypt(c)["api_key"].reveal() for c in after.values()} == set(SECRETS)
    assert not any(secret in json.dumps(after) for secret in SECRETS)
    from esm_dagster.catalog.audit import list_entries

    entries = list_entries(catalog)
    rotated = [e for e in entries if e.action == "credentials.rotated"]
    assert sorted(e.mapping or "" for e in rotated) == [f"Stripe {n}" for n in range(5)]
    assert {e.outcome for e in rotated} == {"ok"}
    (summary,) = [e for e in entries if e.action == "keys.rotated"]
    assert summary.details["rotated"] == 5 and summary.actor_role == "admin"
    assert not any(secret in caplog.text + repr(entries) for secret in SECRETS)
    # A second run has nothing left to do.
    assert main(["keys", "rotate"]) == 0
    assert capsys.readouterr().out.startswith("rotated 0, already current 5, failed 0")


def test_a_rotation_killed_after_a_batch_is_finished_by_running_it_again(catalog: str) -> None:
    class Killed(BaseException):
        pass

    def kill(report: RotationReport) -> None:
        raise Killed

    vault = Vault([K2, K1])
    with pytest.raises(Killed):
        rotate_credentials(catalog, vault, batch_size=2, after_batch=kill)
    halfway = _stored(catalog)
    assert len(_opens(Vault([K2]), halfway)) == 2  # the committed batch, and only it
    report = rotate_credentials(catalog, vault, batch_size=2)
    assert (report.rotated, report.already_current, report.failed) == (3, 2, 0)
    assert _opens(Vault([K1]), _stored(catalog)) == set()


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    alerts = tmp_path / "alerts.yaml"
    alerts.write_text(f"channels:\n  hook:\n    type: webhook\n    url: {receiver.url(HOOK_PATH)}\n")
    monkeypatch.setenv("ESM_ALERTS_FILE", str(alerts))
    yield receiver
    receiver.close()


def test_an_undecryptable_row_is_only_its_own_problem(
    catalog: str, hook: HttpReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    lost = Vault([K_LOST]).encrypt({"api_key": "sk_test_lost_forever_123"})
    with get_engine(catalog).begin() as conn:
        conn.execute(
            sa.update(ExternalSystemMapping)
            .where(ExternalSystemMapping.system_name == "Stripe 2")
            .values(credentials=lost)
        )
    assert main(["keys", "rotate", "--batch-size", "2"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("rotated 4, already current 0, failed 1")
    assert "failed: Stripe 2" in out and "sk_test_lost" not in out
    with session_factory(catalog)() as session:
        rows = {r.system_name: r for r in session.scalars(sa.select(ExternalSystemMapping))}
        tasks = session.scalars(sa.select(Task)).all()
    broken = rows.pop("Stripe 2")
    assert str(broken.sync_status) == "error" and "credential_error" in (broken.last_error_message or "")
    assert all(str(r.sync_status) == "active" for r in rows.values())
    assert [t.mapping_id for t in tasks] == [broken.id]
    assert _opens(Vault([K2]), {n: r.credentials for n, r in rows.items()}) == set(rows)
    (alert,) = hook.received(HOOK_PATH)
    assert alert["json"]["error_class"] == "credential_error" and "Stripe 2" in json.dumps(alert["json"])
    assert "sk_test_lost" not in json.dumps(alert["json"])
    # Running again reports it again, but pages nobody twice for the same ciphertext.
    assert main(["keys", "rotate"]) == 1
    assert len(hook.received(HOOK_PATH)) == 1
    # The code location still loads every mapping (definitions never decrypt).
    defs = build_definitions(catalog)
    keys = {"/".join(k.path) for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {f"esm/stripe_{n}/customers" for n in range(5)} <= keys


def test_a_key_file_without_the_new_key_is_named_after_the_rotation(
    catalog: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ESM_FERNET_KEYS=NEW,OLD esm keys rotate` with the old key file in place: once the variable
    is gone, every command would read the file and open nothing. Seen in a new-user pass."""
    key_file = tmp_path / "fernet.keys"
    key_file.write_text(K1 + "\n")
    monkeypatch.setenv("ESM_FERNET_KEYS_FILE", str(key_file))
    assert main(["keys", "rotate"]) == 0
    err = capsys.readouterr().err
    assert f"{key_file} does not hold the newest key of ESM_FERNET_KEYS" in err
    assert K1 not in err and K2 not in err
    key_file.write_text(f"{K2}\n{K1}\n")
    assert main(["keys", "rotate"]) == 0
    assert "warning" not in capsys.readouterr().err
