"""What a person writes is bounded and checked on write: size, depth, endpoint and allowlist."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.mappings import MappingError, edit_mapping, get_mapping
from esm_dagster.cli import main
from esm_dagster.security.input_limits import MAX_JSON_BYTES, InputTooLarge, check_json_limits

KEY = "sk_test_inputlimits_0123456789"


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "system_name": "Stripe Limits",
        "system_type": "payment_gateway",
        "provider_name": "stripe",
        "api_endpoint": "https://api.stripe.com",
        "authentication_type": "api_key",
        "credentials": {"api_key": KEY},
        "mapping_rules": {"field_mappings": {"email": "user.email"}},
    }
    doc.update(changes)
    return doc


def _nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):  # `levels` objects, one inside the other
        value = {"x": value}
    return value


@pytest.fixture
def cli_env(db_url: str, fernet_key: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ESM_DATABASE_URL", db_url)
    assert main(["db", "upgrade"]) == 0
    return db_url


def _add(tmp_path: Path, doc: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(doc))
    capsys.readouterr()
    code = main(["mapping", "add", "--no-reload", str(path)])
    return code, capsys.readouterr().err


def test_bounds_are_inclusive_and_name_the_field() -> None:
    check_json_limits(_nested(32), "mapping_rules")
    with pytest.raises(InputTooLarge, match=r"^mapping_rules\.x(\.x)+: nested deeper than 32 levels$"):
        check_json_limits({"x": _nested(32)}, "mapping_rules")
    check_json_limits({"k": "a" * (MAX_JSON_BYTES - 20)}, "credentials")
    with pytest.raises(InputTooLarge, match=r"^credentials: larger than 256 kB as JSON$"):
        check_json_limits({"k": "a" * MAX_JSON_BYTES}, "credentials")


def test_an_alias_bomb_and_a_self_reference_are_refused_at_once() -> None:
    bomb = yaml.safe_load(
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        )
    )  # 10**9 leaves once expanded
    started = time.perf_counter()
    with pytest.raises(InputTooLarge, match="larger than 256 kB"):
        check_json_limits(bomb, "mapping_rules")
    loop = yaml.safe_load("&a [*a]")
    with pytest.raises(InputTooLarge, match="nested deeper"):
        check_json_limits(loop, "mapping_rules")
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"mapping_rules": {"field_mappings": {"email": "user.email"}, "x-deep": _nested(40)}},
         "mapping 'Stripe Limits': mapping_rules: nested deeper than 32 levels (at mapping_rules.x-deep.x"),
        ({"credentials": {"api_key": KEY, "pad": "p" * (300 * 1024)}},
         "mapping 'Stripe Limits': credentials: larger than 256 kB as JSON"),
        ({"mapping_rules": {"field_mappings": {"email": "user.email"}, "x-big": ["v" * 1000] * 300}},
         "mapping_rules: larger than 256 kB"),
        ({"api_endpoint": "https://10.0.0.1"}, "10.0.0.1 refused: private address"),
        ({"api_endpoint": "https://169.254.169.254"}, "cloud metadata"),
        ({"mapping_rules": {"field_mappings": {"email": "user.email"},
                            "sync_config": {"allowed_hosts": ["erp.lan", "not a host"]}}},
         "sync_config.allowed_hosts: 'not a host' is not a host name"),
    ],
)  # fmt: skip
def test_mapping_add_refuses_naming_the_field(
    cli_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, Any], needle: str
) -> None:
    code, err = _add(tmp_path, _doc(**changes), capsys)
    assert code == 2
    assert needle in err
    assert KEY not in err and len(err) < 2000


def test_an_allowlisted_private_endpoint_is_accepted(
    cli_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = {"field_mappings": {"email": "user.email"}, "sync_config": {"allowed_hosts": ["10.0.0.0/8"]}}
    code, err = _add(tmp_path, _doc(api_endpoint="https://10.0.0.1", mapping_rules=rules), capsys)
    assert (code, err) == (0, "")


def test_edit_refuses_oversize_or_deep_documents_and_a_lost_allowlist(
    cli_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = {"field_mappings": {"email": "user.email"}, "sync_config": {"allowed_hosts": ["erp.lan"]}}
    assert _add(tmp_path, _doc(api_endpoint="https://10.0.0.1", mapping_rules={**rules, "sync_config": {
        "allowed_hosts": ["10.0.0.1"]}}), capsys)[0] == 0  # fmt: skip
    with session_factory(cli_env).begin() as session:
        row = get_mapping(session, "Stripe Limits")
        with pytest.raises(MappingError, match=r"mapping_rules\.x-deep(\.x)+: nested deeper than 32"):
            edit_mapping(session, row, {}, mapping_rules={**rules, "x-deep": _nested(33)})
        with pytest.raises(MappingError, match="credentials: larger than 256 kB") as info:
            edit_mapping(session, row, {}, credentials={"api_key": KEY * 10_000})
        assert KEY not in str(info.value)
        # New rules whose allowlist no longer covers the row's endpoint are refused too.
        with pytest.raises(MappingError, match=r"10\.0\.0\.1 refused: private address"):
            edit_mapping(session, row, {}, mapping_rules=rules)
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps({**rules, "x-deep": _nested(40)}))
    capsys.readouterr()
    assert main(["mapping", "edit", "--no-reload", "Stripe Limits", "--rules", str(rules_file)]) == 2
    assert "mapping 'Stripe Limits': mapping_rules.x-deep.x" in capsys.readouterr().err
