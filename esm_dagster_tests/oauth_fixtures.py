"""Test helpers for the OAuth2 providers: RSA key pairs, catalog mappings for PayPal and Salesforce,
and reading a mapping's decrypted token state back from the catalog."""

from __future__ import annotations

import functools
import uuid
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.mappings import MappingInput, upsert_mapping
from esm_dagster.catalog.models import ExternalSystemMapping, User, UserRole
from esm_dagster.security.secret import Secret
from esm_dagster.security.vault import Vault

OWNER = "integrations@club.example"
SF_CLIENT_ID = "3MVG9esmTestConsumerKey"
SF_CLIENT_SECRET = "sf-consumer-secret-7Hq2Lm9Zx4"
SF_USERNAME = "integration@club.example"
SF_AUDIENCE = "https://login.salesforce.com"
PP_CLIENT_ID = "AZesmPayPalClientId"
PP_CLIENT_SECRET = "EPpaypal-client-secret-9Wn3Xr"


@functools.cache
def rsa_pair(name: str = "default") -> tuple[str, str]:
    """(private PEM, public PEM); one per name per test session (generating costs ~50 ms)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def add_mapping(url: str, raw: dict[str, Any]) -> str:
    """Write one mapping (and its owner) into the catalog; returns its id."""
    with session_factory(url).begin() as session:
        if session.scalar(select(User).where(User.email == OWNER)) is None:
            session.add(User(email=OWNER, full_name="Integrations", role=UserRole.ADMIN))
            session.flush()
        row, _ = upsert_mapping(
            session, Vault.from_env(), MappingInput.model_validate({"created_by": OWNER, **raw})
        )
        return str(row.id)


def salesforce_mapping(endpoint: str, credentials: dict[str, str], **rules: Any) -> dict[str, Any]:
    return {
        "system_name": "Salesforce",
        "system_type": "crm",
        "provider_name": "salesforce",
        "api_endpoint": endpoint,
        "api_version": "62.0",
        "authentication_type": "oauth2",
        "credentials": {"client_id": SF_CLIENT_ID, **credentials},
        "sync_frequency": "hourly",
        "retry_attempts": 2,
        "timeout_seconds": 10,
        "mapping_rules": {
            "field_mappings": {
                "Email": "user.email",
                "LastName": "user.full_name",
                "Phone": "user.phone_number",
                "External_Id__c": "user.club_ref",
                "SystemModstamp": {"target": "user.sf_modified_at", "type": "timestamp"},
            },
            "validation_rules": {
                "required_fields": ["Email"],
                "data_types": {"Email": "email", "Phone": "phone_number"},
            },
            "sync_config": {"stream": "contacts", "key": "Id", "batch_size": 200, **rules},
        },
    }


def paypal_mapping(endpoint: str, credentials: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "system_name": "PayPal",
        "system_type": "payment_gateway",
        "provider_name": "paypal",
        "api_endpoint": endpoint,
        "authentication_type": "oauth2",
        "credentials": credentials or {"client_id": PP_CLIENT_ID, "client_secret": PP_CLIENT_SECRET},
        "sync_frequency": "daily",
        "retry_attempts": 2,
        "timeout_seconds": 10,
        "mapping_rules": {
            "field_mappings": {
                "transaction_info.transaction_amount.value": {
                    "target": "payment.amount",
                    "type": "money",
                    "currency_from": "transaction_info.transaction_amount.currency_code",
                },
                "transaction_info.transaction_amount.currency_code": "payment.currency",
                "transaction_info.transaction_status": "payment.status",
                "transaction_info.transaction_initiation_date": {
                    "target": "payment.paid_at",
                    "type": "timestamp",
                },
                "payer_info.email_address": {"target": "payment.billing_email", "type": "email"},
            },
            "validation_rules": {"required_fields": ["transaction_info.transaction_amount.value"]},
            "sync_config": {
                "stream": "transactions",
                "key": "transaction_info.transaction_id",
                "batch_size": 100,
            },
        },
    }


def prepare_target_tables(url: str, raw: dict[str, Any]) -> None:
    """Create the mapping's target tables up front (two first runs racing to widen the same table is
    the engine's own issue, not what the OAuth tests are about)."""
    from esm_dagster.rules.plan import compile_rules
    from esm_dagster.rules.schema import parse_rules
    from esm_dagster.sync.engine import target_tables

    target_tables(url, compile_rules(parse_rules(raw["mapping_rules"])))


def stored_credentials(url: str, mapping_id: str) -> dict[str, Secret]:
    with session_factory(url)() as session:
        row = session.get(ExternalSystemMapping, uuid.UUID(mapping_id))
        assert row is not None
        return Vault.from_env().decrypt(row.credentials)


def set_credentials(url: str, mapping_id: str, credentials: dict[str, Any]) -> None:
    with session_factory(url).begin() as session:
        row = session.get(ExternalSystemMapping, uuid.UUID(mapping_id))
        assert row is not None
        row.credentials = Vault.from_env().encrypt(credentials)
