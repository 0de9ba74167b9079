"""Protocol-faithful local emulators of the providers, served over HTTP on loopback.

Used by the tests, the demo and the benchmarks. Each emulator is stateful, seeded deterministically,
checked against the provider's published OpenAPI document where one exists, and carries a fault
switch (`emulator.faults`) for outages, rate limits, slow answers and dropped connections.

- `esm_dagster.sandbox.stripe.StripeEmulator` (CLI: `python -m esm_dagster.sandbox.stripe`)
- `esm_dagster.sandbox.paypal.PayPalEmulator` (CLI: `python -m esm_dagster.sandbox.paypal`)
- `esm_dagster.sandbox.salesforce.SalesforceEmulator` (CLI: `python -m esm_dagster.sandbox.salesforce`)
- `esm_dagster.sandbox.oauth.OAuthTokenServer`: the OAuth2 token endpoint those two embed
"""
