"""From a mapping row and its decrypted credentials to a ready provider client."""

from __future__ import annotations

from typing import Any

from esm_dagster.catalog.models import ExternalSystemMapping
from esm_dagster.providers.base import Provider
from esm_dagster.security.endpoints import check_endpoint
from esm_dagster.security.secret import Secret

DEFAULT_STREAMS = {"stripe": "customers"}


class ProviderConfigError(ValueError):
    pass


def default_stream(provider_name: str) -> str:
    try:
        return DEFAULT_STREAMS[provider_name.lower()]
    except KeyError:
        raise ProviderConfigError(
            f"provider {provider_name!r} is not supported (known: {', '.join(sorted(DEFAULT_STREAMS))})"
        ) from None


def _credential(credentials: dict[str, Any], mapping: str, *names: str) -> Secret:
    for name in names:
        value = credentials.get(name)
        if value:
            return value if isinstance(value, Secret) else Secret(str(value))
    raise ProviderConfigError(f"mapping {mapping!r}: credentials.{names[0]} is missing")


def build_provider(row: ExternalSystemMapping, credentials: dict[str, Any]) -> Provider:
    provider = row.provider_name.lower()
    mapping = row.system_name
    base_url = check_endpoint(row.api_endpoint, mapping=repr(mapping))
    if provider == "stripe":
        from esm_dagster.providers.stripe import StripeProvider

        return StripeProvider(
            base_url=base_url,
            api_key=_credential(credentials, mapping, "api_key", "secret_key"),
            api_version=row.api_version,
            timeout_seconds=float(row.timeout_seconds),
        )
    raise ProviderConfigError(f"mapping {mapping!r}: provider_name {row.provider_name!r} is not supported")
