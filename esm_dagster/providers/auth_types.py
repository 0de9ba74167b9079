"""`authentication_type` against the provider: refused when the row is written, not at the first sync.

The column is the seed's enum (api_key, oauth2, basic_auth, jwt, webhook); what each value means is
the provider's business, so each provider class declares the types it takes (`AUTH_TYPES`) and the
credential fields each needs (`CREDENTIAL_SHAPES`). A row whose type the provider does not take, or
whose credentials lack a field of every shape, would fail only at its first run, at 3 a.m.; here
it is refused with the mapping, the field and the value named, never a credential value (only
field names are read).

`webhook` is for a mapping that only *receives* a provider's webhooks (`esm webhooks serve`): its
credentials hold the signing key and no API credential, so it cannot be synced, probed or polled.
Providers whose webhooks we verify (`webhooks.schemes`) accept it; `webhook_only_refusal` is the
text every client path (sync, probe, sensor poll) raises for such a row instead of a request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from esm_dagster.security.secret import Secret

if TYPE_CHECKING:
    from esm_dagster.providers.base import Provider
    from esm_dagster.rules.schema import MappingRules

WEBHOOK = "webhook"


def _set(credentials: Mapping[str, Any], field: str) -> bool:
    value = credentials.get(field)
    if isinstance(value, Secret):
        return bool(value.reveal())
    return bool(value)


def missing_fields(shape: Sequence[str], credentials: Mapping[str, Any]) -> list[str]:
    """The fields of `shape` that `credentials` leave unset (`a|b`: either name will do)."""
    return [field for field in shape if not any(_set(credentials, name) for name in field.split("|"))]


def _describe(shape: Sequence[str]) -> str:
    return " + ".join(" or ".join(f"credentials.{n}" for n in field.split("|")) for field in shape)


def authentication_problem(
    cls: type[Provider],
    provider_name: str,
    auth_type: str,
    credentials: Mapping[str, Any],
    *,
    mapping: str,
    rules: MappingRules | None = None,
) -> str | None:
    """Why this row's `authentication_type` / credentials cannot work with its provider, or None."""
    allowed = cls.auth_types(rules)
    auth_type = str(auth_type)
    if auth_type not in allowed:
        return (
            f"mapping {mapping!r}: authentication_type {auth_type!r} is not supported by provider "
            f"{provider_name!r} (supported: {', '.join(sorted(allowed)) or 'none'})"
        )
    shapes = cls.credential_shapes(auth_type, rules)
    if not shapes:
        return None
    gaps = [missing_fields(shape, credentials) for shape in shapes]
    if any(not gap for gap in gaps):
        return None
    closest = min(range(len(shapes)), key=lambda i: len(gaps[i]))
    first = gaps[closest][0].split("|")[0]
    ways = "; or ".join(_describe(shape) for shape in shapes)
    return (
        f"mapping {mapping!r}: credentials.{first} is missing for authentication_type {auth_type!r} "
        f"of provider {provider_name!r} (it needs {ways})"
    )


def webhook_only_refusal(mapping: str, provider_name: str, others: Sequence[str]) -> str:
    kinds = ", ".join(sorted(others)) or "none"
    return (
        f"mapping {mapping!r}: authentication_type 'webhook' only receives {provider_name} webhooks "
        "(esm webhooks serve); it holds no API credentials, so it cannot be synced, probed or polled. "
        f"Add a mapping with one of {kinds} and its credentials to read {provider_name}'s API."
    )
