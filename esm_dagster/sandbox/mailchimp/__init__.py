"""The Mailchimp list-members emulator: `MailchimpEmulator(api_keys=[...]).start()`, or the CLI
`python -m esm_dagster.sandbox.mailchimp`."""

from esm_dagster.sandbox.mailchimp.data import DEFAULT_END, DEFAULT_START, iso_seconds, subscriber_hash
from esm_dagster.sandbox.mailchimp.emulator import DEFAULT_LIST_ID, MailchimpEmulator

__all__ = [
    "DEFAULT_END",
    "DEFAULT_LIST_ID",
    "DEFAULT_START",
    "MailchimpEmulator",
    "iso_seconds",
    "subscriber_hash",
]
