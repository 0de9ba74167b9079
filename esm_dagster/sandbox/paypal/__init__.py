"""The PayPal REST emulator: `PayPalEmulator(clients={id: secret}).start()`, or
`python -m esm_dagster.sandbox.paypal`."""

from esm_dagster.sandbox.paypal.emulator import PayPalEmulator

__all__ = ["PayPalEmulator"]
