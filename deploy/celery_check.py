"""Before a Celery run: does the broker take these credentials, and does a worker listen on the queue?

A dagster-celery run that cannot reach its steps' workers says nothing: a refused broker login is
retried by kombu for minutes before the run fails with a long traceback, and steps sent to a
queue nobody consumes wait in it for ever (Celery issues 4296 and 4556). `make celery-check` asks
both questions in a few seconds and answers each in one line, the broker's password masked.

    ESM_CELERY_BROKER   the broker the run process and the workers use (default: local RabbitMQ)
    ESM_CELERY_QUEUE    the queue the steps go to (default `dagster`)
"""

from __future__ import annotations

import argparse
import sys

from kombu.utils.url import maybe_sanitize_url

from deploy.celery_defs import celery_config


def broker_problem(broker: str, timeout: float = 5.0) -> str | None:
    """Why the broker refuses a connection (None when it accepts one)."""
    from kombu import Connection

    shown = maybe_sanitize_url(broker)
    try:
        with Connection(broker, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        # A message may quote the URL it tried: never with its password.
        reason = reason.replace(broker, shown)
        return f"broker {shown} refused the connection: {type(exc).__name__}: {reason}"
    return None


def workers_on(broker: str, queue: str, timeout: float = 3.0) -> list[str]:
    """Names of the workers that answer and consume `queue`."""
    from celery import Celery

    app = Celery(broker=broker)
    try:
        queues = app.control.inspect(timeout=timeout).active_queues() or {}
    finally:
        app.close()
    return sorted(name for name, listened in queues.items() if any(q.get("name") == queue for q in listened))


def check(broker: str, queue: str, timeout: float = 5.0) -> tuple[str | None, list[str]]:
    """The problem that would stall a Celery run (None when it can start) and the queue's workers."""
    if not broker.strip():
        return (
            "ESM_CELERY_BROKER is empty: set it to pyamqp://USER:PASSWORD@HOST:5672// or redis://HOST:6379/0",
            [],
        )
    problem = broker_problem(broker, timeout)
    if problem:
        return problem, []
    workers = workers_on(broker, queue, timeout=min(timeout, 3.0))
    if not workers:
        return (
            f"no worker consumes queue {queue!r} on {maybe_sanitize_url(broker)}: a run's steps would "
            f"wait there; start one with `make celery-worker CELERY_QUEUE={queue}`"
        ), []
    return None, workers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    config = celery_config()
    broker, queue = config["broker"], config["config_source"]["task_default_queue"]
    problem, workers = check(broker, queue, args.timeout)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    print(f"broker {maybe_sanitize_url(broker)} ok; queue {queue!r} consumed by {', '.join(workers)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
