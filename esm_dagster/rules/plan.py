"""The compiled rules: a batch of raw records in, typed per-table DataFrames and rejections out.

`compile_rules` resolves everything that does not depend on data once (types, formats, regions,
currencies, defaults); `RulesPlan.apply` then works column-wise: extract the needed paths
(`paths`), convert each column with its type's converter, and only then look at rows, to split
accepted records from rejected ones. Validators that cost tens of microseconds (phonenumbers,
email_validator) run once per distinct value.

Contract with the sync engine:

* a record with any error is rejected as a whole, listed with *all* its errors, and appears in
  no table; the other records of the batch are unaffected;
* each target table gets one row per accepted record, indexed by the record's position in the
  stream (``start_index + i``), with the mapped columns plus ``_external_id`` (the record's key,
  as text) — so the loader can upsert by key and checkpoint by index;
* nothing here does I/O, logs, or raises on bad data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from esm_dagster.rules import emails, phones
from esm_dagster.rules.conversion import Invalid, RowErrors, positions_of, show, split_invalid
from esm_dagster.rules.errors import FieldError, Rejection, RulesError
from esm_dagster.rules.money import convert_money
from esm_dagster.rules.paths import extract_columns
from esm_dagster.rules.redaction import MASK, is_secret_path
from esm_dagster.rules.scalars import (
    boolean_array,
    convert_booleans,
    convert_decimals,
    convert_integers,
    convert_strings,
    integer_array,
)
from esm_dagster.rules.schema import EXTERNAL_ID_COLUMN, FieldMapping, MappingRules, key_path, parse_rules
from esm_dagster.rules.timestamps import convert_dates, convert_timestamps


@dataclass
class RulesResult:
    """The outcome of one batch.

    `tables`: target table -> DataFrame of accepted records (index = record index).
    `rejected`: one `Rejection` per refused record, in record order.
    `accepted_indices`: record indices of the accepted records, in order.
    """

    tables: dict[str, pd.DataFrame]
    rejected: list[Rejection]
    accepted_indices: list[int]
    total: int
    start_index: int = 0
    rule_counts: dict[str, int] = field(default_factory=dict)

    @property
    def accepted_count(self) -> int:
        return len(self.accepted_indices)

    @property
    def rejected_count(self) -> int:
        return len(self.rejected)

    @property
    def pass_rate(self) -> float:
        """Share of accepted records (1.0 for an empty batch)."""
        return 1.0 if self.total == 0 else self.accepted_count / self.total


def _object_array(values: Sequence[Any]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def _missing_positions(values: list[Any]) -> list[int]:
    """Positions of None and "" (NaN floats are turned into NULL by the converters)."""
    nones = positions_of(values, None) if None in values else []
    if "" not in values:
        return nones
    return sorted(nones + [i for i in positions_of(values, "") if values[i].__class__ is str])


class RulesPlan:
    """Validated mapping rules compiled for `apply`. Build it with `compile_rules`."""

    def __init__(self, rules: MappingRules) -> None:
        self.rules = rules
        self.fields: tuple[FieldMapping, ...] = rules.fields
        self.key: str = rules.sync.key
        self.timezone: str = rules.transformations.timezone
        self._zone = ZoneInfo(self.timezone)
        paths = [self.key]
        for f in self.fields:
            paths.append(f.source)
            if f.currency_from:
                paths.append(f.currency_from)
        paths.extend(rules.required_sources)
        self.source_paths: tuple[str, ...] = tuple(dict.fromkeys(paths))
        # When the key is also mapped as a plain string column, its conversion is reused.
        self._key_field: int | None = next(
            (
                n
                for n, f in enumerate(self.fields)
                if f.source == self.key and f.type == "string" and f.default is None
            ),
            None,
        )
        self._check_defaults()

    # -- schema views ---------------------------------------------------------------------

    def table_columns(self) -> dict[str, dict[str, str]]:
        """Target table -> column -> field type name (not including ``_external_id``)."""
        return self.rules.tables()

    @property
    def table_names(self) -> list[str]:
        return list(self.rules.tables())

    # -- compile-time checks ------------------------------------------------------------

    def default_problems(self) -> list[str]:
        """Why each field's `default` option would not convert to the field's type."""
        problems: list[str] = []
        for f in self.fields:
            if f.default is None:
                continue
            codes = {f.currency_from: [None]} if f.currency_from else {}
            _, errors = self._convert(f, [f.default], codes)
            for _, source, inv in errors:
                if source == f.source:
                    problems.append(f"field_mappings{key_path(f.source)}.default: {inv.message}")
        return problems

    def _check_defaults(self) -> None:
        if problems := self.default_problems():
            raise RulesError(problems)

    # -- conversion ---------------------------------------------------------------------

    def _convert(
        self, f: FieldMapping, values: list[Any], columns: dict[str, list[Any]]
    ) -> tuple[Any, list[tuple[int, str, Invalid]]]:
        """Convert one column: (column values for the DataFrame, [(row, source path, Invalid)])."""
        t = f.type
        errors: RowErrors
        if t == "string":
            return _object_array(convert_strings(values)), []
        if t == "timestamp":
            series, marks = convert_timestamps(values, f.unit, self.timezone, self._zone, f.timestamp_format)
            return series.array, [(i, f.source, m) for i, m in enumerate(marks) if m is not None]
        extra: list[tuple[int, str, Invalid]] = []
        if t == "email":
            out = emails.normalize_column(values)
        elif t == "phone_number":
            out = phones.normalize_column(values, f.region)
        elif t == "integer":
            out = convert_integers(values)
        elif t == "decimal":
            out = convert_decimals(values)
        elif t == "boolean":
            out = convert_booleans(values)
        elif t == "date":
            out = convert_dates(values, f.date_format, f.format_label, f.unit, self.timezone, self._zone)
        elif t == "money":
            codes = columns.get(f.currency_from) if f.currency_from else None
            out, marks = convert_money(values, codes, f.currency, f.minor_units, f.currency_from)
            extra = [(i, f.currency_from or f.source, m) for i, m in enumerate(marks) if m is not None]
        else:  # pragma: no cover - the schema only admits the types above
            raise AssertionError(t)
        errors = split_invalid(out)
        row_errors = [(i, f.source, inv) for i, inv in errors] + extra
        if t == "integer":
            return integer_array(out), row_errors
        if t == "boolean":
            return boolean_array(out), row_errors
        return _object_array(out), row_errors

    def apply(
        self, records: Sequence[dict[str, Any]] | Iterable[dict[str, Any]], start_index: int = 0
    ) -> RulesResult:
        """Transform and validate one batch of raw records.

        `start_index` is the stream position of ``records[0]``; indices in the result (DataFrame
        index, `Rejection.index`, `accepted_indices`) are ``start_index + position``.
        """
        batch: list[dict[str, Any]] = records if isinstance(records, list) else list(records)
        n = len(batch)
        columns = extract_columns(batch, self.source_paths)
        problems: dict[int, list[FieldError]] = {}

        def report(i: int, source: str, inv: Invalid, raw: Any) -> None:
            problems.setdefault(i, []).append(_field_error(source, inv, raw))

        # The record key.
        key_raw = columns[self.key]
        for i in _missing_positions(key_raw):
            report(i, self.key, Invalid("required", f"record key {self.key!r} is missing"), None)

        converted: list[Any] = []
        for f in self.fields:
            raw = columns[f.source]
            missing = _missing_positions(raw)
            values = raw
            if missing:
                values = list(raw)
                fill = f.default
                for i in missing:
                    values[i] = fill
                if f.required and fill is None:
                    inv = Invalid("required", f"{f.source!r} is required")
                    for i in missing:
                        report(i, f.source, inv, raw[i])
            column, errors = self._convert(f, values, columns)
            for i, source, inv in errors:
                raw_value = columns[source][i] if source in columns else None
                report(i, source, inv, raw_value)
            converted.append(column)

        for source in self.rules.required_sources:
            raw = columns[source]
            inv = Invalid("required", f"{source!r} is required")
            for i in _missing_positions(raw):
                report(i, source, inv, raw[i])

        if self._key_field is not None:
            external_ids = converted[self._key_field]
        else:
            external_ids = _object_array(convert_strings(key_raw))

        # Split accepted from rejected rows and build the tables.
        rejected_pos = sorted(problems)
        rejected = [
            Rejection(index=start_index + i, record=batch[i], errors=problems[i]) for i in rejected_pos
        ]
        rule_counts: dict[str, int] = {}
        for r in rejected:
            for e in r.errors:
                rule_counts[e.rule] = rule_counts.get(e.rule, 0) + 1
        mask: np.ndarray | None = None
        if rejected_pos:
            mask = np.ones(n, dtype=bool)
            mask[rejected_pos] = False
            positions = np.flatnonzero(mask)
        else:
            positions = np.arange(n)
        index = pd.Index(positions + start_index, dtype="int64")

        def take(column: Any) -> Any:
            return column if mask is None else column[mask]

        tables: dict[str, pd.DataFrame] = {}
        ext = pd.Series(take(external_ids), index=index, dtype=object)
        for table, _cols in self.rules.tables().items():
            data: dict[str, Any] = {}
            for f, column in zip(self.fields, converted, strict=True):
                if f.table != table:
                    continue
                col = take(column)
                if isinstance(col, np.ndarray):
                    data[f.column] = pd.Series(col, index=index, dtype=object)
                else:
                    data[f.column] = pd.Series(col, index=index)
            data[EXTERNAL_ID_COLUMN] = ext
            tables[table] = pd.DataFrame(data, index=index)
        return RulesResult(
            tables=tables,
            rejected=rejected,
            accepted_indices=index.tolist(),
            total=n,
            start_index=start_index,
            rule_counts=rule_counts,
        )


def _field_error(source: str, inv: Invalid, raw: Any) -> FieldError:
    if not is_secret_path(source):
        return FieldError(field=source, rule=inv.rule, message=inv.message, value=raw)
    message = inv.message
    if raw is not None:
        shown = show(raw)
        message = message.replace(shown, MASK)
        if str(raw) in message or shown in message:
            message = f"{source!r} failed the {inv.rule} check (value {MASK})"
    return FieldError(field=source, rule=inv.rule, message=message, value=MASK)


def compile_rules(rules: MappingRules | dict[str, Any] | str) -> RulesPlan:
    """Validate (if needed) and compile mapping rules. Raises `RulesError` if they are invalid."""
    return RulesPlan(parse_rules(rules))
