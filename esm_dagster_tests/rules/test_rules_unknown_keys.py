"""Misspelt section and option names are refused, naming the key and the closest known one."""

from __future__ import annotations

from typing import Any

import pytest

from esm_dagster.rules import RulesError, parse_rules
from esm_dagster_tests.rules.rules_fixtures import seed


def _problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(RulesError) as info:
        parse_rules(doc)
    return info.value.problems


def _rename(section: dict[str, Any], old: str, new: str) -> None:
    section[new] = section.pop(old)


@pytest.mark.parametrize(
    ("where", "old", "typo", "expected"),
    [
        ((), "validation_rules", "validation_rule", "validation_rule: unknown key; did you mean 'validation_rules'?"),
        ((), "transformations", "transformation", "transformation: unknown key; did you mean 'transformations'?"),
        ((), "sync_config", "sync_confg", "sync_confg: unknown key; did you mean 'sync_config'?"),
        (
            ("validation_rules",), "required_fields", "required_field",
            "validation_rules.required_field: unknown key; did you mean 'required_fields'?",
        ),
        (
            ("validation_rules",), "data_types", "data_type",
            "validation_rules.data_type: unknown key; did you mean 'data_types'?",
        ),
        (
            ("transformations",), "date_format", "date_fromat",
            "transformations.date_fromat: unknown key; did you mean 'date_format'?",
        ),
        (
            ("sync_config",), "batch_size", "batchsize",
            "sync_config.batchsize: unknown key; did you mean 'batch_size'?",
        ),
        (
            ("sync_config", "rate_limiting"), "burst_limit", "burst_limt",
            "sync_config.rate_limiting.burst_limt: unknown key; did you mean 'burst_limit'?",
        ),
    ],
)  # fmt: skip
def test_typo_is_refused_with_the_closest_key(
    where: tuple[str, ...], old: str, typo: str, expected: str
) -> None:
    doc = seed()
    section = doc
    for step in where:
        section = section[step]
    _rename(section, old, typo)
    problems = _problems(doc)
    assert any(p.startswith(expected) for p in problems), problems


def test_top_level_sync_key_typo_and_misplaced_section_key() -> None:
    doc = seed()
    doc["batch_sise"] = 10
    doc["required_fields"] = ["email"]
    problems = _problems(doc)
    assert any(p.startswith("batch_sise: unknown key; did you mean 'batch_size'?") for p in problems)
    assert any(
        p.startswith("required_fields: unknown key; did you mean 'validation_rules.required_fields'?")
        for p in problems
    ), problems


def test_unknown_key_with_no_close_match_lists_the_known_keys() -> None:
    doc = seed()
    doc["transformations"]["zzz"] = 1
    (problem,) = _problems(doc)
    assert problem.startswith("transformations.zzz: unknown key")
    assert "date_format" in problem and "x-" in problem


def test_unknown_keys_are_reported_with_the_other_problems() -> None:
    doc = seed()
    doc["transformations"]["timezone"] = "Nowhere/City"
    _rename(doc, "validation_rules", "validation_rule")
    problems = _problems(doc)
    assert any(p.startswith("validation_rule: unknown key") for p in problems)
    assert any(p.startswith("transformations.timezone") for p in problems)


def test_every_real_field_is_known_nested_and_at_the_top_level() -> None:
    doc = seed()
    doc["validation_rules"].update(min_pass_rate=0.9, default_region="TH")
    doc["transformations"]["default_region"] = "TH"
    doc["sync_config"].update(
        stream="customers", key="id", cron="0 * * * *", start_date="2026-01-01",
        error_threshold=5, max_run_seconds=600,
    )  # fmt: skip
    rules = parse_rules(doc)
    assert (rules.sync.error_threshold, rules.sync.max_run_seconds) == (5, 600)
    assert rules.validation_rules.min_pass_rate == 0.9

    top = seed()
    top.update(top.pop("sync_config"))
    top.update(error_threshold=4, max_run_seconds=900, cron="0 * * * *", stream="customers")
    rules = parse_rules(top)
    assert (rules.sync.error_threshold, rules.sync.max_run_seconds, rules.sync.cron) == (4, 900, "0 * * * *")


def test_top_level_error_threshold_conflicting_with_nested_is_refused() -> None:
    doc = seed()
    doc["sync_config"]["error_threshold"] = 5
    doc["error_threshold"] = 6
    assert any(p.startswith("error_threshold: 6 conflicts") for p in _problems(doc))


def test_x_prefixed_extension_keys_are_accepted_and_kept() -> None:
    doc = seed()
    doc["x-future_section"] = {"x": 1}
    doc["transformations"]["x-round_half"] = "even"
    doc["validation_rules"]["x-note"] = "owned by the data team"
    doc["sync_config"]["x-owner"] = "ops"
    doc["sync_config"]["rate_limiting"]["x-tier"] = "gold"
    rules = parse_rules(doc)
    assert rules.model_extra == {"x-future_section": {"x": 1}}
    assert rules.transformations.model_extra == {"x-round_half": "even"}
    assert rules.sync.model_extra == {"x-owner": "ops"}


def test_demo_catalog_and_examples_still_validate() -> None:
    import json
    from pathlib import Path

    import yaml

    from esm_dagster.demo.run import demo_mappings

    for mapping in demo_mappings("http://127.0.0.1:1"):
        parse_rules(mapping["mapping_rules"])
    examples = Path(__file__).resolve().parents[2] / "examples"
    parse_rules(json.loads((examples / "seed_mapping_rules.json").read_text()))
    parse_rules(yaml.safe_load((examples / "stripe_mapping.yaml").read_text())["mapping_rules"])


def test_circuit_cooldown_is_a_validated_sync_key() -> None:
    assert parse_rules(seed()).sync.circuit_cooldown_seconds == 300
    doc = seed()
    doc["sync_config"]["circuit_cooldown_seconds"] = 60
    assert parse_rules(doc).sync.circuit_cooldown_seconds == 60
    top = seed()
    top.update(top.pop("sync_config"), circuit_cooldown_seconds=900)
    assert parse_rules(top).sync.circuit_cooldown_seconds == 900
    doc["sync_config"]["circuit_cooldown_seconds"] = 0
    (problem,) = _problems(doc)
    assert problem.startswith("sync_config.circuit_cooldown_seconds:") and "(got 0)" in problem
    doc["sync_config"].pop("circuit_cooldown_seconds")
    doc["sync_config"]["circuit_cooldown"] = 60
    assert "did you mean 'circuit_cooldown_seconds'" in _problems(doc)[0]
