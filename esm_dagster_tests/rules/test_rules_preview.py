from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import numpy as np
import pandas as pd

from esm_dagster.rules import compile_rules, preview, to_json_value
from esm_dagster_tests.rules.rules_fixtures import member, rules_with, seed


def test_preview_shape_is_exact_and_json_serialisable() -> None:
    records = [member(1), member(2, email="not-an-email", name="")]
    out = preview(seed(), records)
    assert json.loads(json.dumps(out)) == out  # no default= needed
    assert out == {
        "accepted": [
            {
                "index": 0,
                "rows": {
                    "user": {
                        "external_id": "00001",
                        "email": "member1@example.org",
                        "full_name": "Member 1",
                        "phone_number": "+66812345678",
                        "city": "Bangkok",
                        "external_created_at": "2023-11-15T05:13:21+07:00",
                    }
                },
            }
        ],
        "rejected": [
            {
                "index": 1,
                "errors": [
                    {
                        "field": "email",
                        "rule": "email",
                        "message": "'not-an-email' is not a valid email address: "
                        "An email address must have an @-sign.",
                    },
                    {"field": "name", "rule": "required", "message": "'name' is required"},
                ],
            }
        ],
    }


def test_preview_values_for_every_type() -> None:
    doc = rules_with(
        {
            "amount": {
                "target": "t.amount",
                "type": "money",
                "currency_from": "currency",
                "minor_units": True,
            },
            "qty": {"target": "t.qty", "type": "integer"},
            "paid": {"target": "t.paid", "type": "boolean"},
            "day": {"target": "t.day", "type": "date"},
            "at": {"target": "t.at", "type": "timestamp"},
            "note": "t.note",
        },
        transformations={"timezone": "Asia/Bangkok"},
    )
    records = [
        {"id": "1", "amount": 1999, "currency": "usd", "qty": 2, "paid": "yes", "day": "2026-01-31", "at": 0},
        {"id": "2", "amount": 5000, "currency": "jpy"},
    ]
    out = preview(compile_rules(doc), records)
    assert out["rejected"] == []
    rows = [a["rows"]["t"] for a in out["accepted"]]
    assert rows[0] == {
        "external_id": "1",
        "amount": "19.99",
        "qty": 2,
        "paid": True,
        "day": "2026-01-31",
        "at": "1970-01-01T07:00:00+07:00",
        "note": None,
    }
    assert rows[1] == {
        "external_id": "2",
        "amount": "5000",
        "qty": None,
        "paid": None,
        "day": None,
        "at": None,
        "note": None,
    }
    assert type(rows[0]["qty"]) is int and type(rows[0]["paid"]) is bool
    json.dumps(out)


def test_to_json_value() -> None:
    assert to_json_value(Decimal("1.230")) == "1.230"
    assert to_json_value(pd.NA) is None
    assert to_json_value(pd.NaT) is None
    assert to_json_value(float("nan")) is None
    assert to_json_value(np.int64(5)) == 5 and type(to_json_value(np.int64(5))) is int
    assert to_json_value(np.bool_(True)) is True
    assert to_json_value(date(2026, 1, 2)) == "2026-01-02"
    assert to_json_value(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05+00:00"
    assert (
        to_json_value(pd.Timestamp("2026-01-02T03:04:05", tz="Asia/Bangkok")) == "2026-01-02T03:04:05+07:00"
    )
    assert to_json_value({"a": [Decimal("1"), None]}) == {"a": ["1", None]}
