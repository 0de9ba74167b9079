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

    try:
        shown = maybe_sanitize_url(broker)
    except ValueError as exc:  # a port that is not a number, or out of range
        return f"ESM_CELERY_BROKER is not a broker URL ({exc})"
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


def backends_of(broker: str, workers: list[str], timeout: float = 3.0) -> dict[str, str]:
    """Worker name -> the result backend it sends results to (as the worker reports it, masked)."""
    from celery import Celery

    app = Celery(broker=broker)
    try:
        inspect = app.control.inspect(destination=workers, timeout=timeout, limit=len(workers))
        confs = inspect.conf(with_defaults=True) or {}
    finally:
        app.close()
    return {name: str(conf.get("result_backend")) for name, conf in confs.items()}


def check(
    broker: str, queue: str, timeout: float = 5.0, backend: str | None = None
) -> tuple[str | None, list[str]]:
    """The problem that would stall a Celery run (None when it can start) and the queue's workers.

    With `backend` (the run's result backend) a worker that sends its results elsewhere is a
    problem too: its steps would finish while the run waits for ever for their results.
    """
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
    if backend is not None:
        # Workers report their backend masked this way; both sides normalised alike ("rpc:///").
        expected = maybe_sanitize_url(backend, mask="********")
        reported = backends_of(broker, workers, min(timeout, 3.0))
        elsewhere = {w: b for w, b in reported.items() if maybe_sanitize_url(b, mask="********") != expected}
        if elsewhere:
            shown = ", ".join(f"{w} -> {b}" for w, b in sorted(elsewhere.items()))
            return (
                f"workers on queue {queue!r} send results elsewhere than this run's backend {expected} "
                f"({shown}): set the same ESM_CELERY_BACKEND for the run and the workers"
            ), workers
    return None, workers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    config = celery_config()
    broker, queue = config["broker"], config["config_source"]["task_default_queue"]
    problem, workers = check(broker, queue, args.timeout, backend=config["backend"])
    if problem:
        print(problem, file=sys.stderr)
        return 2
    print(f"broker {maybe_sanitize_url(broker)} ok; queue {queue!r} consumed by {', '.join(workers)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
