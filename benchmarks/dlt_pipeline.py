"""The peer: a dlt pipeline (`rest_api` source, `postgres` destination) over the same emulator.

Runs in its own interpreter (the one with the `bench` extra, or `--dlt-python`), imports nothing
from esm_dagster, and prints one JSON line. Stripe pagination (`starting_after=<last id>` while
`has_more`) has no built-in dlt paginator, so a small `BasePaginator` does it, the way dlt's docs
say to write one. dlt runs with its defaults (nested objects flattened into columns, lists into
child tables) because that is what a user of dlt gets.

    python benchmarks/dlt_pipeline.py EMULATOR_URL API_KEY POSTGRES_URL DATASET
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from typing import Any

import dlt
from dlt.sources.helpers.rest_client.paginators import BasePaginator
from dlt.sources.rest_api import rest_api_source


class StripeListPaginator(BasePaginator):
    """`starting_after` = the id of the last object of the page, until `has_more` is false."""

    def __init__(self) -> None:
        super().__init__()
        self.last_id: str | None = None

    def update_state(self, response: Any, data: list[Any] | None = None) -> None:
        body = response.json()
        page = body.get("data") or []
        self._has_next_page = bool(body.get("has_more")) and bool(page)
        self.last_id = page[-1]["id"] if page else None

    def update_request(self, request: Any) -> None:
        if request.params is None:
            request.params = {}
        request.params["starting_after"] = self.last_id


def _peak_rss_mb() -> float:
    """VmHWM (this process's own peak; `ru_maxrss` survives `execve` from the parent)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _with_password(postgres_url: str) -> str:
    """dlt refuses credentials without a password; a server on `trust` auth ignores it."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(postgres_url.replace("postgresql+psycopg2://", "postgresql://", 1))
    if parts.password is None and parts.username:
        host = parts.netloc.split("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username}:unused-on-trust-auth@{host}")
    return urlunsplit(parts)


def main(url: str, key: str, postgres_url: str, dataset: str) -> dict[str, Any]:
    source = rest_api_source(
        {
            "client": {"base_url": url.rstrip("/") + "/v1/", "auth": {"type": "bearer", "token": key}},
            "resources": [
                {
                    "name": "charges",
                    "endpoint": {
                        "path": "charges",
                        "params": {"limit": 100},
                        "data_selector": "data",
                        "paginator": StripeListPaginator(),
                    },
                    "primary_key": "id",
                    "write_disposition": "merge",
                }
            ],
        }
    )
    with tempfile.TemporaryDirectory() as pipelines_dir:
        pipeline = dlt.pipeline(
            pipeline_name=f"bench_{dataset}",
            pipelines_dir=pipelines_dir,
            destination=dlt.destinations.postgres(credentials=_with_password(postgres_url)),
            dataset_name=dataset,
        )
        started = time.perf_counter()
        pipeline.run(source)
        seconds = time.perf_counter() - started
        with pipeline.sql_client() as client:
            rows = client.execute_sql("select count(*) from charges")
    loaded = int(rows[0][0]) if rows else 0
    return {
        "loaded": loaded,
        "seconds": round(seconds, 3),
        "records_per_second": round(loaded / seconds),
        "peak_rss_mb": _peak_rss_mb(),
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
