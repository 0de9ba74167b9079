"""Test helpers: a Mixpanel emulator on loopback, a client for it, and a catalog mapping pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from esm_dagster.providers.auth import BasicAuth
from esm_dagster.providers.mixpanel import MixpanelProvider
from esm_dagster.sandbox.mixpanel import MixpanelEmulator
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy

USER = "esm-sync.4f2a1c.mp-service-account"
SECRET = "mpSA-s3cret-Qw7rT9yU2iO4pA6sD8fG"
PROJECT_ID = 3141592


@contextmanager
def mixpanel_emulator(**kwargs: Any) -> Iterator[MixpanelEmulator]:
    with MixpanelEmulator(service_accounts={USER: SECRET}, project_id=PROJECT_ID, **kwargs) as emulator:
        yield emulator


def client(
    emulator: MixpanelEmulator,
    *,
    secret: str = SECRET,
    retry_attempts: int = 2,
    timeout: float = 5.0,
    timezone: str = "UTC",
    **policy: Any,
) -> MixpanelProvider:
    return MixpanelProvider(
        emulator.url,
        auth=BasicAuth(USER, Secret(secret)),
        policy=TransportPolicy(retry_attempts=retry_attempts, timeout_seconds=timeout, **policy),
        export_url=emulator.url,
        project_id=str(PROJECT_ID),
        timezone=timezone,
    )


def mapping(url: str, rules: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "system_name": "Mixpanel",
        "system_type": "analytics",
        "provider_name": "mixpanel",
        "api_endpoint": url,
        "authentication_type": "basic_auth",
        "credentials": {"username": USER, "secret": SECRET, "project_id": str(PROJECT_ID), "export_url": url},
        "sync_frequency": "daily",
        "retry_attempts": 1,
        "timeout_seconds": 10,
        "mapping_rules": rules,
        **fields,
    }
