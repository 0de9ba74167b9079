"""Dagster resources: the catalog, the vault and the provider client factory.

None of them holds a secret in its config: the vault reads its keys from the environment when a
run starts, so keys never reach Dagster's run config, snapshots or event log.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from esm_dagster.catalog.models import ExternalSystemMapping
from esm_dagster.providers.base import Provider
from esm_dagster.providers.factory import build_provider
from esm_dagster.security.vault import Vault


class CatalogResource(dg.ConfigurableResource):
    """Where the catalog lives (SQLite file or PostgreSQL); the target tables share it."""

    database_url: str


class VaultResource(dg.ConfigurableResource):
    """Opens credentials inside a run with the keys of `ESM_FERNET_KEYS` (or its key file)."""

    def vault(self) -> Vault:
        return Vault.from_env()


class ProvidersResource(dg.ConfigurableResource):
    """Builds the per-provider HTTP client for one mapping row and its decrypted credentials.

    The engine passes the catalog URL, where the credential's rate-limit bucket lives.
    """

    def build(
        self, row: ExternalSystemMapping, credentials: dict[str, Any], *, catalog_url: str | None = None
    ) -> Provider:
        return build_provider(row, credentials, catalog_url=catalog_url)
