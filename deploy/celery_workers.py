"""Start and stop `dagster-celery` workers on one queue, for the check and the CI test.

Each worker is its own process group (`dagster-celery worker start` runs `celery worker` as a
child), so stopping one ends exactly the processes it started. The queue goes with the workers:
a test's queue must not outlive it on a shared broker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from deploy.celery_defs import worker_yaml

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


def _ping(broker: str, names: list[str]) -> set[str]:
    from celery import Celery

    app = Celery(broker=broker)
    try:
        replies = app.control.ping(destination=names, timeout=1.0)
    finally:
        app.close()
    return {name for reply in replies for name in reply}


def _stop(worker: Worker) -> None:
    if worker.process.poll() is not None:
        return
    os.killpg(worker.process.pid, signal.SIGTERM)
    try:
        worker.process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.wait(5)


def delete_queue(broker: str, queue: str) -> None:
    from kombu import Connection

    with Connection(broker) as conn:
        conn.default_channel.queue_delete(queue)


@contextmanager
def celery_workers(
    count: int, queue: str, env: dict[str, str], workdir: Path, ready_timeout: float = 60
) -> Iterator[list[Worker]]:
    """`count` workers with one process slot each, listening on `queue`, ready when yielded."""
    env = {**env, "ESM_CELERY_QUEUE": queue, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    saved = os.environ.get("ESM_CELERY_QUEUE")
    os.environ["ESM_CELERY_QUEUE"] = queue
    try:
        config = worker_yaml()
    finally:
        if saved is None:
            os.environ.pop("ESM_CELERY_QUEUE", None)
        else:
            os.environ["ESM_CELERY_QUEUE"] = saved
    broker = config["execution"]["config"]["broker"]
    config_path = workdir / f"celery-{queue}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    tag = uuid.uuid4().hex[:6]
    workers: list[Worker] = []
    try:
        for i in range(count):
            base = f"esm{i}-{tag}"
            name = f"{base}@{socket.gethostname()}"  # how celery expands the `@%h` the CLI appends
            log = workdir / f"worker-{i}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(  # noqa: S603 (our own venv's executable)
                    [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                     "-y", str(config_path), "-q", queue, "-n", base, "--loglevel", "WARNING",
                     "--", "-c", "1", "--without-gossip", "--without-mingle"],
                    env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            workers.append(Worker(name, process, log))
        deadline = time.monotonic() + ready_timeout
        names = [w.name for w in workers]
        while _ping(broker, names) != set(names):
            dead = [w for w in workers if w.process.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(f"{w.name}: {w.log.read_text()[-1500:]}" for w in workers)
                raise RuntimeError(f"celery workers not ready on queue {queue!r}:\n{logs}")
        yield workers
    finally:
        for worker in workers:
            _stop(worker)
        delete_queue(broker, queue)
