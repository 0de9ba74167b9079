"""The one place security-relevant events are announced, until the audit log exists to store them.

Refused endpoints, rotated keys and credentials that no key opens are reported here as records
of the `esm_dagster.audit` logger, each carrying a structured `audit` attribute (action, actor,
mapping, outcome, detail). The append-only audit table (issue 6, item 3) attaches a handler to
this logger (or replaces the body of `audit_event`) and every call site is already in place.
Details are redacted before they leave: an event must never become the leak it records.
"""

from __future__ import annotations

import logging
from typing import Any

from esm_dagster.security.redact import redact_text

AUDIT_LOGGER = "esm_dagster.audit"
log = logging.getLogger(AUDIT_LOGGER)


def audit_event(
    action: str,
    *,
    mapping: str | None = None,
    mapping_id: str | None = None,
    actor: str = "system",
    outcome: str = "ok",
    detail: str = "",
    **fields: Any,
) -> dict[str, Any]:
    """Announce one event; returns the record's `audit` payload (what an audit row would hold)."""
    payload: dict[str, Any] = {
        "action": action,
        "actor": actor,
        "mapping": mapping,
        "mapping_id": mapping_id,
        "outcome": outcome,
        "detail": redact_text(detail),
        **{k: redact_text(str(v)) if isinstance(v, str) else v for k, v in fields.items()},
    }
    level = logging.INFO if outcome == "ok" else logging.WARNING
    log.log(
        level,
        "%s %s by %s (mapping %s): %s",
        action,
        outcome,
        actor,
        mapping or "-",
        payload["detail"],
        extra={"audit": payload},
    )
    return payload
