"""The Dagster entry point: `defs`, built from the `external_system_mapping` table.

The catalog is `ESM_DATABASE_URL` (default: the embedded SQLite file under `ESM_HOME`).
"""

from __future__ import annotations

import dagster as dg

from esm_dagster.catalog.db import database_url
from esm_dagster.orchestration.loader import build_definitions


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(database_url())
