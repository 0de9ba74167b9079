"""mapping_rules: schema, compiled transform + validation plan, preview. Pure, no I/O.

Typical use by the sync engine::

    rules = parse_rules(row.mapping_rules)        # RulesError names the bad field
    plan = compile_rules(rules)
    result = plan.apply(records, start_index=offset)
    result.tables["user"]                         # DataFrame, index = record index
    result.rejected                               # [Rejection(index, record, errors)]
"""

from esm_dagster.rules.errors import FieldError, Rejection, RulesError
from esm_dagster.rules.plan import RulesPlan, RulesResult, compile_rules
from esm_dagster.rules.preview import preview, to_json_value
from esm_dagster.rules.redaction import is_secret_key, redact_record
from esm_dagster.rules.schema import (
    EXTERNAL_ID_COLUMN,
    FIELD_TYPES,
    FieldMapping,
    MappingRules,
    SyncConfig,
    Transformations,
    ValidationRules,
    parse_rules,
)

__all__ = [
    "EXTERNAL_ID_COLUMN",
    "FIELD_TYPES",
    "FieldError",
    "FieldMapping",
    "MappingRules",
    "Rejection",
    "RulesError",
    "RulesPlan",
    "RulesResult",
    "SyncConfig",
    "Transformations",
    "ValidationRules",
    "compile_rules",
    "is_secret_key",
    "parse_rules",
    "preview",
    "redact_record",
    "to_json_value",
]
