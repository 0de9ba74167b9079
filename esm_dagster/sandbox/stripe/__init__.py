"""The Stripe v1 emulator: `StripeEmulator(api_keys=[...]).start()`, or the CLI
`python -m esm_dagster.sandbox.stripe`."""

from esm_dagster.sandbox.stripe.data import DEFAULT_API_VERSION, DEFAULT_END, DEFAULT_START
from esm_dagster.sandbox.stripe.emulator import StripeEmulator, mask_key

__all__ = ["DEFAULT_API_VERSION", "DEFAULT_END", "DEFAULT_START", "StripeEmulator", "mask_key"]
