"""Security events raised deep inside a call (an endpoint refused in the transport), where no
database session is at hand: logged on `esm_dagster.audit` and, when the entry point named its
catalog (`catalog.audit.using_catalog`: the CLI, the engine), written to the audit log in their
own transaction (the refused action never happened; the attempt did). Details are redacted
before they leave: an event must never become the leak it records.
"""

from __future__ import annotations

import logging
import uuid
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
    _store(payload)
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


# Event names of this hook -> actions of the audit log.
_ACTIONS = {"endpoint_refused": "endpoint.refused"}


def _store(payload: dict[str, Any]) -> None:
    from esm_dagster.catalog import audit

    url = audit.current_catalog()
    action = _ACTIONS.get(str(payload["action"]))
    if url is None or action is None:
        return
    details = {
        k: v for k, v in payload.items() if k not in ("action", "actor", "mapping", "mapping_id", "outcome")
    }
    mapping_id = payload.get("mapping_id")
    try:
        audit.record_now(
            url,
            action,
            outcome=str(payload["outcome"]),
            mapping_name=(str(payload["mapping"]).strip("'") if payload.get("mapping") else None),
            mapping_id=uuid.UUID(str(mapping_id)) if mapping_id else None,
            details=details,
        )
    except Exception as exc:  # the refusal itself must still be raised, whatever the audit store does
        log.warning("audit entry for %s not stored: %s", action, redact_text(str(exc)))
