"""Two-way sync of Stripe customers <-> `user` over loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest

from esm_dagster.sandbox.stripe import StripeEmulator
from esm_dagster.sync.engine import run_mapping
from esm_dagster_tests.providers.engine_helpers import register_mapping
from esm_dagster_tests.sync.twoway_helpers import KEY, change_user, customer_mapping, posts, user_rows

SOURCE = "members/customers"
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


@pytest.fixture
def emulator() -> Iterator[StripeEmulator]:
    with StripeEmulator(api_keys=[KEY], customers=0, charges=0, seed=3) as em:
        yield em


def test_round_trip_reaches_a_fixed_point(db_url: str, fernet_key: str, emulator: StripeEmulator) -> None:
    a = emulator.add_customer(email="ann@example.com", name="Ann", phone="+66812345678", balance=80, metadata={"currency": "jpy"})
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
    assert customer is not None and customer["phone"] == "+66899999999" and customer["email"] == "ann.new@example.com"
    assert user_rows(db_url, SOURCE)[a["id"]]["email"] == "ann.new@example.com"
    writes = posts(emulator)
    fourth = run_mapping(db_url, "Members")
    assert (fourth.records_pushed, fourth.local_updates, posts(emulator) - writes) == (0, 0, 0)
