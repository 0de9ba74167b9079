from __future__ import annotations

from decimal import Decimal
from typing import Any

import pandas as pd
import pytest

from esm_dagster.rules import (
    EXTERNAL_ID_COLUMN,
    FieldError,
    Rejection,
    RulesError,
    RulesPlan,
    compile_rules,
    parse_rules,
    redact_record,
)
from esm_dagster_tests.rules.rules_fixtures import member, rules_with, seed


def test_seed_rules_end_to_end() -> None:
    plan = compile_rules(seed())
    assert isinstance(plan, RulesPlan)
    result = plan.apply([member(1), member(2)], start_index=10)
    frame = result.tables["user"]
    assert list(frame.columns) == [
        "external_id",
        "email",
        "full_name",
        "phone_number",
        "city",
        "external_created_at",
        EXTERNAL_ID_COLUMN,
    ]
    assert frame.index.tolist() == [10, 11]
    row = frame.loc[10]
    assert row["external_id"] == "00001" and row[EXTERNAL_ID_COLUMN] == "00001"
    assert row["email"] == "member1@example.org"
    assert row["phone_number"] == "+66812345678"
    assert row["city"] == "Bangkok"
    assert row["external_created_at"].isoformat() == "2023-11-15T05:13:21+07:00"
    assert result.accepted_indices == [10, 11]
    assert (result.total, result.accepted_count, result.rejected_count) == (2, 2, 0)
    assert result.pass_rate == 1.0


def test_table_columns_for_the_loader() -> None:
    doc = rules_with(
        {
            "amount": {"target": "payment.amount", "type": "money", "currency": "THB"},
            "customer.email": "user.email",
            "paid": {"target": "payment.paid", "type": "boolean"},
        },
        validation_rules={"data_types": {"customer.email": "email"}},
    )
    assert compile_rules(doc).table_columns() == {
        "t": {"external_id": "string"},
        "payment": {"amount": "money", "paid": "boolean"},
        "user": {"email": "email"},
    }


def test_required_missing_rejects_only_that_record() -> None:
    records = [member(1), member(2, name=None), member(3, email=""), member(4)]
    del records[1]["name"]
    result = compile_rules(seed()).apply(records, start_index=100)
    assert result.accepted_indices == [100, 103]
    assert result.tables["user"].index.tolist() == [100, 103]
    assert [r.index for r in result.rejected] == [101, 102]
    assert result.rejected[0].errors == [FieldError("name", "required", "'name' is required", None)]
    assert result.rejected[1].errors == [FieldError("email", "required", "'email' is required", "")]
    assert result.rejected[0].record is records[1]  # the raw dict, for quarantine
    assert result.rule_counts == {"required": 2}
    assert result.pass_rate == 0.5


def test_every_error_of_a_record_is_listed() -> None:
    bad = member(1, email="nope", name="", phone="123", created="soon")
    result = compile_rules(seed()).apply([bad])
    (rejection,) = result.rejected
    assert isinstance(rejection, Rejection)
    assert [(e.field, e.rule) for e in rejection.errors] == [
        ("email", "email"),
        ("name", "required"),
        ("phone", "phone_number"),
        ("created", "timestamp"),
    ]
    assert result.tables["user"].empty
    assert list(result.tables["user"].columns)[-1] == EXTERNAL_ID_COLUMN


def test_record_without_key_is_rejected() -> None:
    record = member(1)
    del record["id"]
    result = compile_rules(seed()).apply([record, member(2)])
    assert result.accepted_indices == [1]
    (error,) = result.rejected[0].errors
    assert (error.field, error.rule) == ("id", "required")


def test_custom_key_path() -> None:
    doc = rules_with({"name": "t.name"}, sync_config={"key": "meta.uid"})
    result = compile_rules(doc).apply([{"meta": {"uid": 42}, "name": "x"}, {"name": "y"}])
    assert result.tables["t"][EXTERNAL_ID_COLUMN].tolist() == ["42"]
    assert result.rejected[0].errors[0].field == "meta.uid"


def test_strings_keep_their_exact_form() -> None:
    doc = rules_with({"code": "t.code", "tags": "t.tags", "flag": "t.flag", "n": "t.n"})
    records = [
        {"id": "007", "code": "0042", "tags": ["a", "ü"], "flag": True, "n": 5},
        {"id": 8, "code": 0, "tags": {"k": 1, "v": [1, 2]}, "flag": False, "n": 2.5},
    ]
    frame = compile_rules(doc).apply(records).tables["t"]
    assert frame["external_id"].tolist() == ["007", "8"]
    assert frame["code"].tolist() == ["0042", "0"]
    assert frame["tags"].tolist() == ['["a","ü"]', '{"k":1,"v":[1,2]}']
    assert frame["flag"].tolist() == ["true", "false"]
    assert frame["n"].tolist() == ["5", "2.5"]
    assert all(type(v) is str for v in frame["external_id"])
    assert frame["code"].dtype == object


def test_nullable_integer_column_stays_int64() -> None:
    doc = rules_with({"qty": {"target": "t.qty", "type": "integer"}})
    records: list[dict[str, Any]] = [
        {"id": "1", "qty": 3},
        {"id": "2", "qty": None},
        {"id": "3", "qty": "42"},
        {"id": "4", "qty": 7.0},
        {"id": "5"},
        {"id": "6", "qty": 2**62},
    ]
    result = compile_rules(doc).apply(records)
    column = result.tables["t"]["qty"]
    assert str(column.dtype) == "Int64"
    assert column.iloc[0] == 3 and column.iloc[2] == 42 and column.iloc[3] == 7
    assert column.iloc[1] is pd.NA and column.iloc[4] is pd.NA
    assert column.iloc[5] == 2**62


@pytest.mark.parametrize("value", ["12.5", 12.5, "1e3", "twelve", True, 2**63, [1]])
def test_integer_rejections(value: Any) -> None:
    doc = rules_with({"qty": {"target": "t.qty", "type": "integer"}})
    result = compile_rules(doc).apply([{"id": "1", "qty": value}])
    (error,) = result.rejected[0].errors
    assert (error.field, error.rule, error.value) == ("qty", "type", value)


def test_booleans() -> None:
    doc = rules_with({"ok": {"target": "t.ok", "type": "boolean"}})
    values = [True, False, 1, 0, "true", "FALSE", "Yes", "no", "1", "0", None]
    result = compile_rules(doc).apply([{"id": str(i), "ok": v} for i, v in enumerate(values)])
    column = result.tables["t"]["ok"]
    assert str(column.dtype) == "boolean"
    assert column.tolist()[:-1] == [True, False, True, False, True, False, True, False, True, False]
    assert column.iloc[-1] is pd.NA
    bad = compile_rules(doc).apply([{"id": "x", "ok": v} for v in ("maybe", 2, "on")])
    assert [r.errors[0].rule for r in bad.rejected] == ["type"] * 3


def test_defaults_fill_missing_values() -> None:
    doc = rules_with(
        {
            "status": {"target": "t.status", "default": "active", "required": True},
            "qty": {"target": "t.qty", "type": "integer", "default": 1},
        }
    )
    result = compile_rules(doc).apply([{"id": "1"}, {"id": "2", "status": "", "qty": 5}])
    assert result.tables["t"]["status"].tolist() == ["active", "active"]
    assert result.tables["t"]["qty"].tolist() == [1, 5]


def test_a_default_that_does_not_convert_is_a_rules_error() -> None:
    doc = rules_with({"qty": {"target": "t.qty", "type": "integer", "default": "many"}})
    with pytest.raises(RulesError, match=r"field_mappings\.qty\.default: 'many' is not an integer"):
        compile_rules(doc)
    with pytest.raises(RulesError, match=r"field_mappings\.qty\.default: 'many' is not an integer"):
        parse_rules(doc)  # caught when the catalog row is written, not only at run time


def test_nested_and_list_paths() -> None:
    doc = rules_with(
        {
            "billing_details.address.city": "t.city",
            "items.0.price": {"target": "t.first_price", "type": "decimal"},
            "items.1.price": {"target": "t.second_price", "type": "decimal"},
        }
    )
    records: list[dict[str, Any]] = [
        {"id": "1", "billing_details": {"address": {"city": "Phuket"}}, "items": [{"price": "9.90"}]},
        {"id": "2", "billing_details": None, "items": "not-a-list"},
        {"id": "3", "billing_details": {"address": "flat"}},
    ]
    frame = compile_rules(doc).apply(records).tables["t"]
    assert frame["city"].tolist() == ["Phuket", None, None]
    assert frame["first_price"].tolist() == [Decimal("9.90"), None, None]
    assert frame["second_price"].tolist() == [None, None, None]


def test_several_target_tables_share_the_record_index() -> None:
    doc = rules_with(
        {
            "customer.email": {"target": "customer.email", "type": "email"},
            "amount": {"target": "payment.amount", "type": "money", "currency": "USD", "minor_units": True},
        }
    )
    records = [
        {"id": "ch_1", "customer": {"email": "a@example.org"}, "amount": 100},
        {"id": "ch_2", "customer": {"email": "bad"}, "amount": 200},
        {"id": "ch_3", "customer": {"email": "c@example.org"}, "amount": 300},
    ]
    result = compile_rules(doc).apply(records, start_index=5)
    assert set(result.tables) == {"t", "customer", "payment"}
    for frame in result.tables.values():
        assert frame.index.tolist() == [5, 7]
        assert frame[EXTERNAL_ID_COLUMN].tolist() == ["ch_1", "ch_3"]
    assert result.tables["payment"]["amount"].tolist() == [Decimal("1.00"), Decimal("3.00")]


def test_empty_batch() -> None:
    result = compile_rules(seed()).apply([])
    assert result.total == 0 and result.rejected == [] and result.accepted_indices == []
    assert result.tables["user"].empty
    assert result.pass_rate == 1.0


def test_apply_accepts_any_iterable() -> None:
    result = compile_rules(seed()).apply(member(i) for i in range(3))
    assert result.accepted_count == 3


# -- secrets --------------------------------------------------------------------------------------


def test_secret_looking_fields_are_redacted_in_errors() -> None:
    doc = rules_with(
        {
            "card.number": {"target": "t.card_number", "type": "integer"},
            "api_key": {"target": "t.key_hint", "type": "integer"},
            "auth.password": {"target": "t.pw", "required": True},
        }
    )
    record = {"id": "1", "card": {"number": "4242-4242"}, "api_key": "sk_live_abc123", "auth": {}}
    result = compile_rules(doc).apply([record])
    errors = result.rejected[0].errors
    assert [(e.field, e.rule, e.value) for e in errors] == [
        ("card.number", "type", "***"),
        ("api_key", "type", "***"),
        ("auth.password", "required", "***"),
    ]
    text = " ".join(e.message for e in errors)
    assert "4242" not in text and "sk_live" not in text
    assert result.rejected[0].record is record  # the raw record stays raw; quarantine redacts


def test_redact_record_masks_recursively() -> None:
    record: dict[str, Any] = {
        "id": "ch_1",
        "card": {"number": "4242424242424242", "cvc": "123", "exp_month": 12},
        "metadata": [{"api_key": "k"}, {"note": "fine"}],
        "Authorization": "Bearer x",
        "client_secret": "pi_secret",
        "refresh-token": "r",
        "email": "a@example.org",
    }
    redacted = redact_record(record)
    assert redacted == {
        "id": "ch_1",
        "card": {"number": "***", "cvc": "***", "exp_month": 12},
        "metadata": [{"api_key": "***"}, {"note": "fine"}],
        "Authorization": "***",
        "client_secret": "***",
        "refresh-token": "***",
        "email": "a@example.org",
    }
    assert record["card"]["number"] == "4242424242424242"  # input untouched
