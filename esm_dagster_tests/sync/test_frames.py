"""DataFrame columns -> plain Python values, as the drivers (and the COPY text) take them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd

from esm_dagster.sync.frames import frame_columns, frame_to_rows


def test_every_missing_kind_is_none_and_values_are_plain_python() -> None:
    moments = pd.Series(pd.to_datetime([1_700_000_000, None, 1_700_000_061], unit="s", utc=True))
    frame = pd.DataFrame(
        {
            "at": moments.dt.tz_convert("Asia/Bangkok"),
            "n": pd.array([1, None, 2**62], dtype="Int64"),
            "ok": pd.array([True, None, False], dtype="boolean"),
            "text": pd.Series(["a", np.nan, None], dtype=object),
            "amount": pd.Series([Decimal("1.10"), pd.NA, Decimal("0")], dtype=object),
        }
    ).set_axis([7, 8, 9])  # a batch's frame is indexed by stream position
    columns = frame_columns(frame)
    expected_at = [
        dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC),
        None,
        dt.datetime(2023, 11, 14, 22, 14, 21, tzinfo=dt.UTC),
    ]
    assert columns["at"] == expected_at
    assert all(type(v) is dt.datetime and str(v.tzinfo) == "Asia/Bangkok" for v in columns["at"] if v)
    assert columns["n"] == [1, None, 2**62] and type(columns["n"][2]) is int
    assert columns["ok"] == [True, None, False] and type(columns["ok"][0]) is bool
    assert columns["text"] == ["a", None, None]
    assert columns["amount"] == [Decimal("1.10"), None, Decimal("0")]
    assert frame_to_rows(frame)[1] == {"at": None, "n": None, "ok": None, "text": None, "amount": None}
