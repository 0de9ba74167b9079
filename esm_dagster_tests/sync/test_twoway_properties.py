"""Random interleavings of changes on both sides of a two-way mapping, under each policy.

A small model says what each field must end as: a field only one side changed since the last
sync takes that side's value; a field both changed takes the policy's winner (`latest_wins`: the
side whose record was modified later). After every sync both sides must agree with the model,
and a second sync must write nothing, to either side.
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esm_dagster.catalog.conflicts import list_conflicts, resolve_conflict
from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.mappings import MappingInput, slugify, upsert_mapping
from esm_dagster.sandbox.stripe import StripeEmulator
from esm_dagster.security.vault import Vault
from esm_dagster.sync.engine import run_mapping
from esm_dagster_tests.sync.twoway_helpers import KEY, change_user, customer_mapping, posts, user_rows

RECORDS = 2
FIELDS = ("full_name", "balance")
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
_names = itertools.count()

names = st.sampled_from(["Ann", "Bea", "Cat", "Dan"])
balances = st.sampled_from([Decimal("0"), Decimal("19.99"), Decimal("5"), Decimal("1234.5")])
change = st.tuples(
    st.sampled_from(["internal", "external"]), st.integers(0, RECORDS - 1), st.sampled_from(FIELDS)
)
# Rounds of a few changes each, then a sync: two records and two fields make overlaps common.
edit = st.tuples(change, names, balances).map(lambda t: ("change", *t[0], t[1], t[2]))
rounds = st.lists(st.lists(edit, min_size=1, max_size=4), min_size=1, max_size=3)


def _external_fields(name: str, balance: Decimal) -> dict[str, Any]:
    return {"name": name, "balance": int(balance * 100)}


class Model:
    """What each side holds and what they last agreed, per record and field."""

    def __init__(self, start: list[dict[str, Any]]) -> None:
        self.base = [dict(r) for r in start]
        self.internal = [dict(r) for r in start]
        self.external = [dict(r) for r in start]
        self.internal_at = [T0] * RECORDS
        self.external_at = [T0] * RECORDS

    def sync(self, policy: str) -> list[tuple[int, str]]:
        """Settle every record; return the (record, field) conflicts `manual` leaves open."""
        waiting = []
        for n in range(RECORDS):
            for f in FIELDS:
                b, i, e = self.base[n][f], self.internal[n][f], self.external[n][f]
                if i == e:
                    value = i
                elif i == b:
                    value = e
                elif e == b:
                    value = i
                elif policy == "external_wins":
                    value = e
                elif policy == "internal_wins":
                    value = i
                elif policy == "latest_wins":
                    value = i if self.internal_at[n] > self.external_at[n] else e
                else:
                    waiting.append((n, f))
                    continue
                self.base[n][f] = self.internal[n][f] = self.external[n][f] = value
        return waiting


def _register(url: str, mapping: dict[str, Any]) -> None:
    with session_factory(url).begin() as session:
        upsert_mapping(session, Vault.from_env(), MappingInput.model_validate(mapping))


def _sides(url: str, emulator: StripeEmulator, source: str, ids: list[str]) -> tuple[list[Any], list[Any]]:
    rows = user_rows(url, source)
    internal = [{"full_name": rows[i]["full_name"], "balance": rows[i]["balance"]} for i in ids]
    external = []
    for i in ids:
        customer = emulator.get_object("customers", i)
        assert customer is not None
        external.append({"full_name": customer["name"], "balance": Decimal(customer["balance"]).scaleb(-2)})
    return internal, external


def _check_round(
    url: str, emulator: StripeEmulator, name: str, source: str, ids: list[str], model: Model
) -> None:
    internal, external = _sides(url, emulator, source, ids)
    assert internal == model.internal and external == model.external
    writes = posts(emulator)
    again = run_mapping(url, name)
    assert (again.records_pushed, again.local_updates, posts(emulator) - writes) == (0, 0, 0)
    assert again.conflicts_decided == 0


@pytest.mark.parametrize("policy", ["external_wins", "internal_wins", "latest_wins", "manual"])
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=rounds)
def test_both_sides_agree_and_a_second_sync_writes_nothing(
    db_url: str, fernet_key: str, policy: str, plan: list[list[tuple[Any, ...]]]
) -> None:
    name = f"Members {next(_names)}"
    source = f"{slugify(name)}/customers"
    start = [{"full_name": f"Member {n}", "balance": Decimal("10")} for n in range(RECORDS)]
    with StripeEmulator(api_keys=[KEY], customers=0, charges=0, seed=1) as emulator:
        ids = [
            emulator.add_customer(
                **_external_fields(r["full_name"], r["balance"]),
                metadata={"currency": "usd", "changed_at": str(int(T0.timestamp()))},
            )["id"]
            for r in start
        ]
        _register(db_url, customer_mapping(emulator, name, policy))
        run_mapping(db_url, name)
        model = Model(start)
        clock = T0
        steps = [item for edits in plan for item in [*edits, ("sync",)]]
        for item in steps:
            if item[0] == "sync":
                run_mapping(db_url, name)
                waiting = model.sync(policy)
                if waiting:  # a person settles them; the next round applies the choice
                    with session_factory(db_url).begin() as session:
                        open_ = list_conflicts(session, name)
                        assert {(ids.index(c.external_id), c.field) for c in open_} == set(waiting)
                        for c in open_:
                            n = ids.index(c.external_id)
                            take = "internal" if (n + len(c.field)) % 2 else "external"
                            resolve_conflict(session, str(c.id), take, "ops@club.example")
                            side = model.internal if take == "internal" else model.external
                            value = side[n][c.field]
                            model.base[n][c.field] = model.internal[n][c.field] = value
                            model.external[n][c.field] = value
                    run_mapping(db_url, name)
                _check_round(db_url, emulator, name, source, ids, model)
                continue
            _, side, n, field, new_name, new_balance = item
            clock += dt.timedelta(seconds=1)
            value = new_name if field == "full_name" else new_balance
            if side == "internal":
                change_user(db_url, source, ids[n], clock, **{field: value})
                model.internal[n][field] = value
                model.internal_at[n] = clock
            else:
                stripe_field = {"name": value} if field == "full_name" else {"balance": int(value * 100)}
                emulator.update_customer(
                    ids[n], **stripe_field, metadata={"changed_at": str(int(clock.timestamp()))}
                )
                model.external[n][field] = value
                model.external_at[n] = clock
