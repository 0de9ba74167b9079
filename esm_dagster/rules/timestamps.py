"""Timestamps and dates: aware, normalised, and strict about formats.

Providers disagree on time (PROVIDERS.md §11): Stripe sends unix seconds, HubSpot milliseconds,
Slack ``"1700000000.123456"`` strings, Twilio RFC 2822 (``Fri, 13 Aug 2010 01:16:24 +0000``),
HubSpot and Mailchimp ISO-8601 with and without an offset, Salesforce ``...000+0000``. All of
them end up as one aware ``datetime64[us, <mapping timezone>]`` column:

* numbers (and numeric strings) are unix time; unit ``s`` or ``ms``, or ``auto`` which reads
  ``|value| >= 1e11`` as milliseconds (1e11 s is the year 5138, 1e11 ms is 1973);
* strings are ISO-8601 (``datetime.fromisoformat``), else RFC 2822, else a declared format;
  naive ones are wall-clock time in the mapping's timezone (fold=0 on DST overlaps);
* microsecond resolution, which is what PostgreSQL's TIMESTAMPTZ stores and which covers dates
  like 9999-12-31 that nanoseconds cannot.

Dates are parsed with the declared format only, and strictly: the parsed date must render back
to the same text, so ``2026-13-01``, ``2026-1-5`` and ``2026-01-05T10:00`` are refused for
``YYYY-MM-DD``. A unix number for a date field is the local date in the mapping's timezone.

Numbers are converted column-wise with numpy; strings once per distinct value.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import numpy as np
import pandas as pd

from esm_dagster.rules.conversion import Invalid, show

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_NAT = np.iinfo(np.int64).min
_MS_THRESHOLD = 10**11
_FACTOR = {"s": 1_000_000, "ms": 1_000}
# Beyond these the microsecond count would overflow int64 (about +/- 292,000 years).
_LIMIT = {"s": 9_000_000_000_000, "ms": 9_000_000_000_000_000}
# Timestamps must also be Python datetimes (years 1-9999) to be usable downstream.
_MIN_US = (datetime(1, 1, 2, tzinfo=UTC) - _EPOCH) // _ONE_US
_MAX_US = (datetime(9999, 12, 31, tzinfo=UTC) - _EPOCH) // _ONE_US
_NUMERIC = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)\s*$")


def _unit_for(value: float | int | Decimal, unit: str) -> str:
    if unit != "auto":
        return unit
    magnitude: Any = abs(value)
    return "ms" if magnitude >= _MS_THRESHOLD else "s"


def _out_of_range(value: Any, unit: str | None = None) -> Invalid:
    what = f" for a unix time in {unit}" if unit else ""
    return Invalid("timestamp", f"{show(value)} is out of range{what} (years 1-9999)")


def _number_to_us(value: int | float | Decimal, unit: str) -> int | Invalid:
    u = _unit_for(value, unit)
    magnitude: Any = abs(value)
    if magnitude >= _LIMIT[u]:
        return _out_of_range(value, u)
    exact = Decimal(value) if isinstance(value, int | Decimal) else Decimal(repr(value))
    us = round(exact * _FACTOR[u])
    return us if _MIN_US <= us <= _MAX_US else _out_of_range(value, u)


def _datetime_to_us(value: datetime, zone: tzinfo) -> int | Invalid:
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        value = value.replace(tzinfo=zone)
    try:
        us = (value - _EPOCH) // _ONE_US
    except OverflowError:
        return _out_of_range(value)
    return us if _MIN_US <= us <= _MAX_US else _out_of_range(value)


def _parse_text(text: str, unit: str, zone: tzinfo, fmt: str | None) -> int | Invalid:
    """Microseconds since the epoch for one timestamp string."""
    s = text.strip()
    if _NUMERIC.match(s):
        return _number_to_us(Decimal(s) if "." in s else int(s), unit)
    if fmt is not None:
        try:
            return _datetime_to_us(datetime.strptime(s, fmt), zone)
        except ValueError:
            return Invalid("timestamp", f"{show(text)} does not match the timestamp format {fmt!r}")
    try:
        return _datetime_to_us(datetime.fromisoformat(s), zone)
    except ValueError:
        pass
    try:
        return _datetime_to_us(parsedate_to_datetime(s), zone)
    except (TypeError, ValueError, IndexError):
        pass
    return Invalid("timestamp", f"{show(text)} is not an ISO-8601, RFC 2822 or unix timestamp")


def _object_to_us(value: Any, unit: str, zone: tzinfo, fmt: str | None) -> int | Invalid | None:
    cls = value.__class__
    if cls is str:
        return _parse_text(value, unit, zone, fmt)
    if cls is bool:
        return Invalid("type", f"{show(value)} is not a timestamp")
    if cls is int or cls is float or cls is Decimal or isinstance(value, np.integer | np.floating):
        if value != value:  # NaN: missing
            return None
        if value in (float("inf"), float("-inf")):
            return Invalid("timestamp", f"{show(value)} is not a timestamp")
        num = int(value) if isinstance(value, np.integer) else value
        if isinstance(num, np.floating):
            num = float(num)
        return _number_to_us(num, unit)
    if isinstance(value, datetime):  # includes pandas.Timestamp
        if value is pd.NaT:
            return Invalid("timestamp", "NaT is not a timestamp")
        return _datetime_to_us(value, zone)
    if isinstance(value, date):
        return _datetime_to_us(datetime(value.year, value.month, value.day), zone)
    return Invalid("type", f"{show(value)} is not a timestamp")


def to_micros(
    values: list[Any], unit: str, zone: tzinfo, fmt: str | None = None
) -> tuple[np.ndarray, list[Any]]:
    """Epoch microseconds (int64, NaT sentinel for missing/invalid) and a per-row marker list.

    The marker list holds `Invalid` where a value failed and None elsewhere.
    """
    n = len(values)
    out = np.full(n, _NAT, dtype=np.int64)
    marks: list[Any] = [None] * n
    # Fast path: plain ints (the common unix-seconds / milliseconds column) go through numpy.
    all_ints = bool(values) and set(map(type, values)) == {int}
    int_pos: list[int] = [] if all_ints else [i for i, v in enumerate(values) if v.__class__ is int]
    if all_ints or int_pos:
        try:
            if all_ints:
                ints = np.array(values, dtype=np.int64)
            else:
                ints = np.fromiter((values[i] for i in int_pos), dtype=object, count=len(int_pos))
                ints = ints.astype(np.int64)
        except OverflowError:
            ints = None
        if ints is not None:
            mag = np.abs(ints)
            is_ms = (mag >= _MS_THRESHOLD) if unit == "auto" else np.full(len(ints), unit == "ms")
            limit = np.where(is_ms, _LIMIT["ms"], _LIMIT["s"])
            with np.errstate(over="ignore"):
                us = np.where(is_ms, ints * _FACTOR["ms"], ints * _FACTOR["s"])
            ok = (mag < limit) & (us >= _MIN_US) & (us <= _MAX_US)
            pos = np.arange(n) if all_ints else np.asarray(int_pos, dtype=np.int64)
            out[pos[ok]] = us[ok]
            for i in pos[~ok].tolist():
                marks[i] = _number_to_us(values[i], unit)
        else:
            for i in range(n) if all_ints else int_pos:
                _store(out, marks, i, _number_to_us(values[i], unit))
    # Everything else: strings once per distinct value, other objects one by one.
    other_pos = (
        [] if all_ints else [i for i, v in enumerate(values) if v is not None and v.__class__ is not int]
    )
    if other_pos:
        cache: dict[str, int | Invalid] = {}
        for i in other_pos:
            v = values[i]
            if v.__class__ is str:
                hit = cache.get(v)
                if hit is None:
                    hit = cache[v] = _parse_text(v, unit, zone, fmt)
                _store(out, marks, i, hit)
            else:
                _store(out, marks, i, _object_to_us(v, unit, zone, fmt))
    return out, marks


def _store(out: np.ndarray, marks: list[Any], i: int, result: int | Invalid | None) -> None:
    if result is None:
        return
    if isinstance(result, Invalid):
        marks[i] = result
    else:
        out[i] = result


def micros_to_series(micros: np.ndarray, timezone: str) -> pd.Series:
    """Aware datetime64[us, timezone] values from epoch microseconds."""
    index = pd.DatetimeIndex(micros.view("M8[us]"), tz="UTC").tz_convert(timezone)
    return pd.Series(index.array)


def convert_timestamps(
    values: list[Any], unit: str, timezone: str, zone: tzinfo, fmt: str | None = None
) -> tuple[pd.Series, list[Any]]:
    """Aware timestamps in `timezone` (NaT for missing/invalid) and per-row `Invalid` markers."""
    micros, marks = to_micros(values, unit, zone, fmt)
    return micros_to_series(micros, timezone), marks


def _parse_date(text: str, fmt: str, label: str) -> date | Invalid:
    s = text.strip()
    try:
        parsed = datetime.strptime(s, fmt)
    except ValueError:
        return Invalid("date_format", f"{show(text)} does not match the date format {label}")
    if parsed.strftime(fmt).casefold() != s.casefold():
        return Invalid("date_format", f"{show(text)} does not match the date format {label} exactly")
    return parsed.date()


def convert_dates(
    values: list[Any], fmt: str, label: str, unit: str, timezone: str, zone: tzinfo
) -> list[Any]:
    """`datetime.date` values (None for missing); failures left in place as `Invalid`.

    Strings are parsed with the declared format only; numbers are unix time read as the local
    date in `timezone`; aware datetimes are converted to `timezone` first.
    """
    out: list[Any] = [None] * len(values)
    text_cache: dict[str, date | Invalid] = {}
    numbers: list[int] = []
    for i, v in enumerate(values):
        if v is None:
            continue
        cls = v.__class__
        if cls is str:
            r = text_cache.get(v)
            if r is None:
                r = text_cache[v] = _parse_date(v, fmt, label)
            out[i] = r
        elif cls is bool:
            out[i] = Invalid("type", f"{show(v)} is not a date")
        elif cls is int or cls is float or cls is Decimal or isinstance(v, np.integer | np.floating):
            numbers.append(i)
        elif isinstance(v, datetime):
            if v.tzinfo is not None and v.tzinfo.utcoffset(v) is not None:
                v = v.astimezone(zone)
            out[i] = v.date()
        elif isinstance(v, date):
            out[i] = v
        else:
            out[i] = Invalid("type", f"{show(v)} is not a date")
    if numbers:
        micros, marks = to_micros([values[i] for i in numbers], unit, zone)
        local = micros_to_series(micros, timezone)
        days = local.dt.date.tolist()
        for j, i in enumerate(numbers):
            mark = marks[j]
            if mark is not None:
                out[i] = Invalid(mark.rule if mark.rule == "type" else "date_format", mark.message)
            elif days[j] is not pd.NaT:  # NaT: the number was NaN, i.e. missing
                out[i] = days[j]
    return out
