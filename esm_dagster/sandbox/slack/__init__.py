"""The Slack Web API emulator: `SlackEmulator(tokens=[...]).start()`, or the CLI
`python -m esm_dagster.sandbox.slack`."""

from esm_dagster.sandbox.slack.data import DEFAULT_END, DEFAULT_START, TEAM_ID
from esm_dagster.sandbox.slack.emulator import SlackEmulator

__all__ = ["DEFAULT_END", "DEFAULT_START", "TEAM_ID", "SlackEmulator"]
