"""The raw limit: a bare httpx pager over the same pages plus one PostgreSQL `COPY`.

No rules, no validation, no checkpoint, no upsert: keep-alive HTTP, `orjson`, the demo mapping's
nine source fields pulled out as they are, and `COPY ... FROM STDIN` into a fresh table. It is
the floor under any loader on this machine and this emulator; esm_dagster's goal is to stay
within 2x of it.
"""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import httpx
import orjson
import psycopg2

FIELDS = (
    ("id",), ("amount",), ("currency",), ("status",), ("customer",), ("description",),
    ("billing_details", "email"), ("billing_details", "address", "city"), ("created",), ("paid",),
)  # fmt: skip


def _get(record: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def measure(url: str, key: str, dsn: str, schema: str) -> dict[str, Any]:
    started = time.perf_counter()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    pages = records = 0
    params: dict[str, Any] = {"limit": 100}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        while True:
            response = client.get("/v1/charges", params=params)
            response.raise_for_status()
            body = orjson.loads(response.content)
            page = body["data"]
            pages += 1
            records += len(page)
            writer.writerows([_get(r, p) for p in FIELDS] for r in page)
            if not body.get("has_more") or not page:
                break
            params["starting_after"] = page[-1]["id"]
    fetched = time.perf_counter() - started
    buffer.seek(0)
    conn = psycopg2.connect(dsn, options=f"-csearch_path={schema}")
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "create table raw_charges (id text primary key, amount bigint, currency text, status text, "
                "customer text, description text, email text, city text, created bigint, paid boolean)"
            )
            cur.copy_expert("copy raw_charges from stdin with (format csv)", buffer)
            cur.execute("select count(*) from raw_charges")
            row = cur.fetchone()
            loaded = int(row[0]) if row else 0
    finally:
        conn.close()
    seconds = time.perf_counter() - started
    return {
        "loaded": loaded,
        "pages": pages,
        "seconds": round(seconds, 3),
        "fetch_seconds": round(fetched, 3),
        "records_per_second": round(records / seconds),
    }
