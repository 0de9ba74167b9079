"""The providers the leak scan runs: one emulator each, with secrets nobody else uses.

Each `LeakCase` starts its emulator knowing the case's credentials and writes the mapping document
that points at an endpoint (the emulator, or the hostile server of the scan). Every credential
value is distinctive to its provider, so a hit names the provider that leaked it; none is shaped
like the keys `security.redact` recognises by pattern unless the provider demands that shape, so
the scan proves the values are masked because they are known, not because they look like keys.

Adding a provider (PayPal, Salesforce when their emulators land) is one entry in `CASES`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

from esm_dagster.sandbox._http import LoopbackEmulator
from esm_dagster.sandbox.booking import BookingEmulator
from esm_dagster.sandbox.hubspot import HubSpotEmulator
from esm_dagster.sandbox.mailchimp import MailchimpEmulator
from esm_dagster.sandbox.mixpanel import MixpanelEmulator
from esm_dagster.sandbox.sendgrid import SendGridEmulator
from esm_dagster.sandbox.slack import SlackEmulator
from esm_dagster.sandbox.stripe import StripeEmulator
from esm_dagster.sandbox.telegram import TelegramEmulator
from esm_dagster.sandbox.twilio import TwilioEmulator
from esm_dagster_tests.providers.booking_helpers import BOOKING_REST

OWNER = "data-team@padel.example"  # the ESM_USER every test runs `esm` as (conftest)
TWILIO_ACCOUNT = "AC" + "7e57ab1e" * 4  # an account id, not a secret
MIXPANEL_USER = "leakscan-svc.mp-service-account"
MIXPANEL_PROJECT = 2718281


@dataclass(frozen=True)
class LeakCase:
    provider: str
    system_name: str
    system_type: str
    authentication_type: str
    stream: str
    key: str  # the record field that identifies a record
    credentials: dict[str, str]
    start: Callable[[LeakCase], LoopbackEmulator]
    endpoint: Callable[[str], str] = lambda root: root  # api_endpoint for an emulator's root URL
    extra_credentials: Callable[[str], dict[str, str]] = lambda root: {}  # fields that name URLs
    extra_rules: dict[str, Any] = field(default_factory=dict)
    extra_sync: dict[str, Any] = field(default_factory=dict)  # more of `sync_config`
    basic_pairs: tuple[tuple[str, str], ...] = ()  # (user, password) sent as HTTP Basic
    not_secret: frozenset[str] = frozenset()  # credential fields that are identifiers

    @property
    def ref(self) -> str:
        return self.system_name.lower()

    @property
    def table(self) -> str:
        return f"leak_{self.provider}"

    def mapping(self, root: str, **rules_changes: Any) -> dict[str, Any]:
        """The mapping document (as `esm mapping add` takes it) pointed at `root`."""
        rules: dict[str, Any] = {
            "field_mappings": {self.key: f"{self.table}.source_id"},
            "sync_config": {
                "stream": self.stream,
                "key": self.key,
                "batch_size": 50,
                "error_threshold": 1000,  # the scan fails a mapping many times on purpose
                **self.extra_sync,
            },
            **self.extra_rules,
        }
        for name, value in rules_changes.items():
            rules[name] = value
        return {
            "system_name": self.system_name,
            "system_type": self.system_type,
            "provider_name": "rest" if self.provider.startswith("booking") else self.provider,
            "api_endpoint": self.endpoint(root),
            "authentication_type": self.authentication_type,
            "credentials": {**self.credentials, **self.extra_credentials(root)},
            "sync_frequency": "manual",
            "retry_attempts": 1,  # retries (and their log lines) happen; a burst outlasts them
            "timeout_seconds": 1,
            "mapping_rules": rules,
            "created_by": OWNER,
        }

    def secrets(self) -> list[str]:
        """Every credential value (identifiers excepted) and its encoded forms."""
        clear = [v for k, v in self.credentials.items() if k not in self.not_secret]
        forms: set[str] = set()
        for value in clear:
            forms.update(encoded_forms(value))
        for user, password in self.basic_pairs:
            forms.update(encoded_forms(f"{user}:{password}"))
        return sorted(f for f in forms if len(f) >= 8)


def encoded_forms(value: str) -> set[str]:
    raw = value.encode()
    b64 = base64.b64encode(raw).decode()
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    # A base64 text embedded in a longer one starts at another offset: its stable core is enough.
    return {value, quote(value, safe=""), quote_plus(value), b64, b64.rstrip("="), urlsafe.rstrip("=")}


def _webhook_secret(provider: str) -> dict[str, str]:
    return {"webhook_secret": f"whk-leakscan-{provider}-Hq29xQ7v"}


STRIPE_KEY = "sk_test_leakscanStripe9fK2hQ7mN4pX1"
TWILIO_TOKEN = "leakscan-twilio-auth-token-5Rt8Yu"
TELEGRAM_TOKEN = "975318642:AAHleakScanTelegramToken_98765432zzz"
SLACK_TOKEN = "xoxb-7777777777-8888888888-LeakScanSlackToken9"
SENDGRID_KEY = "SG.leakscan-sendgrid.K3yValue-0123456789abcdefghijkl"
MIXPANEL_SECRET = "mpSA-leakscan-Zx8cV7bN6mM5qW"
HUBSPOT_TOKEN = "pat-na1-1eaf5ca2-0b0b-4c4c-9d9d-leakscanhubs"
MAILCHIMP_KEY = "5f1e2d3c4b5a69788796a5b4c3d2e1f0-us6"
BOOKING_KEY = "bk_live_leakscan0a1b2c3d4e5f6a7b8c9d0e1f"
BOOKING_QUERY_KEY = "bkq-leakscan-7c6b5a4f3e2d1c0b9a8f"  # sent in the query string
BOOKING_USER, BOOKING_PASSWORD = "leakscan-booking-user", "bkpw-leakscan-Mn4Bv6Cx8Z"


def _booking_rules(auth: dict[str, Any]) -> dict[str, Any]:
    return {"x-rest": {**BOOKING_REST, "auth": auth}}


CASES: dict[str, LeakCase] = {
    "stripe": LeakCase(
        "stripe",
        "Leak Stripe",
        "payment_gateway",
        "api_key",
        "customers",
        "id",
        {"api_key": STRIPE_KEY, **_webhook_secret("stripe")},
        lambda c: StripeEmulator(api_keys=[STRIPE_KEY], customers=30, charges=10, seed=3),
    ),
    "twilio": LeakCase(
        "twilio",
        "Leak Twilio",
        "sms_provider",
        "basic_auth",
        "messages",
        "sid",
        {"account_sid": TWILIO_ACCOUNT, "auth_token": TWILIO_TOKEN, **_webhook_secret("twilio")},
        lambda c: TwilioEmulator(account_sid=TWILIO_ACCOUNT, auth_token=TWILIO_TOKEN, messages=30, seed=3),
        basic_pairs=((TWILIO_ACCOUNT, TWILIO_TOKEN),),
        not_secret=frozenset({"account_sid"}),
    ),
    "telegram": LeakCase(
        "telegram",
        "Leak Telegram",
        "social_media",
        "api_key",
        "updates",
        "update_id",
        {"bot_token": TELEGRAM_TOKEN, **_webhook_secret("telegram")},
        lambda c: TelegramEmulator(tokens=[TELEGRAM_TOKEN], updates=30, seed=3),
    ),
    "slack": LeakCase(
        "slack",
        "Leak Slack",
        "social_media",
        "oauth2",
        "users",
        "id",
        {"bot_token": SLACK_TOKEN, **_webhook_secret("slack")},
        lambda c: SlackEmulator(tokens=[SLACK_TOKEN], users=20, channels=3, seed=3),
        endpoint=lambda root: root + "/api",
    ),
    "sendgrid": LeakCase(
        "sendgrid",
        "Leak SendGrid",
        "email_service",
        "api_key",
        "bounces",
        "email",
        {"api_key": SENDGRID_KEY, **_webhook_secret("sendgrid")},
        lambda c: SendGridEmulator(api_keys=[SENDGRID_KEY], contacts=10, suppressions=20, seed=3),
    ),
    "mixpanel": LeakCase(
        "mixpanel",
        "Leak Mixpanel",
        "analytics",
        "basic_auth",
        "events",
        "properties.$insert_id",
        {
            "username": MIXPANEL_USER,
            "secret": MIXPANEL_SECRET,
            "project_id": str(MIXPANEL_PROJECT),
            **_webhook_secret("mixpanel"),
        },
        lambda c: MixpanelEmulator(
            service_accounts={MIXPANEL_USER: MIXPANEL_SECRET}, project_id=MIXPANEL_PROJECT, events=30
        ),
        extra_credentials=lambda root: {"export_url": root},
        extra_sync={"start_date": "2026-01-01"},
        basic_pairs=((MIXPANEL_USER, MIXPANEL_SECRET),),
        not_secret=frozenset({"username", "project_id"}),
    ),
    "hubspot": LeakCase(
        "hubspot",
        "Leak HubSpot",
        "crm",
        "api_key",
        "contacts",
        "id",
        {"private_app_token": HUBSPOT_TOKEN, **_webhook_secret("hubspot")},
        lambda c: HubSpotEmulator([HUBSPOT_TOKEN], contacts=20, archived=1, seed=3),
    ),
    "mailchimp": LeakCase(
        "mailchimp",
        "Leak Mailchimp",
        "email_service",
        "basic_auth",
        "members",
        "id",
        {"api_key": MAILCHIMP_KEY, "list_id": "leaklist01", **_webhook_secret("mailchimp")},
        lambda c: MailchimpEmulator([MAILCHIMP_KEY], list_id="leaklist01", members=20, archived=1, seed=3),
        endpoint=lambda root: root + "/3.0",
        basic_pairs=(("anystring", MAILCHIMP_KEY),),
        not_secret=frozenset({"list_id"}),
    ),
    "booking": LeakCase(
        "booking",
        "Leak Booking",
        "booking_platform",
        "api_key",
        "members",
        "id",
        {"api_key": BOOKING_KEY, **_webhook_secret("booking")},
        lambda c: BookingEmulator(api_keys=[BOOKING_KEY], members=30, bookings=20, seed=3),
        extra_rules={"x-rest": BOOKING_REST},
    ),
    # The key in the query string, on a stream whose next-page URL echoes the query back.
    "booking_query": LeakCase(
        "booking_query",
        "Leak Booking Query",
        "booking_platform",
        "api_key",
        "waitlist",
        "id",
        {"api_key": BOOKING_QUERY_KEY},
        lambda c: BookingEmulator(api_keys=[BOOKING_QUERY_KEY], members=10, bookings=10, seed=3),
        extra_rules=_booking_rules({"type": "api_key", "in": "query", "name": "api_key"}),
    ),
    "booking_basic": LeakCase(
        "booking_basic",
        "Leak Booking Basic",
        "booking_platform",
        "basic_auth",
        "members",
        "id",
        {"username": BOOKING_USER, "password": BOOKING_PASSWORD},
        lambda c: BookingEmulator(
            api_keys=["bk-unused-key-of-another-client"],
            basic_users={BOOKING_USER: BOOKING_PASSWORD},
            members=20,
            bookings=10,
            seed=3,
        ),
        extra_rules=_booking_rules({"type": "basic"}),
        basic_pairs=((BOOKING_USER, BOOKING_PASSWORD),),
        not_secret=frozenset({"username"}),
    ),
}
