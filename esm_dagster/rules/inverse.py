"""The inverse of `field_mappings`: internal column values back into the provider's record shape.

What the inbound plan reads, this writes, so a value pushed and read back is the value that was
pushed (the round trip is exact, which is what lets a two-way pair reach a fixed point):

- money with `minor_units`: the Decimal scaled up by the currency's exponent (JPY 80 -> 80, USD
  19.99 -> 1999, KWD 1.234 -> 1234); a value with more decimals than the currency has is refused,
  never rounded. The currency is the row's own (the column mapped from `currency_from`) or the
  field's fixed one;
- timestamps: unix seconds (milliseconds for `unit: ms`), or the declared `format`;
- dates: the declared date format; emails and phone numbers are checked as the inbound rules check
  them (a value the rules would reject is refused, naming the field) and written normalised
  (E.164); strings as they are;
- nested source paths (`metadata.currency`) become nested objects.

Input values are canonical (`sync.changes.canonical`): decimals, integers and times as text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from esm_dagster.rules import currencies, emails, phones
from esm_dagster.rules.conversion import Invalid
from esm_dagster.rules.schema import FieldMapping, MappingRules, key_path


class InverseError(ValueError):
    """A value that cannot be written back; the message names the field and the value."""


def _where(f: FieldMapping) -> str:
    return f"field_mappings{key_path(f.source)} ({f.target})"


def _decimal(f: FieldMapping, value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise InverseError(f"{_where(f)}: {value!r} is not a number") from None


def _currency_of(f: FieldMapping, row: Mapping[str, Any], by_source: Mapping[str, FieldMapping]) -> str:
    code: Any = None
    if f.currency_from:
        holder = by_source.get(f.currency_from)
        if holder is None:
            raise InverseError(
                f"{_where(f)}: currency_from {f.currency_from!r} is not mapped to a column, so the "
                "row's currency is unknown and the amount cannot be written back"
            )
        code = row.get(holder.column)
    code = code or f.currency
    norm = currencies.normalize_code(code)
    if norm is None:
        raise InverseError(f"{_where(f)}: no ISO 4217 currency for the amount (got {code!r})")
    return norm


def _money(f: FieldMapping, value: Any, row: Mapping[str, Any], by_source: Mapping[str, FieldMapping]) -> Any:
    amount = _decimal(f, value)
    if f.minor_units is None:
        return format(amount, "f")
    code = _currency_of(f, row, by_source)
    exponent = currencies.exponent(code, "stripe" if f.minor_units == "stripe" else "iso4217")
    if exponent is None:
        raise InverseError(f"{_where(f)}: {code} has no minor unit; cannot write {value!r}")
    minor = amount.scaleb(exponent)
    if minor != minor.to_integral_value():
        raise InverseError(
            f"{_where(f)}: {value!r} {code} has more than {exponent} decimal(s); refusing to round it"
        )
    return int(minor)


def _timestamp(f: FieldMapping, value: Any, zone: ZoneInfo) -> Any:
    moment = dt.datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    if f.timestamp_format:
        return moment.astimezone(zone).strftime(f.timestamp_format)
    if f.unit == "ms":
        return int(moment.timestamp() * 1000)
    return int(moment.timestamp())


def field_value(
    f: FieldMapping,
    value: Any,
    row: Mapping[str, Any],
    by_source: Mapping[str, FieldMapping],
    zone: ZoneInfo,
) -> Any:
    """One canonical column value as the provider's field value."""
    if value is None:
        return None
    if f.type == "money":
        return _money(f, value, row, by_source)
    if f.type == "integer":
        number = _decimal(f, value)
        if number != number.to_integral_value():
            raise InverseError(f"{_where(f)}: {value!r} is not a whole number")
        return int(number)
    if f.type == "decimal":
        return format(_decimal(f, value), "f")
    if f.type == "boolean":
        return bool(value)
    if f.type == "timestamp":
        return _timestamp(f, value, zone)
    if f.type == "date":
        return dt.date.fromisoformat(str(value)).strftime(f.date_format)
    if f.type in ("email", "phone_number"):
        # The rules' own validation, outbound too: a row a person typed locally must not reach
        # the provider (and come back as a quarantined record) when it would fail on the way in.
        checked = (
            emails.normalize_email(str(value))
            if f.type == "email"
            else phones.normalize_phone(str(value), f.region)
        )
        if isinstance(checked, Invalid):
            raise InverseError(f"{_where(f)}: {checked.message}")
        return checked
    return str(value)  # string


def _put(record: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = record
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def to_provider(
    rules: MappingRules, row: Mapping[str, Any], columns: Iterable[str] | None = None
) -> dict[str, Any]:
    """The provider record for `row` (column -> canonical value), limited to `columns` if given
    (plus the `outbound.always` paths), in the write's shape (`outbound.unwrap` removed).

    The record key (`sync.key`) is never written as a field: the provider owns its ids; an update
    carries the id separately (`outbound.key_field`).
    """
    by_source = {f.source: f for f in rules.fields}
    outbound = rules.sync.outbound
    wanted = None if columns is None else set(columns)
    if wanted is not None and outbound is not None:
        for path in outbound.always:
            if path not in by_source:
                raise InverseError(f"sync_config.outbound.always: {path!r} is not a mapped source path")
            wanted.add(by_source[path].column)
    record = _record(rules, row, wanted, by_source)
    prefix = None if outbound is None else outbound.unwrap
    if prefix is not None:
        inner: Any = record
        for part in prefix.split("."):
            inner = inner.get(part, {}) if isinstance(inner, dict) else {}
        rest = {k: v for k, v in record.items() if k != prefix.split(".")[0]}
        record = {**rest, **(inner if isinstance(inner, dict) else {})}
    return record


def _record(
    rules: MappingRules,
    row: Mapping[str, Any],
    wanted: set[str] | None,
    by_source: Mapping[str, FieldMapping],
) -> dict[str, Any]:
    zone = rules.transformations.zone
    record: dict[str, Any] = {}
    for f in rules.fields:
        if f.source == rules.sync.key or f.column not in row:
            continue
        if wanted is not None and f.column not in wanted:
            continue
        _put(record, f.source, field_value(f, row[f.column], row, by_source, zone))
    if wanted is not None:
        # An amount travels with its currency: a provider reads the two together.
        for f in rules.fields:
            if f.type == "money" and f.column in wanted and f.currency_from and f.currency_from in by_source:
                holder = by_source[f.currency_from]
                if holder.column in row and holder.source != rules.sync.key:
                    _put(record, holder.source, field_value(holder, row[holder.column], row, by_source, zone))
    return record
