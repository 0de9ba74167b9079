"""The Telegram Bot API emulator: `TelegramEmulator(tokens=[...]).start()`, or the CLI
`python -m esm_dagster.sandbox.telegram`."""

from esm_dagster.sandbox.telegram.data import DEFAULT_END, DEFAULT_START
from esm_dagster.sandbox.telegram.emulator import TelegramEmulator

__all__ = ["DEFAULT_END", "DEFAULT_START", "TelegramEmulator"]
