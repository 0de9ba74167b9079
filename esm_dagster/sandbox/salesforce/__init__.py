"""The Salesforce REST emulator: `SalesforceEmulator(clients={consumer_key: secret}).start()`, or
`python -m esm_dagster.sandbox.salesforce`."""

from esm_dagster.sandbox.salesforce.emulator import SalesforceEmulator

__all__ = ["SalesforceEmulator"]
