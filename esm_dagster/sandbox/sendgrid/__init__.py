"""The SendGrid v3 emulator: `SendGridEmulator(api_keys=[...]).start()`, or the CLI
`python -m esm_dagster.sandbox.sendgrid`."""

from esm_dagster.sandbox.sendgrid.data import DEFAULT_END, DEFAULT_START, SUPPRESSION_LISTS
from esm_dagster.sandbox.sendgrid.emulator import SendGridEmulator

__all__ = ["DEFAULT_END", "DEFAULT_START", "SUPPRESSION_LISTS", "SendGridEmulator"]
