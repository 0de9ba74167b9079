"""Documents and records shared by the rules tests (imported, not a conftest)."""

from __future__ import annotations

import copy
from typing import Any

# The seed's example, verbatim.
SEED_RULES: dict[str, Any] = {
    "field_mappings": {
        "id": "user.external_id",
        "email": "user.email",
        "name": "user.full_name",
        "phone": "user.phone_number",
        "address.city": "user.city",
        "created": {"target": "user.external_created_at", "type": "timestamp", "unit": "s"},
    },
    "transformations": {"date_format": "YYYY-MM-DD", "currency": "THB", "timezone": "Asia/Bangkok"},
    "validation_rules": {
        "required_fields": ["email", "name"],
        "data_types": {"email": "email", "phone": "phone_number"},
    },
    "sync_config": {
        "sync_direction": "bidirectional",
        "conflict_resolution": "external_wins",
        "batch_size": 100,
        "rate_limiting": {"requests_per_minute": 60, "burst_limit": 10},
    },
}


def seed() -> dict[str, Any]:
    return copy.deepcopy(SEED_RULES)


def rules_with(fields: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A small rules document: `fields` as field_mappings plus top-level sections."""
    doc: dict[str, Any] = {"field_mappings": {"id": "t.external_id", **fields}}
    doc.update(top)
    return doc


def member(i: int = 1, **overrides: Any) -> dict[str, Any]:
    """A record that passes the seed rules."""
    record: dict[str, Any] = {
        "id": f"{i:05d}",
        "email": f"member{i}@example.org",
        "name": f"Member {i}",
        "phone": "081-234-5678",
        "address": {"city": "Bangkok"},
        "created": 1700000000 + i,
    }
    record.update(overrides)
    return record
