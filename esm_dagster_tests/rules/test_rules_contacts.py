"""Phones to E.164 and email validation, through the compiled plan."""

from __future__ import annotations

from typing import Any

import pytest

from esm_dagster.rules import compile_rules
from esm_dagster_tests.rules.rules_fixtures import member, rules_with, seed


def _column(doc: dict[str, Any], records: list[dict[str, Any]], table: str, column: str) -> list[Any]:
    result = compile_rules(doc).apply(records)
    assert not result.rejected, [r.errors for r in result.rejected]
    return result.tables[table][column].tolist()


# -- phones ---------------------------------------------------------------------------------------


def test_thai_numbers_both_ways_become_e164() -> None:
    records = [
        member(1, phone="+66 81 234 5678"),
        member(2, phone="081-234-5678"),
        member(3, phone="0812345678"),
    ]
    assert _column(seed(), records, "user", "phone_number") == ["+66812345678"] * 3


def test_default_region_from_transformations() -> None:
    doc = rules_with(
        {"phone": {"target": "t.phone", "type": "phone_number"}},
        transformations={"default_region": "US", "timezone": "America/New_York"},
    )
    records = [{"id": "1", "phone": "(201) 555-0123"}, {"id": "2", "phone": "+66 81 234 5678"}]
    assert _column(doc, records, "t", "phone") == ["+12015550123", "+66812345678"]


def test_region_option_and_validation_rules_region() -> None:
    doc = rules_with(
        {
            "home": {"target": "t.home", "type": "phone_number", "region": "gb"},
            "work": {"target": "t.work", "type": "phone_number"},
        },
        validation_rules={"default_region": "US"},
    )
    records = [{"id": "1", "home": "020 7946 0018", "work": "201-555-0123"}]
    result = compile_rules(doc).apply(records)
    row = result.tables["t"].iloc[0]
    assert (row["home"], row["work"]) == ("+442079460018", "+12015550123")


def test_phone_numbers_stay_strings_and_missing_is_null() -> None:
    records = [member(1, phone=None), member(2, phone=""), member(3, phone="+66812345678")]
    assert _column(seed(), records, "user", "phone_number") == [None, None, "+66812345678"]


@pytest.mark.parametrize("phone", ["123", "abc", "+66 12 345", "081-234-567"])
def test_invalid_phone_is_rejected(phone: str) -> None:
    result = compile_rules(seed()).apply([member(1, phone=phone), member(2)])
    assert result.accepted_indices == [1]
    (error,) = result.rejected[0].errors
    assert (error.field, error.rule, error.value) == ("phone", "phone_number", phone)
    assert repr(phone) in error.message


def test_us_number_without_us_region_is_rejected() -> None:
    result = compile_rules(seed()).apply([member(1, phone="(201) 555-0123")])
    assert result.rejected[0].errors[0].rule == "phone_number"


# -- emails ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("jsmith+test@example.org", "jsmith+test@example.org"),
        ("user@bücher.example", "user@bücher.example"),
        ("user@BÜCHER.example", "user@bücher.example"),
        ("用户@例子.广告", "用户@例子.广告"),
        ("José.Díaz@example.org", "José.Díaz@example.org"),
        ("John.Smith@EXAMPLE.ORG", "John.Smith@example.org"),
        ("  padded@example.org ", "padded@example.org"),
    ],
)
def test_valid_emails_are_kept_in_normalised_form(given: str, stored: str) -> None:
    assert _column(seed(), [member(1, email=given)], "user", "email") == [stored]


def test_not_an_email_is_rejected_with_field_rule_and_message() -> None:
    result = compile_rules(seed()).apply([member(1), member(2, email="not-an-email"), member(3)])
    assert result.accepted_indices == [0, 2]
    rejection = result.rejected[0]
    assert rejection.index == 1
    (error,) = rejection.errors
    assert error.field == "email"
    assert error.rule == "email"
    assert error.value == "not-an-email"
    assert error.message.startswith("'not-an-email' is not a valid email address")
    assert "@-sign" in error.message


@pytest.mark.parametrize("email", ["a@b@example.org", "user@localhost", "user@example", "user@test.test", 42])
def test_other_invalid_emails(email: Any) -> None:
    result = compile_rules(seed()).apply([member(1, email=email)])
    (error,) = result.rejected[0].errors
    assert error.field == "email" and error.rule in ("email", "type")
