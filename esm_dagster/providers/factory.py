"""From a mapping row and its decrypted credentials to a ready provider client."""

from __future__ import annotations

from typing import Any

from esm_dagster.catalog.models import ExternalSystemMapping
from esm_dagster.providers import get_provider_class
from esm_dagster.providers.base import Provider
from esm_dagster.providers.stripe import StripeProvider
from esm_dagster.security.endpoints import check_endpoint
from esm_dagster.security.secret import Secret


class ProviderConfigError(ValueError):
    pass


def resolve_stream(provider_name: str, stream: str | None) -> str:
    """The mapping's stream: the one it names, checked against the provider, or the default."""
    names = [spec.name for spec in get_provider_class(provider_name).STREAMS]
    if stream is None:
        return names[0]
    if stream not in names:
        raise ProviderConfigError(
            f"sync_config.stream {stream!r} is not a stream of {provider_name} (streams: {', '.join(names)})"
        )
    return stream


def _credential(credentials: dict[str, Any], mapping: str, *names: str) -> Secret:
    for name in names:
        value = credentials.get(name)
        if value:
            return value if isinstance(value, Secret) else Secret(str(value))
    raise ProviderConfigError(f"mapping {mapping!r}: credentials.{names[0]} is missing")


def build_provider(row: ExternalSystemMapping, credentials: dict[str, Any]) -> Provider:
    mapping = row.system_name
    base_url = check_endpoint(row.api_endpoint, mapping=repr(mapping))
    cls = get_provider_class(row.provider_name)
    if issubclass(cls, StripeProvider):
        return cls(
            base_url=base_url,
            api_key=_credential(credentials, mapping, "api_key", "secret_key"),
            api_version=row.api_version,
            timeout_seconds=float(row.timeout_seconds),
            retry_attempts=int(row.retry_attempts),  # both feed the provider's TransportPolicy
        )
    raise ProviderConfigError(
        f"mapping {mapping!r}: provider_name {row.provider_name!r} has no client factory"
    )
