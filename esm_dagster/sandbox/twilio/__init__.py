"""The Twilio Programmable Messaging emulator: `TwilioEmulator(account_sid=..., auth_token=...).start()`,
or the CLI `python -m esm_dagster.sandbox.twilio`."""

from esm_dagster.sandbox.twilio.data import DEFAULT_END, DEFAULT_START
from esm_dagster.sandbox.twilio.emulator import TwilioEmulator

__all__ = ["DEFAULT_END", "DEFAULT_START", "TwilioEmulator"]
