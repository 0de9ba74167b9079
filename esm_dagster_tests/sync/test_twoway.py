"""Two-way sync of Stripe customers <-> `user` over loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
import sqlalchemy as sa

from esm_dagster.catalog.conflicts import list_conflicts
from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.models import AuditEntry
from esm_dagster.catalog.types import ExactDecimal
from esm_dagster.cli import main
from esm_dagster.sandbox.stripe import StripeEmulator
from esm_dagster.sync.engine import SyncFailed, SyncReport, run_mapping
from esm_dagster_tests.providers.engine_helpers import register_mapping
from esm_dagster_tests.sync.twoway_helpers import KEY, change_user, customer_mapping, posts, user_rows

SOURCE = "members/customers"
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


@pytest.fixture
def emulator() -> Iterator[StripeEmulator]:
    with StripeEmulator(api_keys=[KEY], customers=0, charges=0, seed=3) as em:
        yield em


def test_round_trip_reaches_a_fixed_point(db_url: str, fernet_key: str, emulator: StripeEmulator) -> None:
    a = emulator.add_customer(
        email="ann@example.com", name="Ann", phone="+66812345678", balance=80, metadata={"currency": "jpy"}
    )
    b = emulator.add_customer(email="bob@example.com", name="Bob", balance=1999, metadata={"currency": "usd"})
    register_mapping(db_url, customer_mapping(emulator, "Members"))
    first = run_mapping(db_url, "Members")
    rows = user_rows(db_url, SOURCE)
    assert rows[a["id"]]["balance"] == Decimal("80") and rows[b["id"]]["balance"] == Decimal("19.99")
    assert first.records_pushed == 0 and first.local_updates == 2
    writes = posts(emulator)
    second = run_mapping(db_url, "Members")
    assert (second.records_pushed, second.local_updates, posts(emulator) - writes) == (0, 0, 0)
    change_user(db_url, SOURCE, a["id"], T0, phone_number="+66899999999")
    emulator.update_customer(a["id"], email="ann.new@example.com")
    third = run_mapping(db_url, "Members")
    assert (third.records_pushed, third.local_updates) == (1, 1)
    customer = emulator.get_object("customers", a["id"])
    assert (
        customer is not None
        and customer["phone"] == "+66899999999"
        and customer["email"] == "ann.new@example.com"
    )
    assert user_rows(db_url, SOURCE)[a["id"]]["email"] == "ann.new@example.com"
    writes = posts(emulator)
    fourth = run_mapping(db_url, "Members")
    assert (fourth.records_pushed, fourth.local_updates, posts(emulator) - writes) == (0, 0, 0)


def _sync(url: str, name: str = "Members") -> SyncReport:
    return run_mapping(url, name)


def _three_way(url: str, emulator: StripeEmulator, count: int, **sync: object) -> list[str]:
    ids = [
        emulator.add_customer(
            email=f"m{n}@example.com", name=f"M{n}", balance=100 * n, metadata={"currency": "thb"}
        )["id"]
        for n in range(count)
    ]
    register_mapping(url, customer_mapping(emulator, "Members", **sync))
    _sync(url)
    return ids


def test_an_echoed_inbound_change_is_one_local_update_and_no_write(
    db_url: str, fernet_key: str, emulator: StripeEmulator
) -> None:
    (a,) = _three_way(db_url, emulator, 1)
    emulator.update_customer(a, name="Changed At Stripe")
    writes = posts(emulator)
    inbound = _sync(db_url)
    assert (inbound.local_updates, inbound.records_pushed, posts(emulator) - writes) == (1, 0, 0)
    # Our own write comes back in the next listing (and as a customer.updated event): not a change.
    change_user(db_url, SOURCE, a, T0, full_name="Changed Here")
    pushed = _sync(db_url)
    assert (pushed.records_pushed, pushed.local_updates) == (1, 0)
    customer = emulator.get_object("customers", a)
    assert customer is not None and customer["name"] == "Changed Here"
    writes = posts(emulator)
    echo = _sync(db_url)
    assert (echo.local_updates, echo.records_pushed, posts(emulator) - writes) == (0, 0, 0)


def test_a_customer_deleted_at_stripe_is_soft_deleted(
    db_url: str, fernet_key: str, emulator: StripeEmulator
) -> None:
    ids = _three_way(db_url, emulator, 3)
    emulator.delete_customer(ids[1])
    report = _sync(db_url)
    rows = user_rows(db_url, SOURCE)
    assert report.records_deleted == 1 and set(rows) == set(ids)  # soft: the row stays
    assert rows[ids[1]]["is_deleted"] and rows[ids[1]]["deleted_at"] is not None
    assert not rows[ids[0]]["is_deleted"] and not rows[ids[2]]["is_deleted"]
    writes = posts(emulator)
    again = _sync(db_url)
    assert (again.records_deleted, again.records_pushed, posts(emulator) - writes) == (0, 0, 0)


def test_hard_deletes_remove_the_row(db_url: str, fernet_key: str, emulator: StripeEmulator) -> None:
    ids = _three_way(db_url, emulator, 3, delete_mode="hard")
    emulator.delete_customer(ids[0])
    assert _sync(db_url).records_deleted == 1
    assert set(user_rows(db_url, SOURCE)) == set(ids[1:])


def test_a_reconciliation_with_a_failed_page_deletes_nothing(
    db_url: str, fernet_key: str, emulator: StripeEmulator
) -> None:
    ids = _three_way(db_url, emulator, 5, batch_size=2)  # pages of 2: three pages
    emulator.delete_customer(ids[0])
    emulator.delete_customer(ids[3])
    emulator.faults.fail_next(5, 500, path="/v1/customers", after=1)  # page 2 and its retry fail
    with pytest.raises(SyncFailed) as caught:
        _sync(db_url)
    assert caught.value.report.error_class == "server" and caught.value.report.records_deleted == 0
    assert not any(r["is_deleted"] for r in user_rows(db_url, SOURCE).values())
    emulator.faults.clear()
    assert _sync(db_url).records_deleted == 2
    deleted = {x for x, r in user_rows(db_url, SOURCE).items() if r["is_deleted"]}
    assert deleted == {ids[0], ids[3]}


def test_a_reconciliation_over_max_delete_share_deletes_nothing(
    db_url: str, fernet_key: str, emulator: StripeEmulator
) -> None:
    ids = _three_way(db_url, emulator, 4, max_delete_share=0.5)
    for customer in ids[:3]:
        emulator.delete_customer(customer)
    with pytest.raises(SyncFailed, match=r"reconciliation refused: 3 of 4 .*max_delete_share=0.5") as caught:
        _sync(db_url)
    assert caught.value.report.error_class == "validation"
    assert not any(r["is_deleted"] for r in user_rows(db_url, SOURCE).values())


def _insert_users(url: str, rows: list[dict[str, object]]) -> None:
    """What the club's application does: new rows nobody has synced yet."""
    user = sa.table(
        "user",
        sa.column("id", sa.Uuid()),
        sa.column("email", sa.Text()),
        sa.column("full_name", sa.Text()),
        sa.column("balance", ExactDecimal()),
        sa.column("currency", sa.Text()),
    )
    with get_engine(url).begin() as conn:
        conn.execute(sa.insert(user), [{"id": uuid.uuid4(), **r} for r in rows])


def test_operators_are_not_pushed_as_new_customers(
    db_url: str, fernet_key: str, emulator: StripeEmulator
) -> None:
    """The catalog's owner and `esm operators add` people are rows of `user` with a role: a new user's
    first bidirectional round created them all as Stripe customers."""
    register_mapping(db_url, customer_mapping(emulator, "Members"))
    _sync(db_url)  # creates the mapped columns of `user`
    member = {"full_name": "Member", "balance": Decimal("5"), "currency": "usd"}
    _insert_users(db_url, [{"email": "member@example.com", **member}])
    operator = sa.table("user", sa.column("id", sa.Uuid()), sa.column("email"), sa.column("role"))
    with get_engine(db_url).begin() as conn:
        conn.execute(sa.insert(operator).values(id=uuid.uuid4(), email="eng@club.example", role="engineer"))
    report = _sync(db_url)
    emails = [
        (emulator.get_object("customers", i) or {}).get("email") for i in emulator.object_ids("customers")
    ]
    assert (report.records_pushed, emails) == (1, ["member@example.com"])


def test_jpy_and_usd_are_pushed_in_minor_units_and_round_trip(
    db_url: str, fernet_key: str, emulator: StripeEmulator
) -> None:
    register_mapping(db_url, customer_mapping(emulator, "Members"))
    _sync(db_url)  # creates the mapped columns of `user`
    _insert_users(
        db_url,
        [
            {"email": "yen@example.com", "full_name": "Yen", "balance": Decimal("80"), "currency": "jpy"},
            {
                "email": "usd@example.com",
                "full_name": "Dollar",
                "balance": Decimal("19.99"),
                "currency": "usd",
            },
        ],
    )
    emulator.reset_request_log()
    created = _sync(db_url)
    assert created.records_pushed == 2
    creates = [r for r in emulator.requests if (r.method, r.path) == ("POST", "/v1/customers")]
    assert len(creates) == 2
    by_email = {}
    for customer_id in emulator.object_ids("customers"):
        customer = emulator.get_object("customers", customer_id)
        assert customer is not None
        by_email[customer["email"]] = customer
    assert by_email["yen@example.com"]["balance"] == 80
    assert by_email["usd@example.com"]["balance"] == 1999
    assert by_email["usd@example.com"]["metadata"] == {"currency": "usd"}
    writes = posts(emulator)
    again = _sync(db_url)
    assert (again.records_pushed, again.local_updates, posts(emulator) - writes) == (0, 0, 0)
    rows = user_rows(db_url, SOURCE)  # the rows now carry their Stripe ids
    assert rows[by_email["yen@example.com"]["id"]]["balance"] == Decimal("80")
    assert rows[by_email["usd@example.com"]["id"]]["balance"] == Decimal("19.99")


def test_an_amount_finer_than_the_currency_is_refused_not_rounded(
    db_url: str, fernet_key: str, emulator: StripeEmulator
) -> None:
    register_mapping(db_url, customer_mapping(emulator, "Members"))
    _sync(db_url)
    _insert_users(
        db_url,
        [{"email": "x@example.com", "full_name": "X", "balance": Decimal("19.999"), "currency": "usd"}],
    )
    with pytest.raises(
        SyncFailed, match=r"field_mappings\.balance \(user\.balance\): '19\.999' USD has more than 2"
    ):
        _sync(db_url)
    assert emulator.count("customers") == 0


def test_manual_conflicts_wait_for_a_person(
    db_url: str,
    fernet_key: str,
    emulator: StripeEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (a,) = _three_way(db_url, emulator, 1, conflict_resolution="manual")
    change_user(db_url, SOURCE, a, T0, full_name="Ours", phone_number="+66811111111")
    emulator.update_customer(a, name="Theirs", email="theirs@example.com")
    waiting = _sync(db_url)
    assert waiting.conflicts_open == 1 and waiting.records_pushed == 1  # phone and email: no conflict
    customer = emulator.get_object("customers", a)
    assert customer is not None and (customer["name"], customer["phone"]) == ("Theirs", "+66811111111")
    row = user_rows(db_url, SOURCE)[a]
    assert (row["full_name"], row["email"]) == ("Ours", "theirs@example.com")
    assert _sync(db_url).conflicts_open == 1  # still waiting, and still one row
    monkeypatch.setenv("ESM_DATABASE_URL", db_url)
    monkeypatch.setenv("ESM_USER", "ops@club.example")
    assert main(["conflicts", "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["record"], listed["field"], listed["internal"], listed["external"]) == (
        a,
        "full_name",
        "Ours",
        "Theirs",
    )
    assert main(["conflicts", "list", "Members"]) == 0
    table = capsys.readouterr().out
    assert listed["id"] in table and "full_name" in table and "Theirs" in table
    assert listed["mapping"] in table and listed["mapping"].startswith("Members")  # which mapping
    assert main(["conflicts", "resolve", listed["id"], "--take", "internal"]) == 0
    assert "takes the internal value" in capsys.readouterr().out
    applied = _sync(db_url)
    assert applied.records_pushed == 1 and applied.conflicts_open == 0
    customer = emulator.get_object("customers", a)
    assert customer is not None and customer["name"] == "Ours"
    assert main(["conflicts", "resolve", listed["id"], "--take", "external"]) == 2
    assert "already decided" in capsys.readouterr().err
    with session_factory(db_url)() as session:
        (decided,) = list_conflicts(session, "Members", include_decided=True)
        assert (decided.resolution, decided.decided_by, decided.applied_at is not None) == (
            "internal",
            "ops@club.example",
            True,
        )
        actions = [e.action for e in session.scalars(sa.select(AuditEntry))]
    assert "conflict.resolved" in actions
    writes = posts(emulator)
    assert _sync(db_url).records_pushed == 0 and posts(emulator) == writes


def test_latest_wins_takes_the_newer_side_and_records_the_decision(
    db_url: str, fernet_key: str, emulator: StripeEmulator
) -> None:
    (a,) = _three_way(db_url, emulator, 1, conflict_resolution="latest_wins")
    later = int(T0.timestamp()) + 60
    change_user(db_url, SOURCE, a, T0, full_name="Older Internal")
    emulator.update_customer(a, name="Newer External", metadata={"changed_at": str(later)})
    report = _sync(db_url)
    assert report.conflicts_decided == 1 and report.records_pushed == 0
    assert user_rows(db_url, SOURCE)[a]["full_name"] == "Newer External"
    with session_factory(db_url)() as session:
        (decision,) = list_conflicts(session, "Members", include_decided=True)
    assert (decision.status, decision.resolution, decision.decided_by) == (
        "decided",
        "external",
        "policy:latest_wins: external is newer",
    )
    assert (decision.internal_value, decision.external_value) == ("Older Internal", "Newer External")


def test_outbound_block_is_required_and_checked_against_the_provider(
    db_url: str, fernet_key: str, emulator: StripeEmulator
) -> None:
    mapping = customer_mapping(emulator, "Members")
    del mapping["mapping_rules"]["sync_config"]["outbound"]
    register_mapping(db_url, mapping)
    with pytest.raises(
        SyncFailed, match=r"sync_config\.outbound: required when sync_direction is 'bidirectional'"
    ):
        _sync(db_url)
    mapping = customer_mapping(emulator, "Members 2")
    mapping["mapping_rules"]["sync_config"]["outbound"]["update"] = "patch_customer"
    register_mapping(db_url, mapping)
    with pytest.raises(
        SyncFailed, match=r"sync_config\.outbound\.update: stripe has no write 'patch_customer'"
    ):
        _sync(db_url, "Members 2")


def test_a_value_changed_back_is_written_again_not_replayed(
    db_url: str, fernet_key: str, emulator: StripeEmulator
) -> None:
    """A -> B -> A: the third write has the first one's content, but not its idempotency key."""
    (a,) = _three_way(db_url, emulator, 1)
    for n, name in enumerate(["B", "A", "B"]):
        change_user(db_url, SOURCE, a, T0 + dt.timedelta(seconds=n), full_name=name)
        assert _sync(db_url).records_pushed == 1
        customer = emulator.get_object("customers", a)
        assert customer is not None and customer["name"] == name


def test_an_outbound_mapping_pushes_without_reading_and_keeps_the_key_secret(
    db_url: str, fernet_key: str, emulator: StripeEmulator
) -> None:
    register_mapping(db_url, customer_mapping(emulator, "Members", sync_direction="outbound"))
    _sync(db_url)
    _insert_users(
        db_url, [{"email": "out@example.com", "full_name": "Out", "balance": Decimal("5"), "currency": "eur"}]
    )
    emulator.reset_request_log()
    report = _sync(db_url)
    assert report.records_pushed == 1 and report.records_read == 0
    assert [r.method for r in emulator.requests] == ["POST"]  # no listing: the shadow stands for Stripe
    (customer_id,) = emulator.object_ids("customers")
    customer = emulator.get_object("customers", customer_id)
    assert customer is not None and customer["balance"] == 500
    assert _sync(db_url).records_pushed == 0
    emulator.faults.expire_credentials_after(0)
    change_user(db_url, SOURCE, customer_id, T0, full_name="Out Again")
    with pytest.raises(SyncFailed) as caught:
        _sync(db_url)
    assert caught.value.report.push_failures == 1 and caught.value.report.error_class == "auth"
    assert KEY not in str(caught.value) and KEY not in repr(caught.value.report)
    emulator.faults.clear()
    assert _sync(db_url).records_pushed == 1  # the failed push was not taken as agreed
    customer = emulator.get_object("customers", customer_id)
    assert customer is not None and customer["name"] == "Out Again"


def test_a_record_the_rules_reject_is_quarantined_not_taken_for_deleted(
    db_url: str, fernet_key: str, emulator: StripeEmulator
) -> None:
    ids = _three_way(db_url, emulator, 2)
    emulator.update_customer(ids[0], email="not an email")
    report = _sync(db_url)
    assert (report.records_rejected, report.records_deleted, report.records_pushed) == (1, 0, 0)
    rows = user_rows(db_url, SOURCE)
    assert not rows[ids[0]]["is_deleted"] and rows[ids[0]]["email"] == "m0@example.com"
