"""Protocol-faithful local emulators of the providers, served over HTTP on loopback.

Used by the tests, the demo and the benchmarks. Each emulator is stateful, seeded deterministically,
checked against the provider's published OpenAPI document where one exists, and carries a fault
switch (`emulator.faults`) for outages, rate limits, slow answers and dropped connections.

- `esm_dagster.sandbox.stripe.StripeEmulator` (CLI: `python -m esm_dagster.sandbox.stripe`)
- `esm_dagster.sandbox.twilio.TwilioEmulator` (CLI: `python -m esm_dagster.sandbox.twilio`)
- `esm_dagster.sandbox.telegram.TelegramEmulator` (CLI: `python -m esm_dagster.sandbox.telegram`)
- `esm_dagster.sandbox.slack.SlackEmulator` (CLI: `python -m esm_dagster.sandbox.slack`)
- `esm_dagster.sandbox.sendgrid.SendGridEmulator` (CLI: `python -m esm_dagster.sandbox.sendgrid`)
- `esm_dagster.sandbox.mixpanel.MixpanelEmulator` (CLI: `python -m esm_dagster.sandbox.mixpanel`)
- `esm_dagster.sandbox.booking.BookingEmulator`, a padel booking platform for the declarative `rest`
  provider (CLI: `python -m esm_dagster.sandbox.booking`)
- `esm_dagster.sandbox.hubspot.HubSpotEmulator` (CLI: `python -m esm_dagster.sandbox.hubspot`)
- `esm_dagster.sandbox.mailchimp.MailchimpEmulator` (CLI: `python -m esm_dagster.sandbox.mailchimp`)
- `esm_dagster.sandbox.paypal.PayPalEmulator` (CLI: `python -m esm_dagster.sandbox.paypal`)
- `esm_dagster.sandbox.salesforce.SalesforceEmulator` (CLI: `python -m esm_dagster.sandbox.salesforce`)
- `esm_dagster.sandbox.oauth.OAuthTokenServer`: the OAuth2 token endpoint those two embed
- `esm_dagster.sandbox.webhook_sender`: the signed webhooks the Stripe, Twilio, Slack, HubSpot,
  SendGrid, Telegram and PayPal emulators push to a loopback receiver (signing in `webhook_signers`)
"""
