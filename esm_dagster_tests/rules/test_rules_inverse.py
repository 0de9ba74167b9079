"""`rules.inverse`: internal values back into the provider's shape, exactly what the plan reads."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from esm_dagster.rules.errors import RulesError
from esm_dagster.rules.inverse import InverseError, to_provider
from esm_dagster.rules.plan import compile_rules
from esm_dagster.rules.schema import parse_rules
from esm_dagster.sync.changes import canonical, canonical_fields

RULES = {
    "field_mappings": {
        "id": "payment.external_id",
        "amount": {
            "target": "payment.amount",
            "type": "money",
            "currency_from": "currency",
            "minor_units": True,
        },
        "currency": "payment.currency",
        "fee": {"target": "payment.fee", "type": "money", "currency": "KWD", "minor_units": "iso4217"},
        "created": {"target": "payment.created_at", "type": "timestamp", "unit": "s"},
        "paid_on": {"target": "payment.paid_on", "type": "date", "format": "DD/MM/YYYY"},
        "billing.phone": {"target": "payment.phone", "type": "phone_number", "region": "TH"},
        "count": {"target": "payment.count", "type": "integer"},
        "live": {"target": "payment.live", "type": "boolean"},
    }
}


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [(Decimal("80"), "jpy", 80), (Decimal("19.99"), "usd", 1999), (Decimal("1.234"), "kwd", 1234)],
)
def test_money_goes_back_in_minor_units_and_round_trips(amount: Decimal, currency: str, minor: int) -> None:
    rules = parse_rules(RULES)
    row = canonical_fields({"amount": amount, "currency": currency})
    record = to_provider(rules, row, ["amount"])
    assert record == {"amount": minor, "currency": currency}
    back = compile_rules(rules).apply([{"id": "p1", **record}]).tables["payment"]
    assert back["amount"].iloc[0] == amount


def test_every_type_round_trips_through_the_plan() -> None:
    rules = parse_rules(RULES)
    values = {
        "amount": Decimal("19.99"),
        "currency": "usd",
        "fee": Decimal("0.125"),
        "created_at": dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC),
        "paid_on": dt.date(2026, 12, 3),
        "phone": "+66812345678",
        "count": 7,
        "live": True,
    }
    record = to_provider(rules, canonical_fields(values))
    assert record["paid_on"] == "03/12/2026" and record["created"] == 1796117400
    assert record["billing"] == {"phone": "+66812345678"} and record["fee"] == 125
    assert "id" not in record  # the provider owns the key
    frame = compile_rules(rules).apply([{"id": "p1", **record}]).tables["payment"]
    (row,) = frame.to_dict("records")
    assert {k: canonical(row[k]) for k in values} == canonical_fields(values)


def test_an_amount_finer_than_its_currency_is_refused() -> None:
    rules = parse_rules(RULES)
    with pytest.raises(
        InverseError, match=r"field_mappings\.amount \(payment\.amount\): '1\.5' JPY has more than 0"
    ):
        to_provider(rules, canonical_fields({"amount": Decimal("1.5"), "currency": "JPY"}), ["amount"])
    with pytest.raises(InverseError, match="no ISO 4217 currency"):
        to_provider(rules, canonical_fields({"amount": Decimal("1"), "currency": "zzz"}), ["amount"])


def test_the_outbound_block_is_validated_and_names_the_field() -> None:
    base = {"field_mappings": {"email": "user.email"}}
    with pytest.raises(
        RulesError, match=r"sync_config\.outbound\.create: 'Create Customer' is not a write name"
    ):
        parse_rules({**base, "sync_config": {"outbound": {"create": "Create Customer"}}})
    with pytest.raises(RulesError, match=r"sync_config\.outbound: .*name the write for creates"):
        parse_rules({**base, "sync_config": {"outbound": {}}})
    with pytest.raises(RulesError, match=r"sync_config\.outbound\.upsert: unknown option"):
        parse_rules({**base, "sync_config": {"outbound": {"create": "a", "upsert": "b"}}})
    with pytest.raises(RulesError, match=r"sync_config\.max_delete_share"):
        parse_rules({**base, "sync_config": {"max_delete_share": 2}})
    rules = parse_rules(
        {**base, "sync_config": {"outbound": {"update": "upsert_contacts", "key_field": "email"}}}
    )
    assert rules.sync.outbound is not None and rules.sync.outbound.key_field == "email"


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("phone", "12", "field_mappings[\"billing.phone\"] (payment.phone): '12' is not a valid phone"),
        (
            "email",
            "not-an-email",
            "field_mappings.email (payment.email): 'not-an-email' is not a valid email",
        ),
    ],
)
def test_a_value_the_rules_would_reject_is_never_pushed(column: str, value: str, message: str) -> None:
    """A row typed locally with a bad email or phone would be written at the provider and come
    back as a quarantined record (seen in a new-user pass of two-way sync): refused, named."""
    rules = parse_rules(
        {"field_mappings": {**RULES["field_mappings"], "email": {"target": "payment.email", "type": "email"}}}
    )
    with pytest.raises(InverseError) as err:
        to_provider(rules, {column: value})
    assert message in str(err.value)
    assert to_provider(rules, {"phone": "081 234 5678", "email": "A@Padel.CO.TH"}) == {
        "billing": {"phone": "+66812345678"},
        "email": "A@padel.co.th",
    }
