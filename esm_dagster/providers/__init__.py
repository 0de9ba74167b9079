"""Provider modules, one per external system, found by the catalog's `provider_name`.

`get_provider_class("stripe")` imports `esm_dagster.providers.stripe` on first use, so a code
location only imports the client libraries of the providers its catalog rows name.
"""

from __future__ import annotations

import importlib

from esm_dagster.providers.base import Page, Provider, ProviderError, StreamSpec, WriteSpec

_REGISTRY: dict[str, str] = {
    "rest": "esm_dagster.providers.rest:RestProvider",
    "paypal": "esm_dagster.providers.paypal:PayPalProvider",
    "salesforce": "esm_dagster.providers.salesforce:SalesforceProvider",
    "stripe": "esm_dagster.providers.stripe:StripeProvider",
    "twilio": "esm_dagster.providers.twilio:TwilioProvider",
    "slack": "esm_dagster.providers.slack:SlackProvider",
    "telegram": "esm_dagster.providers.telegram:TelegramProvider",
    "sendgrid": "esm_dagster.providers.sendgrid:SendGridProvider",
    "mixpanel": "esm_dagster.providers.mixpanel:MixpanelProvider",
    "hubspot": "esm_dagster.providers.hubspot:HubSpotProvider",
    "mailchimp": "esm_dagster.providers.mailchimp:MailchimpProvider",
}


class UnknownProviderError(LookupError):
    """A `provider_name` with no provider module."""


def available_providers() -> list[str]:
    return sorted(_REGISTRY)


def get_provider_class(provider_name: str) -> type[Provider]:
    """The provider class for a catalog `provider_name` (case and surrounding spaces ignored)."""
    key = provider_name.strip().lower() if isinstance(provider_name, str) else ""
    target = _REGISTRY.get(key)
    if target is None:
        known = ", ".join(available_providers())
        raise UnknownProviderError(f"no provider named {provider_name!r}; known providers: {known}")
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise TypeError(f"{target} is not a Provider subclass")
    return cls


__all__ = [
    "Page",
    "Provider",
    "ProviderError",
    "StreamSpec",
    "UnknownProviderError",
    "WriteSpec",
    "available_providers",
    "get_provider_class",
]
