"""Names Dagster accepts, derived from catalog values (tags allow only [A-Za-z0-9_.-/], 63 chars)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from esm_dagster.catalog.mappings import MappingSpec


def tag_value(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-/]+", "_", value)[:63]


def job_name(group: str) -> str:
    return "esm_sync_" + re.sub(r"[^A-Za-z0-9_]+", "_", group).strip("_").lower()


def step_key(spec: MappingSpec) -> str:
    """The op/step name Dagster gives the asset `esm/<slug>/<stream>`."""
    return "__".join(spec.asset_key_path)
