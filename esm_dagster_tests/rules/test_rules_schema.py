from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from esm_dagster.rules import MappingRules, RulesError, parse_rules
from esm_dagster.rules.formats import to_strftime
from esm_dagster.rules.schema import SYNC_KEYS
from esm_dagster_tests.rules.rules_fixtures import rules_with, seed


def _error(doc: dict[str, Any]) -> RulesError:
    with pytest.raises(RulesError) as info:
        parse_rules(doc)
    return info.value


# -- the seed example ---------------------------------------------------------------------------


def test_seed_example_validates_verbatim() -> None:
    rules = parse_rules(seed())
    assert isinstance(rules, MappingRules)
    by_source = {f.source: f for f in rules.fields}
    assert list(by_source) == ["id", "email", "name", "phone", "address.city", "created"]
    assert by_source["id"].target == "user.external_id" and by_source["id"].type == "string"
    assert by_source["email"].type == "email" and by_source["email"].required
    assert by_source["name"].required and by_source["name"].type == "string"
    assert by_source["phone"].type == "phone_number" and by_source["phone"].region == "TH"
    assert by_source["address.city"].column == "city"
    created = by_source["created"]
    assert (created.type, created.unit, created.column) == ("timestamp", "s", "external_created_at")
    assert rules.transformations.timezone == "Asia/Bangkok"
    assert rules.transformations.currency == "THB"
    sync = rules.sync
    assert sync.sync_direction == "bidirectional"
    assert sync.conflict_resolution == "external_wins"
    assert sync.batch_size == 100
    assert sync.rate_limiting is not None
    assert (sync.rate_limiting.requests_per_minute, sync.rate_limiting.burst_limit) == (60, 10)
    assert sync.key == "id" and sync.stream is None
    assert rules.tables() == {
        "user": {
            "external_id": "string",
            "email": "email",
            "full_name": "string",
            "phone_number": "phone_number",
            "city": "string",
            "external_created_at": "timestamp",
        }
    }


def test_seed_example_as_json_text() -> None:
    assert parse_rules(json.dumps(seed())).sync.batch_size == 100


def test_sync_config_as_top_level_keys_is_equivalent() -> None:
    doc = seed()
    nested = doc.pop("sync_config")
    doc.update(nested)
    doc.update(stream="charges", key="charge.id", cron="*/15 * * * *", start_date="2026-01-01")
    rules = parse_rules(doc)
    assert rules.sync.sync_direction == "bidirectional"
    assert rules.sync.rate_limiting is not None and rules.sync.rate_limiting.burst_limit == 10
    assert rules.sync.stream == "charges"
    assert rules.sync.key == "charge.id"
    assert rules.sync.cron == "*/15 * * * *"
    assert rules.sync.start_date == date(2026, 1, 1)


def test_top_level_and_nested_sync_keys_merge_when_they_agree() -> None:
    doc = seed()
    doc["stream"] = "users"
    doc["batch_size"] = 100
    assert parse_rules(doc).sync.stream == "users"


def test_defaults() -> None:
    rules = parse_rules({"field_mappings": {"id": "t.external_id"}})
    assert rules.sync.sync_direction == "inbound"
    assert rules.sync.conflict_resolution == "external_wins"
    assert rules.sync.batch_size == 100
    assert rules.sync.key == "id"
    assert rules.sync.rate_limiting is None
    assert rules.transformations.timezone == "UTC"
    assert rules.fields[0].type == "string"


def test_parse_rules_accepts_a_parsed_model() -> None:
    rules = parse_rules(seed())
    assert parse_rules(rules) is rules


# -- types ----------------------------------------------------------------------------------------


def test_object_mapping_type_and_data_types_agreeing() -> None:
    doc = rules_with(
        {"amount": {"target": "t.amount", "type": "money", "currency": "usd"}},
        validation_rules={"data_types": {"amount": "money", "qty": "integer"}},
    )
    doc["field_mappings"]["qty"] = "t.qty"
    rules = parse_rules(doc)
    types = {f.source: f.type for f in rules.fields}
    assert types == {"id": "string", "amount": "money", "qty": "integer"}
    assert rules.fields[1].currency == "USD"  # case-insensitive, normalised


def test_data_types_keyed_by_target_column() -> None:
    doc = rules_with({"e": "t.email"}, validation_rules={"data_types": {"t.email": "email"}})
    assert parse_rules(doc).fields[1].type == "email"


def test_type_conflict_between_mapping_and_data_types() -> None:
    doc = rules_with(
        {"created": {"target": "t.created", "type": "timestamp"}},
        validation_rules={"data_types": {"created": "date"}},
    )
    message = str(_error(doc))
    assert "field_mappings.created.type" in message and "'date'" in message


# -- required fields ------------------------------------------------------------------------------


def test_required_fields_resolve_by_source_target_then_column() -> None:
    doc = rules_with(
        {"a.b": "t.col_b", "c": "t.col_c", "d": "u.col_d"},
        validation_rules={"required_fields": ["a.b", "t.col_c", "col_d", "not.mapped"]},
    )
    rules = parse_rules(doc)
    required = {f.source: f.required for f in rules.fields}
    assert required == {"id": False, "a.b": True, "c": True, "d": True}
    assert rules.required_sources == ("not.mapped",)


def test_required_field_ambiguous_bare_column() -> None:
    doc = rules_with({"a": "t.name", "b": "u.name"}, validation_rules={"required_fields": ["name"]})
    message = str(_error(doc))
    assert "validation_rules.required_fields[0]" in message and "ambiguous" in message


def test_required_option_on_field() -> None:
    rules = parse_rules(rules_with({"a": {"target": "t.a", "required": True}}))
    assert rules.fields[1].required


# -- malformed documents --------------------------------------------------------------------------


def test_bad_type_names_field_and_value() -> None:
    doc = seed()
    doc["field_mappings"]["created"]["type"] = "timestap"
    err = _error(doc)
    assert isinstance(err, ValueError)
    assert str(err).startswith("field_mappings.created.type: 'timestap' is not one of string, integer")


@pytest.mark.parametrize(
    "target",
    ["User.full_name", "user.full-name", "user", "public.user.name", "user.1st", "user.", "user.Name"],
)
def test_bad_identifier(target: str) -> None:
    doc = seed()
    doc["field_mappings"]["name"] = target
    message = str(_error(doc))
    assert message.startswith("field_mappings.name.target:")
    assert repr(target) in message


def test_reserved_external_id_column() -> None:
    message = str(_error(rules_with({"x": "t._external_id"})))
    assert "field_mappings.x.target" in message and "reserved" in message


def test_duplicate_target() -> None:
    doc = seed()
    doc["field_mappings"]["address.city"] = "user.email"
    message = str(_error(doc))
    assert message == ("field_mappings[\"address.city\"]: target 'user.email' is already mapped from 'email'")


def test_unknown_timezone() -> None:
    doc = seed()
    doc["transformations"]["timezone"] = "Asia/Bangkog"
    assert str(_error(doc)) == "transformations.timezone: 'Asia/Bangkog' is not an IANA time zone name"


def test_unknown_currency() -> None:
    doc = seed()
    doc["transformations"]["currency"] = "BHT"
    assert str(_error(doc)) == "transformations.currency: 'BHT' is not an ISO 4217 currency code"


def test_unknown_field_currency() -> None:
    doc = rules_with({"amount": {"target": "t.amount", "type": "money", "currency": "usdt"}})
    assert "field_mappings.amount.currency: 'usdt' is not an ISO 4217 currency code" in str(_error(doc))


def test_money_needs_a_currency_source() -> None:
    doc = rules_with({"amount": {"target": "t.amount", "type": "money"}})
    assert "field_mappings.amount: a money field needs" in str(_error(doc))


def test_unknown_option_is_refused() -> None:
    doc = rules_with({"amount": {"target": "t.amount", "type": "money", "curency": "USD"}})
    assert "field_mappings.amount.curency: unknown option (= 'USD')" in str(_error(doc))


def test_option_for_another_type_is_refused() -> None:
    doc = rules_with({"name": {"target": "t.name", "unit": "ms"}})
    message = str(_error(doc))
    assert "field_mappings.name.unit" in message and "does not apply to type 'string'" in message


def test_bad_unit_value() -> None:
    doc = rules_with({"ts": {"target": "t.ts", "type": "timestamp", "unit": "us"}})
    message = str(_error(doc))
    assert message.startswith("field_mappings.ts.unit:") and "'us'" in message


def test_bad_date_format() -> None:
    doc = seed()
    doc["transformations"]["date_format"] = "yyyy-mm-dd"
    message = str(_error(doc))
    assert message.startswith("transformations.date_format: 'yyyy-mm-dd': unknown token")


def test_date_format_without_a_year() -> None:
    doc = rules_with({"d": {"target": "t.d", "type": "date", "format": "DD/MM"}})
    assert "does not contain a full date" in str(_error(doc))


def test_bad_data_type_and_unmapped_data_type_key() -> None:
    doc = seed()
    doc["validation_rules"]["data_types"]["phone"] = "phone"
    doc["validation_rules"]["data_types"]["emial"] = "email"
    err = _error(doc)
    assert any(p.startswith("validation_rules.data_types:") and "'phone'" in p for p in err.problems)


def test_unmapped_data_type_key() -> None:
    doc = seed()
    doc["validation_rules"]["data_types"]["emial"] = "email"
    assert str(_error(doc)) == (
        "validation_rules.data_types.emial: 'emial' is not a mapped source path, target or column"
    )


def test_bad_region() -> None:
    doc = seed()
    doc["transformations"]["default_region"] = "XX"
    assert "transformations.default_region: 'XX'" in str(_error(doc))


def test_batch_size_bounds_nested_and_top_level() -> None:
    doc = seed()
    doc["sync_config"]["batch_size"] = 0
    assert str(_error(doc)).startswith("sync_config.batch_size: ")
    doc = seed()
    doc.update(doc.pop("sync_config"))
    doc["batch_size"] = 20_000
    message = str(_error(doc))
    assert message.startswith("batch_size: ") and "20000" in message


def test_conflicting_top_level_and_nested_sync_keys() -> None:
    doc = seed()
    doc["batch_size"] = 500
    assert str(_error(doc)) == "batch_size: 500 conflicts with sync_config.batch_size = 100"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("sync_direction", "sideways"),
        ("conflict_resolution", "newest_wins"),
        ("rate_limiting", {"requests_per_minute": 0}),
        ("start_date", "2026-02-30"),
        ("key", "a..b"),
    ],
)
def test_bad_sync_values(key: str, value: Any) -> None:
    doc = seed()
    doc["sync_config"][key] = value
    assert str(_error(doc)).startswith(f"sync_config.{key}")


def test_all_problems_are_reported() -> None:
    doc = seed()
    doc["field_mappings"]["created"]["type"] = "timestap"
    doc["transformations"]["timezone"] = "Nowhere/City"
    err = _error(doc)
    assert len(err.problems) == 2
    assert "field_mappings.created.type" in str(err) and "transformations.timezone" in str(err)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ("{not json", "mapping_rules: not valid JSON"),
        ([1, 2], "mapping_rules: expected a JSON object"),
        ({}, "field_mappings: required"),
        ({"field_mappings": {}}, "field_mappings: "),
        ({"field_mappings": {"a": 5}}, "field_mappings.a: 5 is neither"),
        ({"field_mappings": {"a..b": "t.c"}}, "field_mappings: 'a..b' is not a valid source path"),
    ],
)
def test_structurally_invalid_documents(doc: Any, expected: str) -> None:
    with pytest.raises(RulesError) as info:
        parse_rules(doc)
    assert str(info.value).startswith(expected)


def test_sync_keys_constant_covers_the_documented_keys() -> None:
    assert set(SYNC_KEYS) == {
        "sync_direction",
        "conflict_resolution",
        "batch_size",
        "rate_limiting",
        "stream",
        "key",
        "cron",
        "start_date",
    }


# -- date formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "pattern"),
    [
        ("YYYY-MM-DD", "%Y-%m-%d"),
        ("DD/MM/YYYY", "%d/%m/%Y"),
        ("YYYY-MM-DD[T]HH:mm:ss", "%Y-%m-%dT%H:%M:%S"),
        ("YYYY-MM-DDTHH:mm:ss", "%Y-%m-%dT%H:%M:%S"),
        ("%Y-%m-%d", "%Y-%m-%d"),
        ("%d %B %Y", "%d %B %Y"),
    ],
)
def test_to_strftime(fmt: str, pattern: str) -> None:
    assert to_strftime(fmt) == pattern


@pytest.mark.parametrize("fmt", ["yyyy-MM-dd", "YYYY-MM-Do", "", "MM/DD", "%Q"])
def test_to_strftime_refuses(fmt: str) -> None:
    with pytest.raises(ValueError):
        to_strftime(fmt)


def test_a_string_where_a_list_belongs_is_named_a_list_not_a_tuple() -> None:
    """`allowed_hosts: 10.0.0.1` said "Input should be a valid tuple": the user writes lists."""
    doc = rules_with({}, sync_config={"stream": "customers", "allowed_hosts": "10.0.0.1"})
    assert "sync_config.allowed_hosts: should be a list (got '10.0.0.1')" in str(_error(doc))
