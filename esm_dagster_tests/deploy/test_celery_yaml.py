"""The shipped worker config reads the broker from the environment like the executor side does
(it used to hard-code the local RabbitMQ, so a worker ignored ESM_CELERY_BROKER)."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster_celery.cli import get_validated_config

from deploy.celery_defs import celery_config

WORKER_YAML = str(Path(__file__).resolve().parents[2] / "deploy" / "celery.yaml")


def test_the_worker_yaml_takes_the_broker_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESM_CELERY_BROKER", "pyamqp://guest:guest@broker.internal:5672//")
    monkeypatch.setenv("ESM_CELERY_BACKEND", "rpc://")
    monkeypatch.delenv("ESM_CELERY_QUEUE", raising=False)
    worker = get_validated_config(WORKER_YAML)
    executor = celery_config()
    assert worker["broker"] == executor["broker"] == "pyamqp://guest:guest@broker.internal:5672//"
    assert worker["backend"] == executor["backend"]
    assert worker["config_source"] == executor["config_source"]


def test_the_worker_yaml_takes_the_result_backend_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It hard-coded rpc://: a run with ESM_CELERY_BACKEND=redis://... waited for ever for results
    the workers sent elsewhere (new-user finding)."""
    monkeypatch.setenv("ESM_CELERY_BROKER", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("ESM_CELERY_BACKEND", "redis://127.0.0.1:6379/1")
    worker = get_validated_config(WORKER_YAML)
    assert worker["backend"] == celery_config()["backend"] == "redis://127.0.0.1:6379/1"


def test_the_celery_code_location_refuses_to_load_without_a_shared_catalog(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A worker without ESM_DATABASE_URL synced against a new, empty SQLite file under ESM_HOME
    and failed four times on a missing table (new-user finding)."""
    from deploy.celery_defs import CatalogNotShared, defs

    monkeypatch.delenv("ESM_DATABASE_URL", raising=False)
    monkeypatch.setenv("ESM_HOME", str(tmp_path / "home"))
    with pytest.raises(CatalogNotShared, match="ESM_DATABASE_URL"):
        defs()
    assert not (tmp_path / "home").exists()
