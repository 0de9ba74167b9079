"""Writing and reading mapping rows: the only place credentials are encrypted on the way in.

`MappingSpec` is the load-time view of a row that Dagster definitions are built from: it holds
what the asset graph needs (names, frequency, timezone, priority) and never the credentials.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import difflib
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import select
from sqlalchemy.orm import Session

from esm_dagster.catalog import audit
from esm_dagster.catalog.models import (
    AuthenticationType,
    ExternalSystemMapping,
    SyncFrequency,
    SyncStatus,
    SystemType,
    User,
)
from esm_dagster.catalog.types import utc_stamp, utcnow
from esm_dagster.rules.schema import MappingRules, RulesError, parse_rules
from esm_dagster.security.endpoints import EndpointPolicy, EndpointRefused
from esm_dagster.security.input_limits import InputTooLarge, check_json_limits
from esm_dagster.security.vault import Vault


class MappingError(ValueError):
    """A mapping row or input that cannot be used; the message names the mapping and the field."""


def json_native(value: Any) -> Any:
    """`value` with YAML's dates and datetimes as ISO strings.

    YAML reads an unquoted `start_date: 2026-01-01` as a `date`, which the rules accept but the
    JSON column cannot store: the row would fail at INSERT with a dump of the statement instead.
    """
    if isinstance(value, dict):
        return {k: json_native(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_native(v) for v in value]
    if isinstance(value, dt.date):  # datetime is a date too
        return value.isoformat()
    return value


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    if not slug:
        raise MappingError(f"system_name {name!r} has no letters or digits to build an asset key from")
    if slug[0].isdigit():
        slug = f"s_{slug}"
    return slug


class MappingInput(BaseModel):
    """One mapping as written in a YAML/JSON file for `esm mapping add`."""

    model_config = ConfigDict(extra="forbid")

    system_name: str = Field(min_length=1, max_length=100)
    system_type: SystemType
    provider_name: str = Field(min_length=1, max_length=100)
    api_endpoint: str = Field(min_length=1, max_length=500)
    api_version: str | None = None
    authentication_type: AuthenticationType
    credentials: dict[str, str] = Field(default_factory=dict, repr=False)
    mapping_rules: dict[str, Any]
    sync_frequency: SyncFrequency = SyncFrequency.DAILY
    sync_status: SyncStatus = SyncStatus.ACTIVE
    is_active: bool = True
    priority: int = Field(default=5, ge=0, le=100)
    timeout_seconds: int = Field(default=30, ge=1, le=3600)
    retry_attempts: int = Field(default=3, ge=0, le=20)
    created_by: str | None = None  # email of a catalog user

    @field_validator("provider_name")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()

    @field_validator("mapping_rules", "credentials", mode="before")
    @classmethod
    def _bounded(cls, value: Any, info: ValidationInfo) -> Any:
        """Measured before pydantic walks it: a deep document must fail here, not in a RecursionError."""
        try:
            check_json_limits(value, str(info.field_name))
        except InputTooLarge as exc:
            raise PydanticCustomError("input_too_large", exc.relative()) from None
        return json_native(value) if info.field_name == "mapping_rules" else value

    def __repr_args__(self):  # type: ignore[no-untyped-def,unused-ignore]
        for name, value in super().__repr_args__():
            yield (name, "***" if name == "credentials" else value)


def _leaf_strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _leaf_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _leaf_strings(v)]
    return [value] if isinstance(value, str) else []


def validation_problems(
    exc: Any, document: Mapping[str, Any], known: Sequence[str] = (), unknown: str = "unknown key"
) -> str:
    """pydantic errors of a mapping document as "field: problem (got value)", secret-free.

    A value is shown only when it is a scalar outside `credentials`: a missing field's "input" is
    the whole document and an unknown key's is its value, so both are named without their input
    (a misspelt `credential:` must not print the key it holds). Every string under `credentials`
    is also scrubbed from the text, whatever its shape.
    """
    from esm_dagster.security.redact import redact_text

    parts = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"]) or "input"
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(e["loc"][-1]), list(known), n=1, cutoff=0.6)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else (f" (known: {', '.join(known)})" if known else "")
            )
            parts.append(f"{where}: {unknown}{hint}")
            continue
        text = f"{where}: {e['msg']}"
        value = e.get("input")
        if e["type"] != "missing" and "credentials" not in e["loc"] and not isinstance(value, dict | list):
            text += f" (got {value!r})"
        parts.append(text)
    return redact_text("; ".join(parts), extra=_leaf_strings(document.get("credentials")))


def rules_problem(system_name: str, exc: RulesError) -> str:
    """ "mapping 'X': mapping_rules.<path>: <problem>" for a rules document that does not validate."""
    text = str(exc)
    return f"mapping {system_name!r}: {'' if text.startswith('mapping_rules') else 'mapping_rules.'}{text}"


def _strings_with_paths(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(where, text) of every key and string value of a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{path} (a key)", str(key)
            yield from _strings_with_paths(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings_with_paths(item, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value


def refuse_pasted_credentials(system_name: str, document: Any, credentials: Sequence[str]) -> None:
    """Refuse rules that hold a credential: `mapping_rules` is stored and shown in clear text.

    A key pasted into a field path or a filter would otherwise sit unencrypted in the catalog, in
    every rules error and in the Dagster UI. The mapping's own credential values are looked for
    as they are, other keys by their shape; the message names the place, never the value.
    """
    from esm_dagster.security.redact import redact_text

    known = [c for c in credentials if len(c) >= 8]
    for where, text in _strings_with_paths(document, "mapping_rules"):
        if any(c in text for c in known) or redact_text(text) != text:
            raise MappingError(
                f"mapping {system_name!r}: {where} holds a credential; credentials belong in "
                "`credentials` (encrypted), not in the rules"
            )


def _rules_or_error(system_name: str, document: Any) -> MappingRules:
    try:
        return parse_rules(document)
    except RulesError as exc:
        raise MappingError(rules_problem(system_name, exc)) from None


def stream_of(row_provider: str, rules: MappingRules) -> str:
    from esm_dagster.providers.factory import resolve_stream

    return resolve_stream(row_provider, rules.sync.stream, rules)


def find_mapping(session: Session, system_name: str, stream: str) -> ExternalSystemMapping | None:
    for row in session.scalars(
        select(ExternalSystemMapping).where(ExternalSystemMapping.system_name == system_name)
    ):
        try:
            if stream_of(row.provider_name, parse_rules(row.mapping_rules)) == stream:
                return row
        except (RulesError, MappingError, LookupError, ValueError):
            continue
    return None


def upsert_mapping(session: Session, vault: Vault, item: MappingInput) -> tuple[ExternalSystemMapping, bool]:
    """Create or update the mapping identified by (system_name, stream); returns (row, created).

    A problem raises `MappingError` with every credential value of the input scrubbed: a key
    pasted into the wrong place (a rules value, a target) must not come back in the message.
    """
    try:
        return _upsert_mapping(session, vault, item)
    except MappingError as exc:
        raise MappingError(_scrubbed(str(exc), item.credentials)) from None


def _scrubbed(text: str, credentials: Mapping[str, Any] | None) -> str:
    from esm_dagster.security.redact import redact_text

    return redact_text(text, extra=_leaf_strings(dict(credentials or {})))


def _check_endpoint(system_name: str, api_endpoint: str, rules: MappingRules | None) -> None:
    """The rule every request enforces, checked now rather than at the first sync (no DNS yet)."""
    allowed = rules.sync.allowed_hosts if rules is not None else ()
    try:
        EndpointPolicy.from_env(mapping=repr(system_name), allowed_hosts=allowed).check_url(api_endpoint)
    except EndpointRefused as exc:
        raise MappingError(str(exc)) from None


def _check_authentication(
    system_name: str,
    provider_name: str,
    auth_type: str,
    credentials: Mapping[str, Any],
    rules: MappingRules | None,
) -> None:
    """The provider takes this `authentication_type` and the credentials have the fields it needs."""
    from esm_dagster.providers import get_provider_class
    from esm_dagster.providers.auth_types import authentication_problem

    try:
        cls = get_provider_class(provider_name)
        problem = authentication_problem(
            cls, provider_name, auth_type, credentials, mapping=system_name, rules=rules
        )
    except LookupError as exc:
        raise MappingError(f"mapping {system_name!r}: provider_name: {exc}") from None
    except ValueError as exc:  # a provider configured by its rules (`rest`) whose block is wrong
        raise MappingError(f"mapping {system_name!r}: mapping_rules.{exc}") from None
    if problem is not None:
        raise MappingError(problem)


def _check_limits(system_name: str, **documents: Any) -> None:
    try:
        for field, document in documents.items():
            if document is not None:
                check_json_limits(document, field)
    except InputTooLarge as exc:
        raise MappingError(f"mapping {system_name!r}: {exc}") from None


def _upsert_mapping(session: Session, vault: Vault, item: MappingInput) -> tuple[ExternalSystemMapping, bool]:
    _check_limits(item.system_name, mapping_rules=item.mapping_rules, credentials=item.credentials)
    rules = _rules_or_error(item.system_name, item.mapping_rules)  # its errors are scrubbed by the caller
    refuse_pasted_credentials(item.system_name, item.mapping_rules, _leaf_strings(item.credentials))
    _check_endpoint(item.system_name, item.api_endpoint, rules)
    try:
        stream = stream_of(item.provider_name, rules)
    except LookupError as exc:  # unknown provider
        raise MappingError(f"mapping {item.system_name!r}: provider_name: {exc}") from None
    except ValueError as exc:  # unknown stream
        raise MappingError(f"mapping {item.system_name!r}: mapping_rules.{exc}") from None
    _check_authentication(
        item.system_name, item.provider_name, item.authentication_type, item.credentials, rules
    )
    owner = None
    if item.created_by:
        owner = session.scalar(select(User).where(User.email == item.created_by, User.role.is_not(None)))
        if owner is None:
            raise MappingError(
                f"mapping {item.system_name!r}: created_by {item.created_by!r} is not a catalog user"
            )
    row = find_mapping(session, item.system_name, stream)
    created = row is None
    if row is None:
        row = ExternalSystemMapping(id=uuid.uuid4(), system_name=item.system_name)
    row.system_type = item.system_type
    row.provider_name = item.provider_name
    row.api_endpoint = item.api_endpoint
    row.api_version = item.api_version
    row.authentication_type = item.authentication_type
    credentials_changed = created or not _same_credentials(vault, row, item.credentials)
    if credentials_changed:  # re-adding the same file keeps the ciphertext: nothing changed
        row.credentials = vault.encrypt(item.credentials)
    row.mapping_rules = item.mapping_rules
    row.sync_frequency = item.sync_frequency
    # Re-adding a file must not undo a person's `disable`/`maintenance` or lift an `error` that
    # only a successful sync may lift: an existing row keeps its state unless the file sets it.
    if created or "sync_status" in item.model_fields_set:
        row.sync_status = item.sync_status
    if created or "is_active" in item.model_fields_set:
        row.is_active = item.is_active
    _make_status_coherent(row, "is_active" in item.model_fields_set)
    row.priority = item.priority
    row.timeout_seconds = item.timeout_seconds
    row.retry_attempts = item.retry_attempts
    row.created_by_user_id = owner.id if owner else row.created_by_user_id
    row.updated_at = utcnow()
    if created:
        session.add(row)
    session.flush()
    fields = sorted(item.credentials)
    audit.record(session, "mapping.created" if created else "mapping.edited", row, details={"from": "file"})
    if fields and credentials_changed:
        audit.record(session, "credentials.changed", row, details={"fields": fields})
    return row, created


def _same_credentials(vault: Vault, row: ExternalSystemMapping, credentials: Mapping[str, Any]) -> bool:
    """Whether the row already holds exactly these credentials (False when they cannot be opened)."""
    from esm_dagster.security.vault import VaultError

    if not row.credentials:
        return not credentials
    try:
        stored = vault.decrypt(row.credentials, mapping=repr(row.system_name))
    except VaultError:
        return False
    return {k: v.reveal() for k, v in stored.items()} == {k: str(v) for k, v in credentials.items()}


@dataclasses.dataclass(frozen=True)
class MappingSpec:
    """What definitions need from a row; serialisable, credential-free."""

    id: str
    system_name: str
    system_slug: str
    system_type: str
    provider_name: str
    stream: str
    sync_frequency: str
    timezone: str
    sync_status: str
    is_active: bool
    priority: int
    timeout_seconds: int
    retry_attempts: int
    owner_email: str | None = None
    error: str | None = None
    cron: str | None = None  # sync_config.cron: overrides the frequency's default cadence
    start_date: str | None = None  # sync_config.start_date (ISO): the first partition
    min_pass_rate: float | None = None  # validation_rules.min_pass_rate for the pass-rate check
    requests_per_minute: int | None = None  # sync_config.rate_limiting: the API budget
    max_run_seconds: int = 3600  # sync_config.max_run_seconds: Dagster's run monitoring stops it
    error_threshold: int = 3  # sync_config.error_threshold: consecutive failures before `error`

    @property
    def asset_key_path(self) -> list[str]:
        return ["esm", self.system_slug, self.stream]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MappingSpec:
        return cls(**data)


def spec_from_row(row: ExternalSystemMapping, owner_email: str | None = None) -> MappingSpec:
    error = None
    stream = "unknown"
    timezone = "UTC"
    slug = "invalid"
    rules: MappingRules | None = None
    try:
        slug = slugify(row.system_name)
        rules = _rules_or_error(row.system_name, row.mapping_rules)
        stream = stream_of(row.provider_name, rules)
        timezone = rules.transformations.timezone or "UTC"
    except (MappingError, ValueError, LookupError) as exc:
        error = str(exc) if str(exc).startswith("mapping ") else f"mapping {row.system_name!r}: {exc}"
    return MappingSpec(
        id=str(row.id),
        system_name=row.system_name,
        system_slug=slug,
        system_type=str(row.system_type),
        provider_name=row.provider_name,
        stream=stream,
        sync_frequency=str(row.sync_frequency),
        timezone=timezone,
        sync_status=str(row.sync_status),
        is_active=bool(row.is_active),
        priority=row.priority,
        timeout_seconds=row.timeout_seconds,
        retry_attempts=row.retry_attempts,
        owner_email=owner_email,
        error=error,
        cron=rules.sync.cron if rules else None,
        start_date=rules.sync.start_date.isoformat() if rules and rules.sync.start_date else None,
        min_pass_rate=rules.validation_rules.min_pass_rate if rules else None,
        max_run_seconds=rules.sync.max_run_seconds if rules else 3600,
        error_threshold=rules.sync.error_threshold if rules else DEFAULT_ERROR_THRESHOLD,
        requests_per_minute=(
            rules.sync.rate_limiting.requests_per_minute if rules and rules.sync.rate_limiting else None
        ),
    )


def load_specs(session: Session) -> list[MappingSpec]:
    rows = session.execute(
        select(ExternalSystemMapping, User.email)
        .outerjoin(User, User.id == ExternalSystemMapping.created_by_user_id)
        .order_by(ExternalSystemMapping.priority, ExternalSystemMapping.system_name)
    ).all()
    return [spec_from_row(row, email) for row, email in rows]


def mark_error(session: Session, mapping_id: str | uuid.UUID, message: str) -> None:
    """Put a mapping in `error` with a message; counts one failure."""
    row = session.get(ExternalSystemMapping, uuid.UUID(str(mapping_id)))
    if row is None:
        return
    if row.sync_status == SyncStatus.ERROR and row.last_error_message == message:
        return  # already reported: a reload must not inflate the counter
    row.sync_status = SyncStatus.ERROR
    row.last_error_message = message[:4000]
    row.error_count = (row.error_count or 0) + 1
    row.updated_at = utcnow()


# Consecutive failed syncs after which a mapping goes to `error` (sync_config.error_threshold).
DEFAULT_ERROR_THRESHOLD = 3


def record_failure(
    session: Session, mapping_id: str | uuid.UUID, message: str, *, threshold: int = DEFAULT_ERROR_THRESHOLD
) -> ExternalSystemMapping | None:
    """Count one failed sync; the row goes to `error` once `threshold` failures are consecutive."""
    row = session.get(ExternalSystemMapping, uuid.UUID(str(mapping_id)))
    if row is None:
        return None
    row.error_count = (row.error_count or 0) + 1
    row.last_error_message = message[:4000]
    if row.error_count >= threshold and row.sync_status == SyncStatus.ACTIVE:
        row.sync_status = SyncStatus.ERROR
    row.updated_at = utcnow()
    return row


# Tasks a success settles: the provider took the credentials and the mapping is no longer stuck.
SETTLED_BY_SUCCESS: tuple[str, ...] = ("credentials", "stuck_in_error")


def record_recovery(session: Session, mapping_id: str | uuid.UUID, resolution: str) -> bool:
    """A sync or probe succeeded: `record_success`, and close the tasks that success settles.

    Returns True when the row was in `error` (an error episode ended: the caller alerts "recovered").
    Both paths back to health (a successful sync and a successful probe) go through here, so a
    mapping repaired by a manual sync closes its credentials task like a probe would.
    """
    from esm_dagster.catalog.tasks import close_tasks

    row = session.get(ExternalSystemMapping, uuid.UUID(str(mapping_id)))
    if row is None:
        return False
    was_error = row.sync_status == SyncStatus.ERROR
    record_success(session, row.id)
    close_tasks(session, row.id, resolution, reasons=SETTLED_BY_SUCCESS)
    return was_error


def record_success(session: Session, mapping_id: str | uuid.UUID) -> ExternalSystemMapping | None:
    """A sync or probe succeeded: reset the failure streak; an `error` row becomes `active`.

    `maintenance` and `inactive` are a person's decision and stay as they are.
    """
    row = session.get(ExternalSystemMapping, uuid.UUID(str(mapping_id)))
    if row is None:
        return None
    row.last_sync_at = utcnow()
    row.error_count = 0
    row.last_error_message = None
    if row.sync_status == SyncStatus.ERROR:
        row.sync_status = SyncStatus.ACTIVE
    row.updated_at = utcnow()
    return row


# `esm mapping list` shows ids this long; a prefix of at least this many characters selects a row.
SHORT_ID_LENGTH = 8
_ID_PREFIX = re.compile(r"[0-9a-f-]+")


def short_id(mapping_id: str | uuid.UUID) -> str:
    return str(mapping_id)[:SHORT_ID_LENGTH]


def get_mapping(session: Session, ref: str) -> ExternalSystemMapping:
    """Find a mapping by id, by `system/stream`, by a unique system name, or by a unique id prefix
    (at least `SHORT_ID_LENGTH` characters, as `esm mapping list` shows)."""
    try:
        row = session.get(ExternalSystemMapping, uuid.UUID(ref))
        if row is not None:
            return row
    except ValueError:
        pass
    rows: Sequence[ExternalSystemMapping] = session.scalars(select(ExternalSystemMapping)).all()
    wanted = ref.strip().lower()
    matches = []
    for row in rows:
        spec = spec_from_row(row)
        paths = (f"{spec.system_slug}/{spec.stream}", f"{row.system_name.lower()}/{spec.stream}")
        if wanted in (*paths, "/".join(spec.asset_key_path)):
            return row
        if wanted in (row.system_name.lower(), spec.system_slug):
            matches.append(row)
    if len(matches) == 1:
        return matches[0]
    if not matches and len(wanted) >= SHORT_ID_LENGTH and _ID_PREFIX.fullmatch(wanted):
        by_id = [
            r for r in rows if str(r.id).startswith(wanted) or str(r.id).replace("-", "").startswith(wanted)
        ]
        if len(by_id) == 1:
            return by_id[0]
        if by_id:
            raise MappingError(f"id prefix {ref!r} matches {len(by_id)} mappings; give more of the id")
    if not matches:
        raise MappingError(f"no mapping named {ref!r} (use an id, a system name or system/stream)")
    raise MappingError(f"{ref!r} names {len(matches)} mappings; use system/stream or the id")


def age(moment: dt.datetime | None) -> str:
    return "never" if moment is None else utc_stamp(moment)


def _make_status_coherent(row: ExternalSystemMapping, active_given: bool) -> None:
    """`is_active=false` and status `inactive` mean the same thing; make the row say it once.

    When both were given and disagree, `is_active` (the switch a person flips) decides.
    """
    if active_given or row.sync_status != SyncStatus.INACTIVE:
        if not row.is_active:
            row.sync_status = SyncStatus.INACTIVE
        elif row.sync_status == SyncStatus.INACTIVE:
            row.sync_status = SyncStatus.ACTIVE
    else:
        row.is_active = False


def set_active(session: Session, row: ExternalSystemMapping, active: bool) -> str:
    """Enable or disable a mapping; returns its new status.

    Disabling makes the row `inactive` (no asset, schedule or probe). Enabling lifts `inactive`
    and `maintenance` (a person's pause) back to `active`; a row in `error` stays in error, since
    only a successful sync or health probe proves it healthy.
    """
    row.is_active = active
    if not active:
        row.sync_status = SyncStatus.INACTIVE
    elif row.sync_status in (SyncStatus.INACTIVE, SyncStatus.MAINTENANCE):
        row.sync_status = SyncStatus.ACTIVE
    row.updated_at = utcnow()
    session.flush()
    audit.record(
        session,
        "mapping.enabled" if active else "mapping.disabled",
        row,
        details={"status": str(row.sync_status)},
    )
    return str(row.sync_status)


class MappingEdit(BaseModel):
    """The columns `esm mapping edit --set` may change, typed and bounded as `MappingInput` is."""

    model_config = ConfigDict(extra="forbid")

    system_name: str | None = Field(default=None, min_length=1, max_length=100)
    api_endpoint: str | None = Field(default=None, min_length=1, max_length=500)
    api_version: str | None = None
    authentication_type: AuthenticationType | None = None
    sync_frequency: SyncFrequency | None = None
    sync_status: SyncStatus | None = None
    priority: int | None = Field(default=None, ge=0, le=100)
    timeout_seconds: int | None = Field(default=None, ge=1, le=3600)
    retry_attempts: int | None = Field(default=None, ge=0, le=20)


EDITABLE_COLUMNS: tuple[str, ...] = tuple(MappingEdit.model_fields)


def edit_mapping(
    session: Session,
    row: ExternalSystemMapping,
    changes: Mapping[str, Any],
    *,
    mapping_rules: dict[str, Any] | None = None,
    credentials: dict[str, str] | None = None,
    vault: Vault | None = None,
) -> list[str]:
    """Change some columns of one row, checked as `upsert_mapping` checks a whole row.

    Returns the names of the columns changed. Every problem raises `MappingError` naming the
    mapping, the column and the value (new credentials scrubbed), and nothing is written.
    """
    try:
        return _edit_mapping(session, row, changes, mapping_rules, credentials, vault)
    except MappingError as exc:
        raise MappingError(_scrubbed(str(exc), credentials)) from None


def _edit_mapping(
    session: Session,
    row: ExternalSystemMapping,
    changes: Mapping[str, Any],
    mapping_rules: dict[str, Any] | None,
    credentials: dict[str, str] | None,
    vault: Vault | None,
) -> list[str]:
    from pydantic import ValidationError

    name = row.system_name
    _check_limits(name, mapping_rules=mapping_rules, credentials=credentials)
    if mapping_rules is not None:
        mapping_rules = json_native(mapping_rules)
    try:
        edit = MappingEdit.model_validate(dict(changes))
    except ValidationError as exc:
        problems = validation_problems(exc, {}, EDITABLE_COLUMNS, unknown="not an editable column")
        raise MappingError(f"mapping {name!r}: {problems}") from None
    values = edit.model_dump(exclude_unset=True)
    if values.get("system_name") not in (None, name):
        new_name = values["system_name"]
        slugify(new_name)
        stream = spec_from_row(row).stream
        other = find_mapping(session, new_name, stream)
        if other is not None and other.id != row.id:
            raise MappingError(
                f"mapping {name!r}: system_name: {new_name!r} already has a {stream!r} mapping ({other.id})"
            )
    if mapping_rules is not None:
        rules = _rules_or_error(name, mapping_rules)
        refuse_pasted_credentials(name, mapping_rules, _leaf_strings(credentials or {}))
        try:
            new_stream = stream_of(row.provider_name, rules)
        except ValueError as exc:
            raise MappingError(f"mapping {name!r}: mapping_rules.{exc}") from None
        old = spec_from_row(row)
        if old.error is None and new_stream != old.stream:
            raise MappingError(
                f"mapping {name!r}: mapping_rules.sync_config.stream: {new_stream!r} would change the "
                f"stream from {old.stream!r} (its asset, cursor and synced rows); add a new mapping instead"
            )
        values["mapping_rules"] = mapping_rules
    if "api_endpoint" in values or mapping_rules is not None:  # a new endpoint or a new allowlist
        current_rules: MappingRules | None = None  # the row's own rules may be broken: no allowlist
        with contextlib.suppress(RulesError):
            current_rules = parse_rules(mapping_rules if mapping_rules is not None else row.mapping_rules)
        _check_endpoint(name, values.get("api_endpoint", row.api_endpoint), current_rules)
    if credentials is not None or values.get("authentication_type") not in (None, row.authentication_type):
        _recheck_authentication(session, row, values, mapping_rules, credentials, vault)
    if "sync_status" in values:  # `inactive` is `disable`; any other status is an enabled row
        values["is_active"] = values["sync_status"] != SyncStatus.INACTIVE
    changed = []
    for column, value in values.items():
        if getattr(row, column) != value:
            setattr(row, column, value)
            changed.append(column)
    if credentials is not None:
        if vault is None:
            raise MappingError(f"mapping {name!r}: credentials given without a vault to encrypt them")
        row.credentials = vault.encrypt(credentials)
        changed.append("credentials")
    if changed:
        row.updated_at = utcnow()
        session.flush()
        columns = [c for c in changed if c not in ("credentials", "mapping_rules")]
        if columns:
            audit.record(session, "mapping.edited", row, details={"columns": columns})
        if "mapping_rules" in changed:
            audit.record(session, "mapping.rules_changed", row)
        if credentials is not None:
            audit.record(session, "credentials.changed", row, details={"fields": sorted(credentials)})
    return changed


def _recheck_authentication(
    session: Session,
    row: ExternalSystemMapping,
    values: Mapping[str, Any],
    mapping_rules: dict[str, Any] | None,
    credentials: dict[str, str] | None,
    vault: Vault | None,
) -> None:
    """An edit of the credentials or of `authentication_type`, checked as a new row would be.

    A new type with the stored credentials needs their field names: they are decrypted for that
    (audited as a read), and no value leaves this function.
    """
    rules: MappingRules | None = None
    with contextlib.suppress(RulesError):
        rules = parse_rules(mapping_rules if mapping_rules is not None else row.mapping_rules)
    auth_type = values.get("authentication_type") or row.authentication_type
    if credentials is None:
        stored = (vault or Vault.from_env()).decrypt(row.credentials, mapping=repr(row.system_name))
        audit.record(session, "credentials.read", row, details={"purpose": "authentication_type check"})
        fields: Mapping[str, Any] = stored
    else:
        fields = credentials
    _check_authentication(row.system_name, row.provider_name, str(auth_type), fields, rules)
