"""Converters for the plain types: string, integer, decimal and boolean.

Types are kept exactly, because that is where silent drift comes from:

* string: str values are kept verbatim (an ID ``"007"`` stays ``"007"``); numbers become their
  text (``5`` -> ``"5"``), booleans ``"true"``/``"false"``, dicts and lists compact JSON.
* integer: Python ints, digit strings (``"42"``) and integral floats (``42.0``, as JavaScript
  emits them); ``"12.5"``, ``12.5``, booleans and values outside int64 are refused. The column is
  pandas' nullable ``Int64``, so one missing value does not turn it into floats.
* decimal: `decimal.Decimal` built from the text of the value (``str(19.99)`` is ``"19.99"``),
  never through float arithmetic; NaN and infinities are refused.
* boolean: true/false, 1/0, "yes"/"no", "true"/"false", "1"/"0" (case-insensitive).

Each converter is one comprehension with a fast path for the expected Python type.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import pandas as pd

from esm_dagster.rules.conversion import Invalid, is_nan, show

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_INT_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")
_DECIMAL_TEXT = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
_BOOLEANS: dict[Any, bool] = {
    True: True,
    False: False,
    "true": True,
    "false": False,
    "yes": True,
    "no": False,
    "1": True,
    "0": False,
}  # 1/0 (and 1.0/0.0) hash like True/False, so they are covered too.


# -- string ---------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def to_text(value: Any) -> str | None:
    """The text form of a non-str value for a string column."""
    if value is None or (value.__class__ is float and value != value):
        return None
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))  # 5.0 from a JSON number is the integer 5
    return str(value)


def convert_strings(values: list[Any]) -> list[Any]:
    return [v if v.__class__ is str else to_text(v) for v in values]


# -- integer --------------------------------------------------------------------------------


def _to_int(value: Any) -> int | Invalid | None:
    if value is None:
        return None
    cls = value.__class__
    if cls is str:
        if _INT_TEXT.match(value):
            number = int(value)
        else:
            return Invalid("type", f"{show(value)} is not an integer")
    elif cls is bool:
        return Invalid("type", f"{show(value)} is not an integer")
    elif isinstance(value, int):
        number = int(value)
    elif isinstance(value, float | Decimal):
        if is_nan(value):
            return None
        if not _finite(value) or value != int(value):
            return Invalid("type", f"{show(value)} is not an integer")
        number = int(value)
    else:
        try:
            number = int(value.__index__())
        except (AttributeError, TypeError):
            return Invalid("type", f"{show(value)} is not an integer")
    if not _INT64_MIN <= number <= _INT64_MAX:
        return Invalid("type", f"{show(value)} is outside the 64-bit integer range")
    return number


def _finite(value: float | Decimal) -> bool:
    if isinstance(value, Decimal):
        return value.is_finite()
    return value not in (float("inf"), float("-inf")) and value == value


def convert_integers(values: list[Any]) -> list[Any]:
    """Python ints (None for missing); failures left in place as `Invalid`."""
    return [v if v.__class__ is int and _INT64_MIN <= v <= _INT64_MAX else _to_int(v) for v in values]


def integer_array(values: list[Any]) -> Any:
    """A nullable Int64 pandas array from converted ints/None."""
    return pd.array(values, dtype="Int64")


# -- decimal --------------------------------------------------------------------------------


def to_decimal(value: Any) -> Decimal | Invalid | None:
    if value is None:
        return None
    cls = value.__class__
    if cls is str:
        if not _DECIMAL_TEXT.match(value):
            return Invalid("type", f"{show(value)} is not a decimal number")
        return Decimal(value.strip())
    if cls is int:
        return Decimal(value)
    if cls is float:
        if value != value:
            return None
        if not _finite(value):
            return Invalid("type", f"{show(value)} is not a finite decimal number")
        return Decimal(repr(value))  # shortest round-trip text: 19.99 -> Decimal('19.99')
    if cls is bool:
        return Invalid("type", f"{show(value)} is not a decimal number")
    if isinstance(value, Decimal):
        if value.is_nan():
            return None
        return value if value.is_finite() else Invalid("type", f"{show(value)} is not finite")
    if isinstance(value, int):
        return Decimal(int(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return Invalid("type", f"{show(value)} is not a decimal number")
    try:
        return to_decimal(number)
    except InvalidOperation:
        return Invalid("type", f"{show(value)} is not a decimal number")


def convert_decimals(values: list[Any]) -> list[Any]:
    """`Decimal` values (None for missing); failures left in place as `Invalid`."""
    return [to_decimal(v) for v in values]


# -- boolean --------------------------------------------------------------------------------


def _to_bool(value: Any) -> bool | Invalid | None:
    if value is None or is_nan(value):
        return None
    key = value.strip().lower() if value.__class__ is str else value
    try:
        result = _BOOLEANS.get(key)
    except TypeError:  # unhashable (dict, list)
        result = None
    if result is None:
        return Invalid("type", f"{show(value)} is not a boolean (true/false, 1/0, yes/no)")
    return result


def convert_booleans(values: list[Any]) -> list[Any]:
    """Python bools (None for missing); failures left in place as `Invalid`."""
    return [v if v.__class__ is bool else _to_bool(v) for v in values]


def boolean_array(values: list[Any]) -> Any:
    return pd.array(values, dtype="boolean")
