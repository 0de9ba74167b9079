"""The Mixpanel import/export emulator: `MixpanelEmulator(service_accounts={...}, project_id=N).start()`,
or the CLI `python -m esm_dagster.sandbox.mixpanel`."""

from esm_dagster.sandbox.mixpanel.data import DEFAULT_END, DEFAULT_START, EVENT_NAMES
from esm_dagster.sandbox.mixpanel.emulator import MixpanelEmulator

__all__ = ["DEFAULT_END", "DEFAULT_START", "EVENT_NAMES", "MixpanelEmulator"]
