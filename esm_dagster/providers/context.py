"""What a provider class is built from: the mapping row, its decrypted credentials, its policy.

The factory (`providers.factory.build_provider`) checks the endpoint and builds the transport policy
the same way for every provider, then hands this context to the provider class's `from_context`;
each provider reads the credential fields it needs through `secret()` / `value()`, so a missing
field names the mapping and the field, never the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy

if TYPE_CHECKING:
    from esm_dagster.catalog.models import ExternalSystemMapping


class ProviderConfigError(ValueError):
    """A mapping that cannot become a client: a missing credential field, an unusable setting."""


@dataclass(frozen=True, slots=True)
class ProviderContext:
    row: ExternalSystemMapping
    credentials: Mapping[str, Any]
    base_url: str
    policy: TransportPolicy
    catalog_url: str | None = None  # where token state and rate-limit buckets live, when known

    @property
    def mapping(self) -> str:
        return str(self.row.system_name)

    @property
    def api_version(self) -> str | None:
        return self.row.api_version or None

    def secret(self, *names: str) -> Secret:
        """The first of `names` present in the credentials, as a Secret; else a config error."""
        found = self.optional_secret(*names)
        if found is None:
            raise ProviderConfigError(f"mapping {self.mapping!r}: credentials.{names[0]} is missing")
        return found

    def optional_secret(self, *names: str) -> Secret | None:
        for name in names:
            value = self.credentials.get(name)
            if value:
                return value if isinstance(value, Secret) else Secret(str(value))
        return None

    def value(self, *names: str, default: str | None = None) -> str | None:
        """A non-secret credential field (an account id, a data centre, a project id)."""
        for name in names:
            value = self.credentials.get(name)
            if value:
                return value.reveal() if isinstance(value, Secret) else str(value)
        return default

    def required_value(self, *names: str) -> str:
        found = self.value(*names)
        if found is None:
            raise ProviderConfigError(f"mapping {self.mapping!r}: credentials.{names[0]} is missing")
        return found
