"""The `mapping_rules` document of a catalog row, as a validated pydantic model.

A data engineer writes this JSON by hand in the catalog. It is validated when the row is written
and again when a run loads it; a bad document must put *that* mapping in error with a message
that says which field is wrong and what value it had (``field_mappings.created.type:
'timestap' is not one of string, integer, ...``), never crash the code location. Hence every
problem is collected and raised as one `RulesError`, and pydantic's messages are rewritten into
"path: problem (got value)" form.

Unknown keys are refused everywhere: a misspelt ``validation_rule`` or ``date_fromat`` would
otherwise drop a check or a format without a word. The message names the key and the closest
known one (``validation_rule: unknown key; did you mean 'validation_rules'?``). Keys that start
with ``x-`` are extensions: accepted anywhere a section takes keys and kept (`model_extra`), so a
row can carry settings for a later version without being invalid today.

The sync configuration may be nested under ``sync_config`` (the seed) or written as top-level
keys; `MappingRules.sync` is the normalised view either way.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, replace
from datetime import date
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    PrivateAttr,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from esm_dagster.rules import currencies
from esm_dagster.rules.errors import RulesError
from esm_dagster.rules.formats import DEFAULT_DATE_FORMAT, to_strftime

FieldType = Literal[
    "string", "integer", "decimal", "money", "timestamp", "date", "boolean", "email", "phone_number"
]
FIELD_TYPES: Final[tuple[str, ...]] = (
    "string",
    "integer",
    "decimal",
    "money",
    "timestamp",
    "date",
    "boolean",
    "email",
    "phone_number",
)
TimestampUnit = Literal["s", "ms", "auto"]
MinorUnits = Literal["iso4217", "stripe"]

IDENTIFIER: Final = re.compile(r"^[a-z_][a-z0-9_]*$")
EXTERNAL_ID_COLUMN: Final = "_external_id"
DEFAULT_REGION: Final = "TH"
DEFAULT_TIMEZONE: Final = "UTC"

EXTENSION_PREFIX: Final = "x-"

# The sync keys documented for the top level (every `SyncConfig` field is accepted there; see
# `TOP_LEVEL_SYNC_KEYS`).
SYNC_KEYS: Final[tuple[str, ...]] = (
    "sync_direction",
    "conflict_resolution",
    "batch_size",
    "rate_limiting",
    "stream",
    "key",
    "cron",
    "start_date",
)

# Which per-field options make sense for which type; anything else is a configuration mistake.
_OPTIONS_BY_TYPE: Final[dict[str, frozenset[str]]] = {
    "money": frozenset({"currency", "currency_from", "minor_units"}),
    "timestamp": frozenset({"unit", "format"}),
    "date": frozenset({"unit", "format"}),
    "phone_number": frozenset({"region"}),
}
_TYPED_OPTIONS: Final = frozenset({"currency", "currency_from", "minor_units", "unit", "format", "region"})


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_path(path: str) -> str | None:
    """Reason why `path` is not a usable dot-separated source path, or None."""
    if not isinstance(path, str) or not path:
        return "a source path must be a non-empty string"
    if any(seg == "" for seg in path.split(".")):
        return f"{path!r} is not a valid source path (empty segment)"
    return None


def _check_region(region: str) -> str:
    code = region.strip().upper() if isinstance(region, str) else region
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{region!r} is not an ISO 3166 alpha-2 region known to phonenumbers")
    return str(code)


def _check_currency(code: str) -> str:
    norm = currencies.normalize_code(code)
    if norm is None:
        raise ValueError(f"{code!r} is not an ISO 4217 currency code")
    return norm


class FieldSpec(BaseModel):
    """One entry of `field_mappings`, in object form (a plain ``"table.column"`` is coerced)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str
    type: str | None = None
    required: StrictBool = False
    default: Any = None
    # money
    currency: str | None = None
    currency_from: str | None = None
    minor_units: StrictBool | MinorUnits = False
    # timestamp / date
    unit: TimestampUnit | None = None
    format: str | None = None
    # phone_number
    region: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _plain_target(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"target": data}
        if not isinstance(data, dict):
            raise PydanticCustomError(
                "rules_value",
                "{value} is neither 'table.column' nor an object with a 'target'",
                {"value": _short(data)},
            )
        return data

    @field_validator("target")
    @classmethod
    def _target_identifiers(cls, v: str) -> str:
        parts = v.split(".")
        if len(parts) != 2 or not all(IDENTIFIER.match(p) for p in parts):
            raise ValueError(
                f"{v!r} is not 'table.column' with lower-case SQL identifiers ([a-z_][a-z0-9_]*)"
            )
        if parts[1] == EXTERNAL_ID_COLUMN:
            raise ValueError(f"{v!r}: column {EXTERNAL_ID_COLUMN} is reserved for the record key")
        return v

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str | None) -> str | None:
        if v is not None and v not in FIELD_TYPES:
            raise ValueError(f"{v!r} is not one of {', '.join(FIELD_TYPES)}")
        return v

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str | None) -> str | None:
        return None if v is None else _check_currency(v)

    @field_validator("currency_from")
    @classmethod
    def _currency_from(cls, v: str | None) -> str | None:
        if v is not None and (reason := _check_path(v)):
            raise ValueError(reason)
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        return None if v is None else _check_region(v)

    @field_validator("format")
    @classmethod
    def _format(cls, v: str | None) -> str | None:
        if v is not None:
            to_strftime(v)
        return v


class Transformations(BaseModel):
    """Defaults applied across fields. Only `x-` extension keys may be added (and are kept)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    date_format: str | None = None
    currency: str | None = None
    timezone: str = DEFAULT_TIMEZONE
    default_region: str | None = None

    @field_validator("date_format")
    @classmethod
    def _date_format(cls, v: str | None) -> str | None:
        if v is not None:
            to_strftime(v)
        return v

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str | None) -> str | None:
        return None if v is None else _check_currency(v)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"{v!r} is not an IANA time zone name") from None
        return v

    @field_validator("default_region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        return None if v is None else _check_region(v)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class ValidationRules(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    required_fields: list[str] = Field(default_factory=list)
    data_types: dict[str, str] = Field(default_factory=dict)
    min_pass_rate: float | None = Field(default=None, ge=0, le=1)
    default_region: str | None = None

    @field_validator("data_types")
    @classmethod
    def _types(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [f"{k!r}: {t!r}" for k, t in v.items() if t not in FIELD_TYPES]
        if bad:
            raise ValueError(f"{', '.join(bad)} is not one of {', '.join(FIELD_TYPES)}")
        return v

    @field_validator("default_region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        return None if v is None else _check_region(v)


class RateLimiting(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    requests_per_minute: PositiveInt
    burst_limit: PositiveInt | None = None


_CRON_FIELD = re.compile(r"[0-9A-Za-z*/,\-]+")
_WRITE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class OutboundConfig(BaseModel):
    """Which of the provider's writes (`Provider.WRITES`) carry internal changes back, and how.

    `create` makes a record the provider has not seen, `update` changes one it has; an upsert
    write may be named for both. The record carries the external id under `key_field` (None: an
    upsert by a natural key, which then belongs in `always`). `always` lists source paths sent with
    every write, changed or not (HubSpot's upsert needs `properties.email` each time); `unwrap` is
    a path prefix the read shape has and the write shape has not (HubSpot reads
    `properties.email`, writes `email`). Whether the provider knows the write names is checked when
    the round starts: the rules know no provider.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    create: str | None = None
    update: str | None = None
    key_field: str | None = "id"
    always: list[str] = Field(default_factory=list)
    unwrap: str | None = None
    # A column of the target table the internal application sets when it changes a row: its
    # modification time for `latest_wins`. Without it, that side's time is unknown.
    updated_at_column: str | None = None

    @field_validator("create", "update")
    @classmethod
    def _write_name(cls, v: str | None) -> str | None:
        if v is not None and not _WRITE_NAME.match(v):
            raise ValueError(f"{v!r} is not a write name (lower-case letters, digits and _)")
        return v

    @field_validator("key_field", "unwrap")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and (reason := _check_path(v)):
            raise ValueError(reason)
        return v

    @field_validator("always")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        for path in v:
            if reason := _check_path(path):
                raise ValueError(reason)
        return v

    @field_validator("updated_at_column")
    @classmethod
    def _column(cls, v: str | None) -> str | None:
        if v is not None and not IDENTIFIER.match(v):
            raise ValueError(f"{v!r} is not a lower-case SQL identifier ([a-z_][a-z0-9_]*)")
        return v

    @model_validator(mode="after")
    def _some_write(self) -> OutboundConfig:
        if self.create is None and self.update is None:
            raise ValueError("name the write for creates ('create') or for updates ('update'), or both")
        return self


class SyncConfig(BaseModel):
    """How the mapping is synced. Same shape whether nested or written at the top level."""

    model_config = ConfigDict(extra="allow", frozen=True)

    sync_direction: Literal["inbound", "outbound", "bidirectional"] = "inbound"
    conflict_resolution: Literal["external_wins", "internal_wins", "latest_wins", "manual"] = "external_wins"
    batch_size: int = Field(default=100, ge=1, le=10_000)
    rate_limiting: RateLimiting | None = None
    stream: str | None = None
    key: str = "id"
    cron: str | None = None
    start_date: date | None = None
    error_threshold: int = Field(default=3, ge=1, le=1000)
    max_run_seconds: int = Field(default=3600, ge=10, le=7 * 86400)
    # How long an open circuit (the mapping in `error` after `error_threshold` consecutive failed
    # syncs) refuses syncs without calling the provider, before one half-open trial is let through.
    circuit_cooldown_seconds: int = Field(default=300, ge=1, le=7 * 86400)
    # An incremental run starts this long before the high-water mark: a record whose cursor value
    # (`created`) is older than the moment it becomes listable is still read. Re-reads are upserts.
    lookback_seconds: int = Field(default=300, ge=0, le=7 * 86400)
    # Hosts (names, IPs or CIDR networks) this mapping may reach although they resolve to private
    # addresses (a self-hosted ERP on the LAN); `security.endpoints` explains the policy.
    allowed_hosts: tuple[str, ...] = Field(default=(), max_length=100)
    # A PEM file of the CAs that issued the endpoint's certificate, trusted instead of the public ones.
    ca_bundle: str | None = Field(default=None, min_length=1, max_length=1000)
    # Two-way sync (`sync.twoway`): the writes that push internal changes, where the provider's own
    # modification time of a record is (for `latest_wins`), and what a provider deletion does.
    outbound: OutboundConfig | None = None
    external_updated_at: str | None = None
    delete_mode: Literal["soft", "hard"] = "soft"
    # A reconciliation that finds more than this share of the known records gone deletes nothing:
    # an empty or truncated listing must not empty the table.
    max_delete_share: float = Field(default=0.5, ge=0, le=1)

    @field_validator("external_updated_at")
    @classmethod
    def _external_updated_at(cls, v: str | None) -> str | None:
        if v is not None and (reason := _check_path(v)):
            raise ValueError(reason)
        return v

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if reason := _check_path(v):
            raise ValueError(reason)
        return v

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from esm_dagster.security.endpoints import EndpointRefused, parse_allowed_hosts

        try:
            parse_allowed_hosts(v, source="allowed_hosts")
        except EndpointRefused as exc:
            raise ValueError(str(exc).removeprefix("allowed_hosts: ")) from None
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        fields = v.split()
        if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
            raise ValueError(f"{v!r} is not a 5-field cron expression (minute hour day month weekday)")
        return " ".join(fields)

    @field_validator("start_date", mode="before")
    @classmethod
    def _iso_date(cls, v: Any) -> Any:
        if v is None or isinstance(v, date):
            return v
        if not isinstance(v, str):
            raise ValueError(f"{_short(v)} is not an ISO date (YYYY-MM-DD)")
        try:
            return date.fromisoformat(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an ISO date (YYYY-MM-DD)") from None


# Every sync setting may be written at the top level as well as under `sync_config`.
TOP_LEVEL_SYNC_KEYS: Final[tuple[str, ...]] = tuple(SyncConfig.model_fields)


def _section_keys() -> dict[str, tuple[str, ...]]:
    """Each section of a rules document (by its path) -> the keys it knows."""
    top = ("field_mappings", "transformations", "validation_rules", "sync_config", *TOP_LEVEL_SYNC_KEYS)
    return {
        "": top,
        "transformations": tuple(Transformations.model_fields),
        "validation_rules": tuple(ValidationRules.model_fields),
        "sync_config": tuple(SyncConfig.model_fields),
        "sync_config.rate_limiting": tuple(RateLimiting.model_fields),
        "sync_config.outbound": tuple(OutboundConfig.model_fields),
    }


def _unknown_key(path: str, key: str, own: tuple[str, ...], sections: dict[str, tuple[str, ...]]) -> str:
    """The problem line for an unknown `key` of the section at `path`, with the closest known key."""
    # The section's own keys first, then keys of the other sections under their full path (a
    # `required_fields` written at the top level belongs under `validation_rules`).
    candidates: dict[str, str] = {k: k for k in own}
    for section, keys in sections.items():
        if section != path and not (path == "" and section == "sync_config"):
            for k in keys:
                candidates.setdefault(k, f"{section}.{k}")
    where = f"{path}{key_path(key)}".lstrip(".")
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    if close:
        return (
            f"{where}: unknown key; did you mean {candidates[close[0]]!r}? (extension keys start with 'x-')"
        )
    return f"{where}: unknown key (known: {', '.join(own)}; extension keys start with 'x-')"


def unknown_key_problems(doc: dict[str, Any]) -> list[str]:
    """One problem per key of `doc` (or of one of its sections) that no model field reads.

    Field option objects are checked by `FieldSpec` (extra="forbid"); keys starting with ``x-``
    are extensions and always allowed.
    """
    sections = _section_keys()
    problems: list[str] = []
    parts: list[tuple[str, Any]] = [("", doc)]
    for name in ("transformations", "validation_rules", "sync_config"):
        parts.append((name, doc.get(name)))
    nested_sync = doc.get("sync_config")
    if isinstance(nested_sync, dict):
        parts.append(("sync_config.rate_limiting", nested_sync.get("rate_limiting")))
    if "rate_limiting" in doc:  # written at the top level: reported where it was written
        parts.append(("rate_limiting", doc.get("rate_limiting")))
    for path, section in parts:
        if not isinstance(section, dict):
            continue  # a section of the wrong type is reported by the model
        own = sections["sync_config.rate_limiting" if path == "rate_limiting" else path]
        for key in section:
            text = str(key)
            if text in own or text.startswith(EXTENSION_PREFIX):
                continue
            problems.append(_unknown_key(path, text, own, sections))
    return problems


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """One field mapping with every default resolved: what the compiled plan runs on."""

    source: str
    table: str
    column: str
    type: str
    required: bool = False
    default: Any = None
    unit: str = "auto"
    date_format: str = DEFAULT_DATE_FORMAT  # strftime pattern (date parsing / timestamp format)
    format_label: str = "YYYY-MM-DD"  # the format as the user wrote it, for messages
    timestamp_format: str | None = None  # strftime pattern if the timestamp declares one
    region: str = DEFAULT_REGION
    currency: str | None = None
    currency_from: str | None = None
    minor_units: str | None = None  # None, "iso4217" or "stripe"

    @property
    def target(self) -> str:
        return f"{self.table}.{self.column}"


class MappingRules(BaseModel):
    """A validated `mapping_rules` document. Build it with `parse_rules`."""

    model_config = ConfigDict(extra="allow", frozen=True)

    field_mappings: dict[str, FieldSpec] = Field(min_length=1)
    transformations: Transformations = Field(default_factory=Transformations)
    validation_rules: ValidationRules = Field(default_factory=ValidationRules)
    sync_config: SyncConfig = Field(default_factory=SyncConfig)

    _fields: tuple[FieldMapping, ...] = PrivateAttr(default=())
    _required_sources: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="before")
    @classmethod
    def _lift_sync_keys(cls, data: Any) -> Any:
        """Accept the sync configuration as top-level keys as well as under `sync_config`."""
        if not isinstance(data, dict):
            return data
        top = {k: data[k] for k in TOP_LEVEL_SYNC_KEYS if k in data}
        if not top:
            return data
        nested = data.get("sync_config")
        if nested is None:
            nested = {}
        if not isinstance(nested, dict):
            return data  # let field validation report it
        clashes = [k for k in top if k in nested and nested[k] != top[k]]
        if clashes:
            raise PydanticCustomError(
                "rules_invalid",
                "{problems}",
                {
                    "problems": "\n".join(
                        f"{k}: {_short(top[k])} conflicts with sync_config.{k} = {_short(nested[k])}"
                        for k in clashes
                    )
                },
            )
        rest = {k: v for k, v in data.items() if k not in TOP_LEVEL_SYNC_KEYS}
        rest["sync_config"] = {**nested, **top}
        return rest

    @field_validator("field_mappings")
    @classmethod
    def _source_paths(cls, v: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        for source in v:
            if reason := _check_path(source):
                raise ValueError(reason)
        return v

    @model_validator(mode="after")
    def _resolve(self) -> MappingRules:
        problems: list[str] = []
        fields = self._resolve_fields(problems)
        self._check_duplicates(fields, problems)
        required_sources = self._resolve_required(fields, problems)
        if problems:
            raise PydanticCustomError("rules_invalid", "{problems}", {"problems": "\n".join(problems)})
        self._fields = tuple(fields)
        self._required_sources = tuple(required_sources)
        return self

    # -- resolution helpers ---------------------------------------------------------------

    def _type_from_data_types(self, source: str, table: str, column: str) -> tuple[str | None, str | None]:
        """(type, the data_types key it came from) for one mapping, by source, target or column."""
        dt = self.validation_rules.data_types
        for key in (source, f"{table}.{column}", column):
            if key in dt:
                return dt[key], key
        return None, None

    def _resolve_fields(self, problems: list[str]) -> list[FieldMapping]:
        tr = self.transformations
        vr = self.validation_rules
        default_format_label = tr.date_format or "YYYY-MM-DD"
        default_format = to_strftime(tr.date_format) if tr.date_format else DEFAULT_DATE_FORMAT
        default_region = tr.default_region or vr.default_region or DEFAULT_REGION
        out: list[FieldMapping] = []
        for source, spec in self.field_mappings.items():
            where = f"field_mappings{key_path(source)}"
            table, column = spec.target.split(".")
            dt_type, dt_key = self._type_from_data_types(source, table, column)
            if spec.type is not None and dt_type is not None and dt_type != spec.type:
                problems.append(
                    f"{where}.type: {spec.type!r} conflicts with validation_rules.data_types"
                    f"{key_path(dt_key or source)} = {dt_type!r}"
                )
            ftype = spec.type or dt_type or "string"
            given = {k for k in _TYPED_OPTIONS if k in spec.model_fields_set}
            allowed = _OPTIONS_BY_TYPE.get(ftype, frozenset())
            for opt in sorted(given - allowed):
                problems.append(
                    f"{where}.{opt}: option {opt!r} (= {_short(getattr(spec, opt))}) "
                    f"does not apply to type {ftype!r}"
                )
            minor: str | None
            if spec.minor_units is True:
                minor = "iso4217"
            elif spec.minor_units is False:
                minor = None
            else:
                minor = spec.minor_units
            if ftype == "money" and not (spec.currency_from or spec.currency or tr.currency):
                problems.append(
                    f"{where}: a money field needs 'currency_from', 'currency' or transformations.currency"
                )
            fmt_label, fmt = default_format_label, default_format
            ts_format: str | None = None
            if spec.format is not None:
                fmt_label, fmt = spec.format, to_strftime(spec.format)
                if ftype == "timestamp":
                    ts_format = fmt
            out.append(
                FieldMapping(
                    source=source,
                    table=table,
                    column=column,
                    type=ftype,
                    required=spec.required,
                    default=spec.default,
                    unit=spec.unit or "auto",
                    date_format=fmt,
                    format_label=fmt_label,
                    timestamp_format=ts_format,
                    region=spec.region or default_region,
                    currency=spec.currency or (None if spec.currency_from else tr.currency),
                    currency_from=spec.currency_from,
                    minor_units=minor,
                )
            )
        # data_types entries that name nothing are most likely typos.
        known = {f.source for f in out} | {f.target for f in out} | {f.column for f in out}
        for key in self.validation_rules.data_types:
            if key not in known:
                problems.append(
                    f"validation_rules.data_types{key_path(key)}: {key!r} is not a mapped source "
                    "path, target or column"
                )
        return out

    @staticmethod
    def _check_duplicates(fields: list[FieldMapping], problems: list[str]) -> None:
        seen: dict[str, str] = {}
        for f in fields:
            if f.target in seen:
                problems.append(
                    f"field_mappings{key_path(f.source)}: target {f.target!r} is already mapped "
                    f"from {seen[f.target]!r}"
                )
            else:
                seen[f.target] = f.source

    def _resolve_required(self, fields: list[FieldMapping], problems: list[str]) -> list[str]:
        """Mark required fields; return required source paths that are not mapped.

        Each entry is resolved as a source path, then a target ``table.column``, then a bare
        target column (which must name a single column). An entry matching none of them is kept
        as an unmapped source path that must be present in every record.
        """
        by_source = {f.source: i for i, f in enumerate(fields)}
        by_target = {f.target: i for i, f in enumerate(fields)}
        by_column: dict[str, list[int]] = {}
        for i, f in enumerate(fields):
            by_column.setdefault(f.column, []).append(i)
        unmapped: list[str] = []
        for n, entry in enumerate(self.validation_rules.required_fields):
            where = f"validation_rules.required_fields[{n}]"
            if reason := _check_path(entry):
                problems.append(f"{where}: {reason}")
                continue
            if entry in by_source:
                idx = by_source[entry]
            elif entry in by_target:
                idx = by_target[entry]
            elif entry in by_column:
                candidates = by_column[entry]
                if len(candidates) > 1:
                    targets = ", ".join(fields[i].target for i in candidates)
                    problems.append(f"{where}: {entry!r} is ambiguous ({targets}); write table.column")
                    continue
                idx = candidates[0]
            else:
                if entry not in unmapped:
                    unmapped.append(entry)
                continue
            f = fields[idx]
            if not f.required:
                fields[idx] = replace(f, required=True)
        return unmapped

    # -- public views ---------------------------------------------------------------------

    @property
    def fields(self) -> tuple[FieldMapping, ...]:
        """Resolved field mappings, in document order."""
        return self._fields

    @property
    def required_sources(self) -> tuple[str, ...]:
        """Required source paths that are not mapped to a column (presence check only)."""
        return self._required_sources

    @property
    def sync(self) -> SyncConfig:
        """The sync configuration, whether it was nested or written at the top level."""
        return self.sync_config

    def tables(self) -> dict[str, dict[str, str]]:
        """Target table -> column -> field type, in document order."""
        out: dict[str, dict[str, str]] = {}
        for f in self._fields:
            out.setdefault(f.table, {})[f.column] = f.type
        return out


def key_path(key: str) -> str:
    """A dict key rendered as a path step: `.created`, or `["address.city"]` when ambiguous."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f".{key}"
    return f"[{json.dumps(key, ensure_ascii=False)}]"


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else key_path(part)
    return out.lstrip(".")


def _problems_from(exc: ValidationError, doc: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    lifted = {
        k
        for k in TOP_LEVEL_SYNC_KEYS
        if k in doc and not (isinstance(doc.get("sync_config"), dict) and k in doc["sync_config"])
    }
    for err in exc.errors(include_url=False):
        etype = err["type"]
        if etype == "rules_invalid":
            problems.extend(str(err.get("ctx", {}).get("problems", err["msg"])).split("\n"))
            continue
        loc = tuple(err["loc"])
        # Errors on sync keys the user wrote at the top level are reported where they wrote them.
        if len(loc) >= 2 and loc[0] == "sync_config" and loc[1] in lifted:
            loc = loc[1:]
        path = _format_loc(loc) or "mapping_rules"
        msg = err["msg"]
        if etype in ("value_error", "rules_value"):
            problems.append(f"{path}: {msg.removeprefix('Value error, ')}")
        elif etype == "missing":
            problems.append(f"{path}: required")
        elif etype == "extra_forbidden":
            problems.append(f"{path}: unknown option (= {_short(err.get('input'))})")
        elif etype in ("tuple_type", "list_type"):  # lists are tuples inside: say what the user writes
            problems.append(f"{path}: should be a list (got {_short(err.get('input'))})")
        else:
            problems.append(f"{path}: {msg} (got {_short(err.get('input'))})")
    return problems


def parse_rules(doc: dict[str, Any] | str | bytes | MappingRules) -> MappingRules:
    """Validate a `mapping_rules` document (dict or JSON text) into `MappingRules`.

    Raises `RulesError` listing every problem as "field.path: what is wrong (value)".
    """
    if isinstance(doc, MappingRules):
        return doc
    if isinstance(doc, str | bytes):
        try:
            doc = json.loads(doc)
        except json.JSONDecodeError as exc:
            raise RulesError(f"mapping_rules: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict):
        raise RulesError(f"mapping_rules: expected a JSON object, got {_short(doc)}")
    unknown = unknown_key_problems(doc)
    try:
        rules = MappingRules.model_validate(doc)
    except ValidationError as exc:
        raise RulesError(unknown + _problems_from(exc, doc)) from None
    if unknown:
        raise RulesError(unknown)
    # `default` options are checked by running them through the field's converter, which lives
    # in the plan (imported here, not at module level: the plan depends on this module).
    from esm_dagster.rules.plan import RulesPlan

    RulesPlan(rules)
    return rules
