"""From a mapping row and its decrypted credentials to a ready provider client.

The same for every provider: the endpoint is checked, the transport policy is built from the row's
`retry_attempts` and `timeout_seconds`, and, given the catalog URL, a mapping with
`sync_config.rate_limiting` gets a limiter: every request first takes a token from its credential's
bucket in the catalog (`catalog.rate_limits`). Built here, every path that builds a client (the
engine under Dagster or `esm sync`, the probe, the sensors) is throttled alike. The provider class
then reads its own credential fields from a `ProviderContext` (`Provider.from_context`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from esm_dagster.catalog.models import ExternalSystemMapping
from esm_dagster.catalog.rate_limits import SharedTokenBucket, credential_bucket_key
from esm_dagster.providers import get_provider_class
from esm_dagster.providers.auth_types import WEBHOOK, webhook_only_refusal
from esm_dagster.providers.base import Provider
from esm_dagster.providers.context import ProviderConfigError, ProviderContext
from esm_dagster.rules.schema import MappingRules, RulesError, parse_rules
from esm_dagster.security.endpoints import EndpointPolicy
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy
from esm_dagster.transport.bucket import BucketLimits, TokenSource

__all__ = ["ProviderConfigError", "build_provider", "endpoint_policy_of", "rate_limits_of", "resolve_stream"]

# Fields that are tokens a credential is given, not the credential: never part of a bucket key.
_TOKEN_FIELDS = frozenset({"access_token", "refresh_token", "expires_at", "token_type", "scope"})


def resolve_stream(provider_name: str, stream: str | None, rules: MappingRules | None = None) -> str:
    """The mapping's stream: the one it names, checked against the provider, or the default.

    `rules` are the mapping's: a provider configured by them (`rest`) takes its streams from there.
    """
    names = get_provider_class(provider_name).stream_names(rules)
    if not names:
        raise ProviderConfigError(f"provider {provider_name} has no streams")
    if stream is None:
        return names[0]
    if stream not in names:
        raise ProviderConfigError(
            f"sync_config.stream {stream!r} is not a stream of {provider_name} (streams: {', '.join(names)})"
        )
    return stream


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


def endpoint_policy_of(row: ExternalSystemMapping) -> EndpointPolicy:
    """The row's endpoint policy: the installation's settings plus its own allowlist and CA bundle."""
    allowed: tuple[str, ...] = ()
    ca_bundle = None
    if row.mapping_rules:
        try:
            sync = parse_rules(row.mapping_rules).sync
        except RulesError as exc:
            raise ProviderConfigError(f"mapping {row.system_name!r}: mapping_rules.{exc}") from None
        allowed, ca_bundle = sync.allowed_hosts, sync.ca_bundle
    return EndpointPolicy.from_env(mapping=repr(row.system_name), allowed_hosts=allowed, ca_bundle=ca_bundle)


def bucket_identity(cls: type[Provider], credentials: Mapping[str, Any]) -> Secret:
    """The credential's identity for its rate-limit bucket: its `IDENTITY_FIELDS`, else every
    field but issued tokens; the same account always lands in the same bucket."""
    names = cls.identity_fields(credentials) or tuple(
        sorted(k for k in credentials if k not in _TOKEN_FIELDS)
    )
    present = [(name, credentials.get(name)) for name in names if credentials.get(name)]
    values = [(name, value.reveal() if isinstance(value, Secret) else str(value)) for name, value in present]
    if len(values) == 1:
        return Secret(values[0][1])  # one field (an API key): the key itself, as before
    return Secret("\n".join(f"{name}={value}" for name, value in values))


def _limiter(
    row: ExternalSystemMapping,
    cls: type[Provider],
    base_url: str,
    credentials: Mapping[str, Any],
    catalog_url: str | None,
) -> TokenSource | None:
    if catalog_url is None:
        return None
    limits = rate_limits_of(row)
    if limits is None:
        return None
    key = credential_bucket_key(row.provider_name, base_url, bucket_identity(cls, credentials))
    return SharedTokenBucket(catalog_url, key, limits, provider_name=row.provider_name)


def build_provider(
    row: ExternalSystemMapping, credentials: dict[str, Any], *, catalog_url: str | None = None
) -> Provider:
    """The row's client; `catalog_url` (where the rate-limit buckets live) turns its limit on."""
    cls = get_provider_class(row.provider_name)
    if str(row.authentication_type) == WEBHOOK:  # nothing to call the API with: refuse, send nothing
        others = [kind for kind in cls.AUTH_TYPES if kind != WEBHOOK]
        raise ProviderConfigError(webhook_only_refusal(row.system_name, cls.name, others))
    endpoints = endpoint_policy_of(row)
    base_url = endpoints.check_url(row.api_endpoint)
    policy = TransportPolicy(
        retry_attempts=int(row.retry_attempts),
        timeout_seconds=float(row.timeout_seconds),
        limiter=_limiter(row, cls, base_url, credentials, catalog_url),
        endpoints=endpoints,
    )
    ctx = ProviderContext(
        row=row, credentials=credentials, base_url=base_url, policy=policy, catalog_url=catalog_url
    )
    try:
        return cls.from_context(ctx)
    except NotImplementedError:
        raise ProviderConfigError(
            f"mapping {row.system_name!r}: provider_name {row.provider_name!r} has no client factory"
        ) from None
