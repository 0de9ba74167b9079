"""DataFrame rows -> plain Python values the database drivers bind exactly."""

from __future__ import annotations

from typing import Any

import pandas as pd


def _column_values(series: pd.Series) -> list[Any]:
    if isinstance(series.dtype, pd.DatetimeTZDtype):  # one C call, not a Timestamp per value
        return [None if v is pd.NaT else v for v in series.array.to_pydatetime()]
    if pd.api.types.is_extension_array_dtype(series.dtype) and pd.api.types.is_integer_dtype(series.dtype):
        return [None if pd.isna(v) else int(v) for v in series]
    if pd.api.types.is_bool_dtype(series.dtype) and pd.api.types.is_extension_array_dtype(series.dtype):
        return [None if pd.isna(v) else bool(v) for v in series]
    values = series.tolist()
    return [
        None if (v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v)) else v
        for v in values
    ]


def frame_columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """Column name -> the column's values as plain Python values (None for every missing kind)."""
    return {name: _column_values(frame[name]) for name in frame.columns}


def frame_to_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    columns = frame_columns(frame)
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
