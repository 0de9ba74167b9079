"""From a mapping row and its decrypted credentials to a ready provider client.

Given the catalog URL, a mapping with `sync_config.rate_limiting` gets a client whose every request
first takes a token from its credential's bucket in the catalog (`catalog.rate_limits`): built here,
every path that builds a client (the engine under Dagster or `esm sync`, the probe, the sensors)
is throttled alike. Without the URL or without `rate_limiting`, requests are not throttled.
"""

from __future__ import annotations

from typing import Any

from esm_dagster.catalog.models import ExternalSystemMapping
from esm_dagster.catalog.rate_limits import SharedTokenBucket, credential_bucket_key
from esm_dagster.providers import get_provider_class
from esm_dagster.providers.base import Provider
from esm_dagster.providers.stripe import StripeProvider
from esm_dagster.rules.schema import RulesError, parse_rules
from esm_dagster.security.endpoints import check_endpoint
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy
from esm_dagster.transport.bucket import BucketLimits, TokenSource


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


def rate_limits_of(row: ExternalSystemMapping) -> BucketLimits | None:
    """The bucket limits of the row's `sync_config.rate_limiting`, or None when it declares none."""
    if not row.mapping_rules:
        return None
    try:
        rules = parse_rules(row.mapping_rules)
    except RulesError as exc:
        raise ProviderConfigError(f"mapping {row.system_name!r}: mapping_rules.{exc}") from None
    limiting = rules.sync.rate_limiting
    if limiting is None:
        return None
    return BucketLimits.from_rules(limiting.requests_per_minute, limiting.burst_limit)


def _limiter(
    row: ExternalSystemMapping, base_url: str, credential: Secret, catalog_url: str | None
) -> TokenSource | None:
    if catalog_url is None:
        return None
    limits = rate_limits_of(row)
    if limits is None:
        return None
    key = credential_bucket_key(row.provider_name, base_url, credential)
    return SharedTokenBucket(catalog_url, key, limits, provider_name=row.provider_name)


def build_provider(
    row: ExternalSystemMapping, credentials: dict[str, Any], *, catalog_url: str | None = None
) -> Provider:
    """The row's client; `catalog_url` (where the rate-limit buckets live) turns its limit on."""
    mapping = row.system_name
    base_url = check_endpoint(row.api_endpoint, mapping=repr(mapping))
    cls = get_provider_class(row.provider_name)
    if issubclass(cls, StripeProvider):
        api_key = _credential(credentials, mapping, "api_key", "secret_key")
        policy = TransportPolicy(
            retry_attempts=int(row.retry_attempts),
            timeout_seconds=float(row.timeout_seconds),
            limiter=_limiter(row, base_url, api_key, catalog_url),
        )
        return cls(base_url=base_url, api_key=api_key, api_version=row.api_version, policy=policy)
    raise ProviderConfigError(
        f"mapping {mapping!r}: provider_name {row.provider_name!r} has no client factory"
    )
