"""Dry run of mapping rules over sample records, as plain JSON.

Used by the UI, the CLI and the catalog write path to show a data engineer what a rules
document would do before it runs against the database: which records would be accepted and
the rows they would become, which would be rejected and why. The output is JSON-safe by
construction (`to_json_value`), so it can go straight into an API response or asset metadata.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from esm_dagster.rules.plan import RulesPlan, compile_rules
from esm_dagster.rules.schema import EXTERNAL_ID_COLUMN, MappingRules


def to_json_value(value: Any) -> Any:
    """A JSON-safe form of a converted value.

    Decimal -> its exact text (``"19.99"``), timestamps -> ISO-8601 with offset, dates ->
    ``YYYY-MM-DD``, nullable ints -> int, NA/NaT/NaN -> None, numpy scalars -> Python scalars;
    dicts and lists are converted recursively.
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else None
    if isinstance(value, datetime):  # pandas.Timestamp included
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return to_json_value(float(value))
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else to_json_value(pd.Timestamp(value))
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    return str(value)


def preview(
    rules_doc: MappingRules | RulesPlan | dict[str, Any] | str, records: Iterable[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Run the rules over `records` and describe the outcome.

    Returns ``{"accepted": [{"index": i, "rows": {table: {column: value}}}],
    "rejected": [{"index": i, "errors": [{"field": f, "rule": r, "message": m}]}]}``, both in
    record order; rows hold the mapped target columns only. Raises `RulesError` if the rules
    document is invalid.
    """
    plan = rules_doc if isinstance(rules_doc, RulesPlan) else compile_rules(rules_doc)
    result = plan.apply(list(records))
    per_table = {
        table: frame.drop(columns=[EXTERNAL_ID_COLUMN]).to_dict("index")
        for table, frame in result.tables.items()
    }
    accepted = [
        {
            "index": i,
            "rows": {
                table: {col: to_json_value(v) for col, v in rows[i].items()}
                for table, rows in per_table.items()
            },
        }
        for i in result.accepted_indices
    ]
    rejected = [
        {
            "index": r.index,
            "errors": [{"field": e.field, "rule": e.rule, "message": e.message} for e in r.errors],
        }
        for r in result.rejected
    ]
    return {"accepted": accepted, "rejected": rejected}
