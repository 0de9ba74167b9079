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
from dagster._core.execution.retries import RetryMode
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG

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


class CeleryNotReady(Exception):
    """The broker refuses the run process, or no worker consumes a queue the run's steps go to."""


class CheckedCeleryExecutor(CeleryExecutor):
    """dagster-celery's executor, refusing to start a run whose steps no worker would take, or
    whose results would go to another backend than the one the run waits on.

    Without the check such a run hangs after RUN_START: a refused broker login is retried for
    minutes, steps sent to a queue nobody reads wait for ever, the run ignores SIGTERM while it
    waits (the revoke it sends is never answered), and the provider's concurrency slots its steps
    claimed stay held, so later runs of the same provider queue behind it. `make celery-check`
    asks the same questions from a shell; set ESM_CELERY_PREFLIGHT=0 where workers start only
    after the run does (autoscaling on queue length).
    """

    def execute(self, plan_context: Any, execution_plan: Any) -> Any:
        if os.environ.get("ESM_CELERY_PREFLIGHT", "1") != "0":
            from dagster_celery.make_app import make_app

            from deploy.celery_check import check

            # The queue a step goes to when it names none, as dagster-celery's loop works it out.
            default = make_app(self.app_args()).conf.task_default_queue
            queues = {
                execution_plan.get_step_by_key(key).tags.get(DAGSTER_CELERY_QUEUE_TAG, default)
                for key in execution_plan.step_keys_to_execute
            }
            for queue in sorted(queues):
                problem, _ = check(self.broker, queue, backend=self.backend)
                if problem:
                    raise CeleryNotReady(f"{problem} (the run did not start any step)")
        yield from super().execute(plan_context, execution_plan)


@dg.executor(
    name="esm_celery",
    config_schema=CELERY_CONFIG,
    requirements=dg.multiple_process_executor_requirements(),
)
def esm_celery_executor(init_context: dg.InitExecutorContext) -> CheckedCeleryExecutor:
    """`dagster_celery.celery_executor` with `CheckedCeleryExecutor`'s pre-flight."""
    config = init_context.executor_config
    return CheckedCeleryExecutor(
        broker=config.get("broker"),
        backend=config.get("backend"),
        config_source=config.get("config_source"),
        include=config.get("include"),
        retries=RetryMode.from_config(config["retries"]),
    )


class CatalogNotShared(RuntimeError):
    """A Celery process without ESM_DATABASE_URL: it would fall back to its own empty SQLite file."""


@dg.definitions
def defs() -> dg.Definitions:
    # Every worker must read the run's catalog; the embedded SQLite default is one per machine
    # (a worker without the variable synced against a new empty file and failed on missing tables).
    if not os.environ.get("ESM_DATABASE_URL", "").strip():
        raise CatalogNotShared(
            "deploy.celery_defs needs ESM_DATABASE_URL in every run process and Celery worker: "
            "the catalog they all read (the embedded SQLite default is per machine)"
        )
    return dg.Definitions.merge(
        build_definitions(database_url()),
        dg.Definitions(executor=esm_celery_executor.configured(celery_config(), name="esm_celery")),
    )
