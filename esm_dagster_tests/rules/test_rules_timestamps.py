from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
import pytest

from esm_dagster.rules import compile_rules
from esm_dagster_tests.rules.rules_fixtures import rules_with

BANGKOK = {"timezone": "Asia/Bangkok"}
INSTANT = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)  # 1700000000


def _ts(
    values: list[Any], unit: str | None = None, transformations: dict[str, Any] | None = None, **opts: Any
) -> pd.Series:
    spec: dict[str, Any] = {"target": "t.at", "type": "timestamp", **opts}
    if unit:
        spec["unit"] = unit
    doc = rules_with({"at": spec}, transformations=transformations or BANGKOK)
    result = compile_rules(doc).apply([{"id": str(i), "at": v} for i, v in enumerate(values)])
    assert not result.rejected, [r.errors for r in result.rejected]
    return result.tables["t"]["at"]


def _rejected(doc: dict[str, Any], records: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    result = compile_rules(doc).apply(records)
    return [(e.field, e.rule, e.value) for r in result.rejected for e in r.errors]


def test_seconds_and_milliseconds_in_auto_mode_are_the_same_instant() -> None:
    column = _ts([1700000000, 1700000000000, 1700000000.0, "1700000000", "1700000000000"])
    assert str(column.dtype) == "datetime64[us, Asia/Bangkok]"
    assert column.nunique() == 1
    first = column.iloc[0]
    assert first.tzinfo is not None
    assert first == INSTANT
    assert first.isoformat() == "2023-11-15T05:13:20+07:00"


def test_explicit_units() -> None:
    assert _ts([1700000000], unit="s").iloc[0] == INSTANT
    assert _ts([1700000000000], unit="ms").iloc[0] == INSTANT
    assert _ts([1700000], unit="ms").iloc[0] == datetime(1970, 1, 1, 0, 28, 20, tzinfo=UTC)


def test_sub_second_values_keep_microseconds() -> None:
    column = _ts([1700000000.123456, "1700000000.123456", 1700000000123])
    assert column.iloc[0] == column.iloc[1] == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
    assert column.iloc[2] == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "2023-11-14T22:13:20Z",  # ISO-8601, UTC
        "2023-11-14T22:13:20.000+0000",  # Salesforce
        "2023-11-15T05:13:20+07:00",  # offset
        "2023-11-15T05:13:20",  # naive: Bangkok wall-clock time
        "2023-11-15 05:13:20",  # Mailchimp fired_at style, naive
        "Tue, 14 Nov 2023 22:13:20 +0000",  # Twilio, RFC 2822
    ],
)
def test_strings(text: str) -> None:
    assert _ts([text]).iloc[0] == INSTANT


def test_naive_strings_use_the_mapping_timezone() -> None:
    utc = _ts(["2024-01-01T00:00:00"], transformations={"timezone": "UTC"}).iloc[0]
    bkk = _ts(["2024-01-01T00:00:00"]).iloc[0]
    assert (utc - bkk) == pd.Timedelta(hours=7)


def test_aware_datetimes_and_missing_values() -> None:
    column = _ts([INSTANT, None, "", pd.Timestamp(INSTANT)])
    assert column.iloc[0] == INSTANT and column.iloc[3] == INSTANT
    assert column.iloc[1] is pd.NaT and column.iloc[2] is pd.NaT


def test_declared_timestamp_format() -> None:
    column = _ts(["15/11/2023 05:13:20"], format="DD/MM/YYYY HH:mm:ss")
    assert column.iloc[0] == INSTANT


@pytest.mark.parametrize("value", ["garbage", "2023-13-45T00:00:00", "yesterday", True, {"t": 1}, 10**20])
def test_unparsable_timestamps_are_rejected(value: Any) -> None:
    doc = rules_with({"at": {"target": "t.at", "type": "timestamp"}})
    errors = _rejected(doc, [{"id": "1", "at": value}])
    assert len(errors) == 1 and errors[0][0] == "at"
    assert errors[0][1] in ("timestamp", "type")


def test_out_of_range_for_declared_unit() -> None:
    doc = rules_with({"at": {"target": "t.at", "type": "timestamp", "unit": "s"}})
    assert _rejected(doc, [{"id": "1", "at": 1700000000000}]) == [("at", "timestamp", 1700000000000)]


# -- dates ----------------------------------------------------------------------------------------


def _date_doc(fmt: str | None = None, tz: str = "Asia/Bangkok") -> dict[str, Any]:
    spec: dict[str, Any] = {"target": "t.day", "type": "date"}
    if fmt:
        spec["format"] = fmt
    return rules_with({"day": spec}, transformations={"date_format": "YYYY-MM-DD", "timezone": tz})


def test_dates_with_the_default_format() -> None:
    result = compile_rules(_date_doc()).apply(
        [{"id": "1", "day": "2026-01-31"}, {"id": "2", "day": None}, {"id": "3", "day": date(2026, 2, 1)}]
    )
    assert result.tables["t"]["day"].tolist() == [date(2026, 1, 31), None, date(2026, 2, 1)]


@pytest.mark.parametrize(
    "text", ["2026-13-01", "2026-02-30", "2026-1-5", "31/01/2026", "2026-01-31T10:00:00", "20260131"]
)
def test_dates_are_parsed_with_the_declared_format_only(text: str) -> None:
    errors = _rejected(_date_doc(), [{"id": "1", "day": text}])
    assert errors == [("day", "date_format", text)]


def test_declared_per_field_format() -> None:
    doc = _date_doc("DD/MM/YYYY")
    result = compile_rules(doc).apply([{"id": "1", "day": "31/01/2026"}, {"id": "2", "day": "2026-01-31"}])
    assert result.tables["t"]["day"].tolist() == [date(2026, 1, 31)]
    assert result.rejected[0].errors[0].message == "'2026-01-31' does not match the date format DD/MM/YYYY"


def test_strftime_style_format() -> None:
    result = compile_rules(_date_doc("%d %B %Y")).apply([{"id": "1", "day": "31 January 2026"}])
    assert result.tables["t"]["day"].tolist() == [date(2026, 1, 31)]


def test_unix_number_for_a_date_is_the_local_date() -> None:
    # 2023-11-14T20:00:00Z is already 15 November in Bangkok.
    records = [{"id": "1", "day": 1699992000}, {"id": "2", "day": 1699992000000}]
    bangkok = compile_rules(_date_doc()).apply(records).tables["t"]["day"].tolist()
    utc = compile_rules(_date_doc(tz="UTC")).apply(records).tables["t"]["day"].tolist()
    assert bangkok == [date(2023, 11, 15)] * 2
    assert utc == [date(2023, 11, 14)] * 2


def test_aware_datetime_for_a_date_uses_the_local_date() -> None:
    value = datetime(2023, 11, 14, 20, 0, tzinfo=UTC)
    assert compile_rules(_date_doc()).apply([{"id": "1", "day": value}]).tables["t"]["day"].tolist() == [
        date(2023, 11, 15)
    ]
