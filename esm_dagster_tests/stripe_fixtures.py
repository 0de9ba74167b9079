"""Test helpers: a Stripe emulator on loopback and a catalog holding the demo mappings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from esm_dagster.demo.run import DEMO_STRIPE_KEY, register_demo_catalog
from esm_dagster.sandbox.stripe import StripeEmulator


@contextmanager
def stripe_emulator(customers: int = 60, charges: int = 300, seed: int = 3) -> Iterator[StripeEmulator]:
    emulator = StripeEmulator(api_keys=[DEMO_STRIPE_KEY], customers=customers, charges=charges, seed=seed)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


def demo_catalog(url: str, emulator: StripeEmulator) -> None:
    register_demo_catalog(url, emulator.url)
