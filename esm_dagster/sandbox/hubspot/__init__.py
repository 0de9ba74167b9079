"""The HubSpot CRM contacts emulator: `HubSpotEmulator(tokens=[...]).start()`, or the CLI
`python -m esm_dagster.sandbox.hubspot`."""

from esm_dagster.sandbox.hubspot.data import DEFAULT_END_MS, DEFAULT_START_MS, iso_ms
from esm_dagster.sandbox.hubspot.emulator import HubSpotEmulator

__all__ = ["DEFAULT_END_MS", "DEFAULT_START_MS", "HubSpotEmulator", "iso_ms"]
