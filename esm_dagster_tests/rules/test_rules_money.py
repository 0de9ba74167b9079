from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from esm_dagster.rules import compile_rules
from esm_dagster.rules import currencies as cur
from esm_dagster_tests.rules.rules_fixtures import rules_with

STRIPE_AMOUNT = {
    "amount": {"target": "t.amount", "type": "money", "currency_from": "currency", "minor_units": True}
}


def _amounts(fields: dict[str, Any], records: list[dict[str, Any]], **top: Any) -> list[Any]:
    result = compile_rules(rules_with(fields, **top)).apply(records)
    assert not result.rejected, [r.errors for r in result.rejected]
    return result.tables["t"]["amount"].tolist()


# -- the ISO 4217 table ---------------------------------------------------------------------------


def test_exponent_table() -> None:
    assert cur.exponent("JPY") == 0
    assert cur.exponent("USD") == 2
    assert cur.exponent("THB") == 2
    assert cur.exponent("KWD") == 3
    assert cur.exponent("CLF") == 4
    assert cur.exponent("XAU") is None


def test_zero_and_three_decimal_sets() -> None:
    zero = ["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG"]
    zero += ["RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"]
    three = ["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"]
    assert set(zero) <= cur.ZERO_DECIMAL
    assert set(three) == cur.THREE_DECIMAL
    assert all(cur.exponent(c) == 0 for c in zero)


def test_codes_are_case_insensitive() -> None:
    assert cur.normalize_code("jpy") == "JPY"
    assert cur.normalize_code(" usd ") == "USD"
    assert cur.normalize_code("xyz") is None
    assert cur.normalize_code(840) is None


def test_stripe_convention_differs_where_stripe_does() -> None:
    assert cur.exponent("MGA") == 2 and cur.exponent("MGA", "stripe") == 0
    assert cur.exponent("ISK") == 0 and cur.exponent("ISK", "stripe") == 2
    assert cur.exponent("USD", "stripe") == 2


# -- minor units through the plan -----------------------------------------------------------------


def test_stripe_minor_units_across_exponents() -> None:
    records = [
        {"id": "ch_1", "amount": 5000, "currency": "jpy"},
        {"id": "ch_2", "amount": 1999, "currency": "usd"},
        {"id": "ch_3", "amount": 1234, "currency": "kwd"},
        {"id": "ch_4", "amount": 1999, "currency": "THB"},
        {"id": "ch_5", "amount": 123456, "currency": "clf"},
        {"id": "ch_6", "amount": 0, "currency": "usd"},
        {"id": "ch_7", "amount": -250, "currency": "usd"},
    ]
    amounts = _amounts(STRIPE_AMOUNT, records)
    assert amounts == [
        Decimal("5000"),
        Decimal("19.99"),
        Decimal("1.234"),
        Decimal("19.99"),
        Decimal("12.3456"),
        Decimal("0.00"),
        Decimal("-2.50"),
    ]
    assert all(type(a) is Decimal for a in amounts)
    assert str(amounts[0]) == "5000"  # 5000 JPY stays 5000, not 50.00


def test_stripe_convention_for_isk_and_mga() -> None:
    fields = {"amount": {**STRIPE_AMOUNT["amount"], "minor_units": "stripe"}}
    records = [
        {"id": "1", "amount": 50000, "currency": "isk"},
        {"id": "2", "amount": 5000, "currency": "mga"},
    ]
    assert _amounts(fields, records) == [Decimal("500.00"), Decimal("5000")]


def test_decimal_amounts_are_kept_exactly() -> None:
    fields = {"amount": {"target": "t.amount", "type": "money", "currency_from": "price_unit"}}
    records: list[dict[str, Any]] = [
        {"id": "SM1", "amount": "-0.00750", "price_unit": "USD"},
        {"id": "SM2", "amount": "10.00", "price_unit": "usd"},
        {"id": "SM3", "amount": 19.99, "price_unit": "USD"},
        {"id": "SM4", "amount": 0.1, "price_unit": "USD"},
    ]
    amounts = _amounts(fields, records)
    assert amounts == [Decimal("-0.00750"), Decimal("10.00"), Decimal("19.99"), Decimal("0.1")]
    assert str(amounts[0]) == "-0.00750"


def test_default_currency_from_transformations() -> None:
    fields = {"amount": {"target": "t.amount", "type": "money", "minor_units": True}}
    records = [{"id": "1", "amount": 1999}]
    assert _amounts(fields, records, transformations={"currency": "JPY"}) == [Decimal("1999")]


def test_fixed_currency_is_the_fallback_when_the_record_has_none() -> None:
    fields = {"amount": {**STRIPE_AMOUNT["amount"], "currency": "USD"}}
    records = [{"id": "1", "amount": 1999, "currency": "jpy"}, {"id": "2", "amount": 1999}]
    assert _amounts(fields, records) == [Decimal("1999"), Decimal("19.99")]


def test_unknown_currency_code_rejects_the_record() -> None:
    plan = compile_rules(rules_with(STRIPE_AMOUNT))
    result = plan.apply(
        [
            {"id": "1", "amount": 1999, "currency": "usd"},
            {"id": "2", "amount": 1999, "currency": "usdt"},
            {"id": "3", "amount": 1999},
        ]
    )
    assert result.accepted_indices == [0]
    (bad_code,) = result.rejected[0].errors
    assert (bad_code.field, bad_code.rule, bad_code.value) == ("currency", "currency", "usdt")
    assert "'usdt' is not an ISO 4217 currency code" in bad_code.message
    (no_code,) = result.rejected[1].errors
    assert (no_code.field, no_code.rule) == ("currency", "currency")


@pytest.mark.parametrize("amount", [1999.5, "19.99", "abc", True, [1], float("inf")])
def test_bad_minor_unit_amounts(amount: Any) -> None:
    plan = compile_rules(rules_with(STRIPE_AMOUNT))
    result = plan.apply([{"id": "1", "amount": amount, "currency": "usd"}])
    assert result.accepted_count == 0
    (error,) = result.rejected[0].errors
    assert error.field == "amount" and error.rule == "type"


def test_decimal_type_never_goes_through_float() -> None:
    plan = compile_rules(rules_with({"price": {"target": "t.price", "type": "decimal"}}))
    result = plan.apply(
        [
            {"id": "1", "price": "0.1"},
            {"id": "2", "price": 0.1},
            {"id": "3", "price": 12345678901234567890},
            {"id": "4", "price": "1e3"},
            {"id": "5", "price": None},
            {"id": "6", "price": "NaN"},
        ]
    )
    assert result.tables["t"]["price"].tolist() == [
        Decimal("0.1"),
        Decimal("0.1"),
        Decimal("12345678901234567890"),
        Decimal("1E+3"),
        None,
    ]
    (error,) = result.rejected[0].errors
    assert (error.field, error.rule, error.value) == ("price", "type", "NaN")
