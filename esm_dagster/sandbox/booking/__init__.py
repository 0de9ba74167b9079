"""A padel-court booking platform emulator (`BookingEmulator(api_keys=[...]).start()`, or the CLI
`python -m esm_dagster.sandbox.booking`): the API the declarative `rest` provider is tested against."""

from esm_dagster.sandbox.booking.data import BANGKOK, DEFAULT_END, DEFAULT_START
from esm_dagster.sandbox.booking.emulator import BookingEmulator

__all__ = ["BANGKOK", "DEFAULT_END", "DEFAULT_START", "BookingEmulator"]
