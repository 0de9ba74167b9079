"""A seeded Stripe emulator on loopback, shared by the read-only tests of a module."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from esm_dagster.sandbox.stripe import StripeEmulator
from esm_dagster_tests.sandbox.stripe_helpers import CHARGES, CUSTOMERS, KEY, SEED


@pytest.fixture(scope="module")
def emulator() -> Iterator[StripeEmulator]:
    """Read-only use only: tests that write or inject faults start their own."""
    with StripeEmulator(api_keys=[KEY], customers=CUSTOMERS, charges=CHARGES, seed=SEED) as em:
        yield em


@pytest.fixture
def client(emulator: StripeEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as c:
        yield c
