"""Names Dagster accepts, derived from catalog values (tags allow only [A-Za-z0-9_.-/], 63 chars)."""

from __future__ import annotations

import re


def tag_value(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-/]+", "_", value)[:63]


def schedule_group(frequency: str, timezone: str) -> str:
    return tag_value(f"{frequency}__{timezone.replace('/', '.')}")


def job_name(group: str) -> str:
    return "esm_sync_" + re.sub(r"[^A-Za-z0-9_]+", "_", group).strip("_").lower()
