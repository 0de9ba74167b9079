"""Definitions load time and sensor tick time against the number of mappings in the catalog.

Each size runs in a fresh child process (no warm caches, no state from the previous size) on its
own SQLite catalog holding N mappings: a mix of frequencies (hourly, daily, weekly, manual), three
timezones and two streams, one system per mapping, 1% of them in `error` so the error-state
sensor has work. "load" is what a code server does at start: the catalog query, the Definitions
built from the rows, and `validate_loadable` (Dagster resolving every asset, job and schedule).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

KEY = "sk_test_benchbenchbench0123456789"
FREQUENCIES = ("hourly", "daily", "weekly", "manual")
TIMEZONES = ("Asia/Bangkok", "UTC", "Europe/Madrid")


def _mapping(i: int) -> dict[str, Any]:
    stream = "customers" if i % 2 == 0 else "charges"
    fields = (
        {"email": "user.email", "name": "user.full_name", "phone": "user.phone_number"}
        if stream == "customers"
        else {"amount": {"target": "payment.amount", "type": "money", "currency_from": "currency",
                         "minor_units": "stripe"}, "currency": "payment.currency"}
    )  # fmt: skip
    return {
        "system_name": f"Club system {i:05d}",
        "system_type": "payment_gateway",
        "provider_name": "stripe",
        "api_endpoint": "http://127.0.0.1:9",
        "authentication_type": "api_key",
        "credentials": {"api_key": KEY},
        "sync_frequency": FREQUENCIES[i % len(FREQUENCIES)],
        "priority": 1 + i % 5,
        "mapping_rules": {
            "field_mappings": fields,
            "transformations": {"timezone": TIMEZONES[i % len(TIMEZONES)]},
            "validation_rules": {"required_fields": ["email"] if stream == "customers" else ["amount"]},
            "sync_config": {"stream": stream, "sync_direction": "inbound", "batch_size": 500},
        },
    }


def child(size: int, database_url: str) -> dict[str, Any]:
    import warnings

    import dagster as dg
    import sqlalchemy as sa

    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    from esm_dagster.catalog.db import get_engine, session_factory
    from esm_dagster.catalog.mappings import MappingInput, upsert_mapping
    from esm_dagster.catalog.migrate import upgrade
    from esm_dagster.orchestration.loader import build_definitions, fetch_specs
    from esm_dagster.security.vault import Vault, generate_key

    os.environ["ESM_FERNET_KEYS"] = generate_key()
    os.environ["ESM_ALLOW_LOOPBACK"] = "1"  # sandbox mode: the mappings point at loopback
    upgrade(database_url)
    started = time.perf_counter()
    vault = Vault.from_env()
    with session_factory(database_url).begin() as session:
        for i in range(size):
            upsert_mapping(session, vault, MappingInput.model_validate(_mapping(i)))
    register_seconds = time.perf_counter() - started
    with get_engine(database_url).begin() as conn:
        conn.execute(
            sa.text(
                "update external_system_mapping set sync_status = 'error', error_count = 3, "
                "last_error_message = 'bench' where system_name like '%00'"
            )
        )
    started = time.perf_counter()
    fetch_specs(database_url)
    query_seconds = time.perf_counter() - started
    started = time.perf_counter()
    defs = build_definitions(database_url)
    dg.Definitions.validate_loadable(defs)
    load_seconds = time.perf_counter() - started
    graph = defs.resolve_asset_graph()
    sensors = {s.name: s for s in defs.sensors or []}
    ticks: dict[str, float] = {}
    with dg.DagsterInstance.ephemeral() as instance:
        for name in ("esm_error_state_sensor",):
            times = []
            cursor = None
            for _ in range(3):
                context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
                started = time.perf_counter()
                result = sensors[name].evaluate_tick(context)
                times.append(time.perf_counter() - started)
                cursor = result.cursor
            ticks[name] = round(statistics.median(times), 3)
    return {
        "mappings": size,
        "assets": len(graph.get_all_asset_keys()),
        "jobs": len(list(defs.jobs or [])),
        "schedules": len(list(defs.schedules or [])),
        "register_seconds": round(register_seconds, 2),
        "catalog_query_seconds": round(query_seconds, 3),
        "load_seconds": round(load_seconds, 3),
        "sensor_tick_seconds": ticks,
    }


def measure(size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.definitions_bench", "--child", str(size),
             f"sqlite:///{tmp}/catalog.db"],
            capture_output=True, text=True, check=False, env={**os.environ, "ESM_HOME": tmp},
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"definitions bench at {size} mappings failed: {out.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result


if __name__ == "__main__":
    if sys.argv[1] == "--child":
        print(json.dumps(child(int(sys.argv[2]), sys.argv[3])))
    else:
        for n in sys.argv[1].split(","):
            print(json.dumps(measure(int(n))))
