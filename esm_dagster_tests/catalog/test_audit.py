"""The audit log through the real entry points: the CLI as operators of each role, Dagster runs,
and the database's own refusal to change or delete an entry."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from esm_dagster.catalog.db import get_engine
from esm_dagster.cli import PERMISSION_OF, build_parser, main
from esm_dagster.demo.run import DEMO_OWNER, DEMO_STRIPE_KEY

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def demo(db_url: str, fernet_key: str, monkeypatch: pytest.MonkeyPatch):
    from esm_dagster_tests.stripe_fixtures import demo_catalog, stripe_emulator

    monkeypatch.setenv("ESM_DATABASE_URL", db_url)
    with stripe_emulator(customers=10, charges=20) as emulator:
        demo_catalog(db_url, emulator)
        yield db_url


def audit_rows(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:
    capsys.readouterr()
    assert main(["audit", "list", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def add_operator(email: str, role: str) -> None:
    assert main(["--as", DEMO_OWNER, "operators", "add", email, "--role", role]) == 0


def test_every_command_declares_its_permission() -> None:
    parser = build_parser()
    leaves = []

    def walk(p) -> None:
        for action in p._actions:
            if isinstance(action, type(parser._subparsers._group_actions[0])):
                for child in action.choices.values():
                    walk(child)
        if p.get_default("func") is not None:
            leaves.append(p.get_default("func"))

    walk(parser)
    assert leaves and all(func in PERMISSION_OF for func in leaves), [f.__name__ for f in leaves]


def test_each_change_is_audited_with_its_operator(
    demo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_operator("eng@padel.example", "engineer")
    assert main(["--as", "eng@padel.example", "mapping", "disable", "stripe/charges"]) == 0
    assert main(["--as", "eng@padel.example", "mapping", "enable", "stripe/charges"]) == 0
    assert (
        main(["--as", "eng@padel.example", "mapping", "edit", "stripe/charges", "--set", "priority=3"]) == 0
    )
    creds = tmp_path / "creds.yaml"
    creds.write_text(yaml.safe_dump({"api_key": DEMO_STRIPE_KEY}))
    assert (
        main(["--as", "eng@padel.example", "mapping", "edit", "stripe/charges", "--credentials", str(creds)])
        == 0
    )
    assert main(["--as", "eng@padel.example", "sync", "stripe/charges"]) == 0

    rows = audit_rows(capsys, "--mapping", "stripe/charges", "--actor", "eng@padel.example")
    actions = [r["action"] for r in reversed(rows)]
    assert actions == [
        "mapping.disabled",
        "mapping.enabled",
        "mapping.edited",
        "credentials.changed",
        "sync.manual",
        "credentials.read",
    ]
    assert all(r["actor_role"] == "engineer" and r["source"] == "cli" for r in rows)
    changed = next(r for r in rows if r["action"] == "credentials.changed")
    assert changed["details"] == {"fields": ["api_key"]}  # field names, never values
    everything = json.dumps(audit_rows(capsys, "--limit", "1000"))
    assert DEMO_STRIPE_KEY not in everything


def test_a_viewer_cannot_touch_credentials_and_the_refusal_is_audited(
    demo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_operator("viewer@padel.example", "viewer")
    creds = tmp_path / "creds.yaml"
    creds.write_text(yaml.safe_dump({"api_key": "sk_test_stolenstolenstolen000"}))
    capsys.readouterr()
    assert (
        main(
            ["--as", "viewer@padel.example", "mapping", "edit", "stripe/charges", "--credentials", str(creds)]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "viewer@padel.example (viewer) may not mapping edit" in err and "mapping.write" in err
    assert main(["--as", "viewer@padel.example", "sync", "stripe/charges"]) == 2
    assert main(["--as", "viewer@padel.example", "mapping", "list"]) == 0
    denied = audit_rows(capsys, "--action", "access.denied")
    assert [(r["actor"], r["outcome"], r["details"]["permission"]) for r in denied] == [
        ("viewer@padel.example", "denied", "sync.run"),
        ("viewer@padel.example", "denied", "mapping.write"),
    ]


def test_an_engineer_may_write_but_not_manage_operators(
    demo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add_operator("eng@padel.example", "engineer")
    capsys.readouterr()
    assert main(["--as", "eng@padel.example", "operators", "add", "me@padel.example", "--role", "admin"]) == 2
    assert "needs the operators.manage permission" in capsys.readouterr().err


def test_a_catalog_with_operators_wants_to_know_who_runs_a_command(
    demo: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ESM_USER")
    assert main(["mapping", "list"]) == 2
    err = capsys.readouterr().err
    assert "say who you are with --as EMAIL or ESM_USER=EMAIL" in err and DEMO_OWNER in err
    assert main(["--as", "nobody@example.com", "mapping", "list"]) == 2
    assert "'nobody@example.com' is not an active operator" in capsys.readouterr().err


def test_without_operators_one_person_runs_everything_as_admin(
    db_url: str, fernet_key: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ESM_DATABASE_URL", db_url)
    monkeypatch.delenv("ESM_USER")
    assert main(["db", "upgrade"]) == 0
    assert main(["mapping", "add", str(EXAMPLES / "stripe_mapping.yaml")]) == 0
    (created, changed) = sorted(audit_rows(capsys), key=lambda r: r["action"])[::-1]
    assert created["action"] == "mapping.created" and created["actor"] == "local"
    assert created["actor_role"] == "admin" and changed["action"] == "credentials.changed"


def test_the_database_refuses_to_change_or_delete_an_entry(demo: str) -> None:
    assert main(["mapping", "disable", "stripe/charges"]) == 0
    engine = get_engine(demo)
    for statement in ("update esm_audit_log set actor = 'someone else'", "delete from esm_audit_log"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text(statement))
    if engine.dialect.name == "postgresql":
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text("truncate esm_audit_log"))
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text("select count(*) from esm_audit_log where actor = 'someone else'")).scalar()
            == 0
        )
        assert conn.execute(sa.text("select count(*) from esm_audit_log")).scalar() > 0


def test_a_backfill_and_a_manual_run_in_dagster_are_audited(demo: str) -> None:
    from esm_dagster.orchestration.assets import sync_trigger

    assert sync_trigger({"dagster/backfill": "abc"}) == "sync.backfill"
    assert sync_trigger({"dagster/schedule_name": "daily"}) is None
    assert sync_trigger({}) == "sync.manual"

    from esm_dagster.orchestration.loader import build_definitions

    defs = build_definitions(demo)
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey(["esm", "stripe", "charges"])]
        )
        assert result.success
        run_id = result.run_id
    with get_engine(demo).connect() as conn:
        rows = conn.execute(
            sa.text(
                "select action, actor, source, run_id from esm_audit_log where source = 'dagster' order by id"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("sync.manual", "dagster", "dagster", run_id),
        ("credentials.read", "dagster", "dagster", run_id),
    ]


def test_re_adding_the_same_file_changes_no_credentials(
    db_url: str, fernet_key: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ESM_DATABASE_URL", db_url)
    assert main(["db", "upgrade"]) == 0
    for _ in range(2):
        assert main(["mapping", "add", str(EXAMPLES / "stripe_mapping.yaml")]) == 0
    actions = [r["action"] for r in reversed(audit_rows(capsys))]
    assert actions == ["mapping.created", "credentials.changed", "mapping.edited"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--action", "credential.read"], "action 'credential.read' is not an audit action"),
        (["--action", "credentails."], "action 'credentails.' is not an audit action"),
        (["--limit", "0"], "limit 0: must be at least 1"),
    ],
)
def test_a_filter_no_entry_can_match_is_refused_not_an_empty_log(
    db_url: str,
    fernet_key: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    needle: str,
) -> None:
    """`esm audit list --action credential.read` (a typo) printed "no entries": an auditor reads that
    as "nobody read a credential"."""
    monkeypatch.setenv("ESM_DATABASE_URL", db_url)
    assert main(["db", "upgrade"]) == 0
    assert main(["mapping", "add", str(EXAMPLES / "stripe_mapping.yaml")]) == 0
    capsys.readouterr()
    assert main(["audit", "list", *args]) == 2
    assert needle in capsys.readouterr().err
    assert [r["action"] for r in audit_rows(capsys, "--action", "credentials.")] == ["credentials.changed"]
