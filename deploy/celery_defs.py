"""The catalog's definitions with every job's steps sent to Celery workers (dagster-celery).

The same assets, jobs and schedules as `esm_dagster.definitions`; only the executor differs, so a
deployment picks one machine or many by the module it loads, not by editing the catalog. Each
step (one mapping) becomes a Celery task that any worker on the queue can take; the worker
imports this module to rebuild the job, so it needs the same environment as the code location
(`ESM_DATABASE_URL`, `ESM_FERNET_KEYS`, `DAGSTER_HOME` with a persistent instance such as
`deploy/dagster.prod.yaml`).

    ESM_CELERY_BROKER   pyamqp://guest:guest@127.0.0.1:5672// (RabbitMQ) or redis://host:6379/0
    ESM_CELERY_BACKEND  rpc:// (default; results travel back over the broker) or redis://...
    ESM_CELERY_QUEUE    the queue the steps go to and the workers listen on (default `dagster`)

Workers: `dagster-celery worker start -A dagster_celery.app -y deploy/celery.yaml -q QUEUE`.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from dagster_celery import celery_executor

from esm_dagster.catalog.db import database_url
from esm_dagster.orchestration.loader import build_definitions

DEFAULT_BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"


def celery_config() -> dict[str, Any]:
    """The executor's config, shared with the workers' YAML (`worker_yaml`)."""
    return {
        "broker": os.environ.get("ESM_CELERY_BROKER", DEFAULT_BROKER),
        "backend": os.environ.get("ESM_CELERY_BACKEND", "rpc://"),
        "config_source": {
            "task_default_queue": os.environ.get("ESM_CELERY_QUEUE", "dagster"),
            # A worker holds one step at a time and acknowledges it when done: a worker that dies
            # mid-sync hands the step back to the queue, and idle workers get the next step instead
            # of a busy one prefetching it. A re-run step is safe: cursor and upsert commit together.
            "worker_prefetch_multiplier": 1,
            "task_acks_late": True,
        },
    }


def worker_yaml() -> dict[str, Any]:
    """What `dagster-celery worker start -y` reads: the executor config under `execution.config`
    (a bare top-level `broker:` is silently ignored, DAGSTER_NOTES §7)."""
    return {"execution": {"config": celery_config()}}


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        build_definitions(database_url()),
        dg.Definitions(executor=celery_executor.configured(celery_config(), name="esm_celery")),
    )
