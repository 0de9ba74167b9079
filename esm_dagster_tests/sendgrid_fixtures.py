"""Test helpers: a SendGrid emulator on loopback, a client for it, and a catalog mapping pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from esm_dagster.providers.sendgrid import SendGridProvider
from esm_dagster.sandbox.sendgrid import SendGridEmulator
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy

KEY = "SG.esm-test-key.s3cr3t-Value-0123456789abcdefghijklmn"
OTHER_KEY = "SG.wrong-key.Zz9876543210zyxwvutsrqponmlkjih"


@contextmanager
def sendgrid_emulator(**kwargs: Any) -> Iterator[SendGridEmulator]:
    with SendGridEmulator(api_keys=[KEY], **kwargs) as emulator:
        yield emulator


def client(
    emulator: SendGridEmulator,
    *,
    key: str = KEY,
    retry_attempts: int = 2,
    timeout: float = 5.0,
    **policy: Any,
) -> SendGridProvider:
    return SendGridProvider(
        emulator.url,
        api_key=Secret(key),
        policy=TransportPolicy(retry_attempts=retry_attempts, timeout_seconds=timeout, **policy),
    )


def mapping(url: str, stream: str, rules: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "system_name": "SendGrid",
        "system_type": "email_service",
        "provider_name": "sendgrid",
        "api_endpoint": url,
        "authentication_type": "api_key",
        "credentials": {"api_key": KEY},
        "sync_frequency": "daily",
        "retry_attempts": 1,
        "timeout_seconds": 10,
        "mapping_rules": {**rules, "sync_config": {**rules.get("sync_config", {}), "stream": stream}},
        **fields,
    }
