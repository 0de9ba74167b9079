"""What an alert says, independent of where it is sent.

A data engineer reading an alert at 3 a.m. needs four things without opening anything else:
which mapping, which asset and partition, what kind of error, and a link to the run. Every
channel renders from the same `Alert`, so Slack, email and a generic webhook never disagree, and
the text is built (and redacted) once, before any channel sees it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from collections.abc import Iterable
from typing import Any

from esm_dagster.security.redact import redact_text

DEFAULT_UI_URL = "http://127.0.0.1:3000"
SEVERITIES = ("info", "warning", "error", "critical")

# Column widths of `esm_alert`: checked here so a bad alert fails where it is built, not at insert.
MAX_DEDUP_KEY = 200
MAX_KIND = 40
MAX_SUBJECT = 300

_WS = re.compile(r"\s+")

_TITLES = {
    "run_failure": "Run failed",
    "mapping_error": "Mapping in error",
    "mapping_recovered": "Mapping recovered",
    "task_opened": "Task opened",
}


def ui_url() -> str:
    """The Dagster UI that run links point to: `ESM_DAGSTER_UI_URL`, default the local `dagster dev`."""
    return (os.environ.get("ESM_DAGSTER_UI_URL") or DEFAULT_UI_URL).rstrip("/")


def run_url(run_id: str, ui: str | None = None) -> str:
    return f"{(ui or ui_url()).rstrip('/')}/runs/{run_id}"


def _one_line(text: str) -> str:
    # Subjects become e-mail headers and Slack headers: a newline there is header injection.
    return _WS.sub(" ", text).strip()


@dataclasses.dataclass(frozen=True)
class Alert:
    """One thing worth telling a data engineer about.

    `dedup_key` is the identity of the event, not of the message: the same failed run must alert
    once however many sensor ticks, retries or processes notice it. The classmethods below build
    the keys for the common kinds, so callers do not invent incompatible ones.
    """

    kind: str
    message: str
    dedup_key: str
    mapping_id: uuid.UUID | None = None
    mapping_name: str | None = None
    asset_key: str | None = None
    partition: str | None = None
    error_class: str | None = None
    run_id: str | None = None
    run_url: str | None = None
    severity: str = "error"

    def __post_init__(self) -> None:
        if not self.kind or len(self.kind) > MAX_KIND:
            raise ValueError(f"Alert.kind must be 1..{MAX_KIND} characters, got {self.kind!r}")
        if not self.dedup_key or len(self.dedup_key) > MAX_DEDUP_KEY:
            raise ValueError(f"Alert.dedup_key must be 1..{MAX_DEDUP_KEY} characters")
        if self.severity not in SEVERITIES:
            raise ValueError(f"Alert.severity must be one of {', '.join(SEVERITIES)}, got {self.severity!r}")
        if self.mapping_id is not None and not isinstance(self.mapping_id, uuid.UUID):
            object.__setattr__(self, "mapping_id", uuid.UUID(str(self.mapping_id)))
        if self.run_id and not self.run_url:
            object.__setattr__(self, "run_url", run_url(self.run_id))

    # ---- builders for the kinds the sensors raise ----------------------------------------------
    @classmethod
    def run_failure(
        cls,
        *,
        run_id: str,
        message: str,
        mapping_id: uuid.UUID | str | None = None,
        mapping_name: str | None = None,
        asset_key: str | None = None,
        partition: str | None = None,
        error_class: str | None = None,
        severity: str = "error",
        ui: str | None = None,
    ) -> Alert:
        """A failed run: one alert per run id, whichever sensor tick or process sees it first."""
        return cls(
            kind="run_failure",
            message=message,
            dedup_key=f"run_failure:{run_id}",
            mapping_id=_uuid(mapping_id),
            mapping_name=mapping_name,
            asset_key=asset_key,
            partition=partition,
            error_class=error_class,
            run_id=run_id,
            run_url=run_url(run_id, ui),
            severity=severity,
        )

    @classmethod
    def mapping_error(
        cls,
        *,
        mapping_id: uuid.UUID | str,
        episode: str,
        message: str,
        mapping_name: str | None = None,
        asset_key: str | None = None,
        error_class: str | None = None,
        run_id: str | None = None,
        severity: str = "critical",
        ui: str | None = None,
    ) -> Alert:
        """A mapping that went into `error`.

        `episode` names this stay in error (for example the time or run id of the failure that
        tipped it): the alert repeats for a new episode after a recovery, never within one.
        """
        return cls(
            kind="mapping_error",
            message=message,
            dedup_key=f"mapping_error:{mapping_id}:{episode}",
            mapping_id=_uuid(mapping_id),
            mapping_name=mapping_name,
            asset_key=asset_key,
            error_class=error_class,
            run_id=run_id,
            run_url=run_url(run_id, ui) if run_id else None,
            severity=severity,
        )

    @classmethod
    def mapping_recovered(
        cls,
        *,
        mapping_id: uuid.UUID | str,
        episode: str,
        message: str = "The mapping synced successfully again.",
        mapping_name: str | None = None,
        asset_key: str | None = None,
        run_id: str | None = None,
        ui: str | None = None,
    ) -> Alert:
        """The end of an error episode; `episode` is the same value its `mapping_error` used."""
        return cls(
            kind="mapping_recovered",
            message=message,
            dedup_key=f"mapping_recovered:{mapping_id}:{episode}",
            mapping_id=_uuid(mapping_id),
            mapping_name=mapping_name,
            asset_key=asset_key,
            run_id=run_id,
            run_url=run_url(run_id, ui) if run_id else None,
            severity="info",
        )

    # ---- rendering ------------------------------------------------------------------------------
    @property
    def title(self) -> str:
        return _TITLES.get(self.kind, self.kind.replace("_", " ").capitalize())

    @property
    def subject(self) -> str:
        """One line: `[ESM error] Run failed: stripe_charges (esm/stripe/charges [2026-11-01]) - ProviderError`."""
        where = self.mapping_name or self.asset_key or "esm"
        if self.asset_key and self.asset_key != where:
            where += f" ({self.asset_key}" + (f" [{self.partition}]" if self.partition else "") + ")"
        elif self.partition:
            where += f" [{self.partition}]"
        text = f"[ESM {self.severity}] {self.title}: {where}"
        if self.error_class:
            text += f" - {self.error_class}"
        text = _one_line(text)
        return text if len(text) <= MAX_SUBJECT else text[: MAX_SUBJECT - 3] + "..."

    def facts(self) -> list[tuple[str, str]]:
        """The labelled facts every channel shows, in order, leaving out the unknown ones."""
        rows = [
            ("Mapping", self.mapping_name),
            ("Mapping id", str(self.mapping_id) if self.mapping_id else None),
            ("Asset", self.asset_key),
            ("Partition", self.partition),
            ("Error", self.error_class),
            ("Severity", self.severity),
            ("Run", self.run_url),
        ]
        return [(label, value) for label, value in rows if value]

    @property
    def body(self) -> str:
        lines = [f"{self.title}", ""]
        lines += [f"{label}: {value}" for label, value in self.facts()]
        lines += ["", self.message.strip() or "(no message)"]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """The alert as JSON-ready fields, with the rendered subject and body (generic webhooks)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["mapping_id"] = str(self.mapping_id) if self.mapping_id else None
        out["subject"] = self.subject
        out["body"] = self.body
        return out

    def redacted(self, secrets: Iterable[str] = ()) -> Alert:
        """A copy with every text field scrubbed: known secret values first, then key-shaped text."""
        known = list(secrets)
        changes: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, str) and field.name != "severity":
                changes[field.name] = redact_text(value, known)
        return dataclasses.replace(self, **changes)


def _uuid(value: uuid.UUID | str | None) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(str(value))
