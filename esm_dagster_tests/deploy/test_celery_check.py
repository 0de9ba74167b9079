"""`make celery-check` against the machine's RabbitMQ: the two mistakes that stall a Celery run.

A refused login and a queue without a worker both leave a dagster-celery run waiting without a
word (the check's positive answer is asserted in test_celery_executor, where workers run).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from deploy.celery_check import check
from deploy.celery_defs import DEFAULT_BROKER
from deploy.celery_workers import celery_workers
from deploy.prod_check import REPO_ROOT

BROKER = os.environ.get("ESM_CELERY_BROKER", DEFAULT_BROKER)
WRONG_PASSWORD = "not-the-password-7f3a"


def _require_listening(url: str, default_port: int) -> None:
    parts = urlsplit(url)
    with socket.socket() as s:
        s.settimeout(1)
        if s.connect_ex((parts.hostname or "127.0.0.1", parts.port or default_port)) == 0:
            return
    if os.environ.get("ESM_REQUIRE_BROKER") == "1":
        pytest.fail(
            f"ESM_REQUIRE_BROKER=1 but nothing listens at {parts.hostname}:{parts.port or default_port}"
        )
    pytest.skip(f"nothing listens at {parts.hostname} (ESM_REQUIRE_BROKER=1 makes this fail)")


@pytest.fixture(autouse=True)
def _broker() -> None:
    _require_listening(BROKER, 5672)


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username or 'guest'}:{password}@{parts.hostname}:{parts.port or 5672}"
    return parts._replace(netloc=netloc).geturl()


def test_a_refused_login_is_one_line_without_the_password_in_seconds() -> None:
    started = time.monotonic()
    problem, workers = check(_with_password(BROKER, WRONG_PASSWORD), "dagster", timeout=5)
    assert time.monotonic() - started < 20
    assert workers == []
    assert problem is not None and "refused the connection" in problem and "\n" not in problem
    assert WRONG_PASSWORD not in problem and "127.0.0.1" in problem


def test_an_empty_broker_url_is_named() -> None:
    problem, _ = check("", "dagster")
    assert problem is not None and problem.startswith("ESM_CELERY_BROKER is empty")


@pytest.mark.parametrize("port", ["99999", "abc"])
def test_a_broker_url_with_a_bad_port_is_one_line(port: str) -> None:
    problem, _ = check(f"pyamqp://guest:{WRONG_PASSWORD}@127.0.0.1:{port}//", "dagster", timeout=2)
    assert problem is not None and "is not a broker URL" in problem and WRONG_PASSWORD not in problem


def test_a_queue_nobody_consumes_is_named_with_the_command_that_fixes_it() -> None:
    queue = f"esm_nobody_{uuid.uuid4().hex[:8]}"
    problem, workers = check(BROKER, queue, timeout=3)
    assert workers == []
    assert problem is not None and repr(queue) in problem
    assert f"make celery-worker CELERY_QUEUE={queue}" in problem


def test_the_command_exits_2_naming_the_problem_and_masking_the_password() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "deploy.celery_check", "--timeout", "3"],
        env={**os.environ, "ESM_CELERY_BROKER": _with_password(BROKER, WRONG_PASSWORD),
             "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert WRONG_PASSWORD not in done.stderr + done.stdout


REDIS_BROKER = os.environ.get("ESM_TEST_REDIS_BROKER", "redis://127.0.0.1:6379/15")


@pytest.mark.slow
def test_redis_as_the_broker_a_worker_is_found_on_its_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require_listening(REDIS_BROKER, 6379)
    queue = f"esm_redis_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("ESM_CELERY_BROKER", REDIS_BROKER)
    home = tmp_path / "dagster_home"  # a worker needs an instance to start; no run happens here
    home.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "DAGSTER_HOME": str(home)}
    with celery_workers(1, queue, env, tmp_path) as workers:
        assert check(REDIS_BROKER, queue) == (None, [workers[0].name])
        # The worker returns results over rpc:// (the default): a run waiting on Redis for them
        # hung for ever while the worker had finished its step (new-user finding).
        assert check(REDIS_BROKER, queue, backend="rpc://") == (None, [workers[0].name])
        problem, _ = check(REDIS_BROKER, queue, backend="redis://:s3cr3t@127.0.0.1:6379/1")
        assert problem is not None and "send results elsewhere" in problem and "rpc://" in problem
        assert "s3cr3t" not in problem
