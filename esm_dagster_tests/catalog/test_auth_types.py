"""`authentication_type` is checked against the provider when a mapping is written (`esm mapping add`,
`mapping edit`, `upsert_mapping`, `edit_mapping`), on SQLite and PostgreSQL; a webhook-only mapping
is refused at sync before any request. Every refusal names the mapping, the field and the value,
and never a credential value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import MappingError, MappingInput, edit_mapping, get_mapping, upsert_mapping
from esm_dagster.catalog.models import AuthenticationType, SyncStatus
from esm_dagster.cli import main
from esm_dagster.providers import available_providers, get_provider_class
from esm_dagster.providers.auth_types import authentication_problem
from esm_dagster.rules.schema import parse_rules
from esm_dagster.sandbox.hubspot import HubSpotEmulator
from esm_dagster.security.vault import Vault
from esm_dagster.sync.engine import SyncFailed, run_mapping
from esm_dagster.webhooks.schemes import scheme_for

ROOT = Path(__file__).resolve().parents[2]
CLIENT_SECRET = "hs-app-secret-Zq81Lm4Xw0"
PRIVATE_TOKEN = "pat-na1-99999999-8888-7777-6666-555555555555"
RULES: dict[str, Any] = {
    "field_mappings": {"properties.email": {"target": "user.email", "type": "email"}},
    "sync_config": {"stream": "contacts"},
}


def hubspot(
    auth_type: str, credentials: dict[str, str], endpoint: str = "https://api.hubapi.com"
) -> MappingInput:
    return MappingInput.model_validate(
        {
            "system_name": "Club HubSpot",
            "system_type": "crm",
            "provider_name": "hubspot",
            "api_endpoint": endpoint,
            "authentication_type": auth_type,
            "credentials": credentials,
            "mapping_rules": RULES,
            "retry_attempts": 0,
        }
    )


def refused(url: str, item: MappingInput) -> str:
    with session_factory(url).begin() as session, pytest.raises(MappingError) as info:
        upsert_mapping(session, Vault.from_env(), item)
    with get_engine(url).connect() as conn:
        written = conn.execute(
            sa.text("select count(*) from external_system_mapping where system_name = :name"),
            {"name": item.system_name},
        ).scalar_one()
    assert written == 0  # nothing of a refused row is written
    return str(info.value)


def test_every_provider_declares_its_auth_types_and_webhook_matches_the_verifiers() -> None:
    for name in available_providers():
        cls = get_provider_class(name)
        assert cls.AUTH_TYPES and {t.value for t in AuthenticationType} >= cls.AUTH_TYPES, name
        assert set(cls.CREDENTIAL_SHAPES) <= cls.AUTH_TYPES, name
        scheme = scheme_for(name)
        assert ("webhook" in cls.AUTH_TYPES) == (scheme is not None), name
        if scheme is not None:
            (shape,) = cls.CREDENTIAL_SHAPES["webhook"]
            # The first field of the shape is the one the verifier reads, under its names.
            assert tuple(shape[0].split("|")) == scheme.key_fields, name
    assert {"api_key", "webhook"} == get_provider_class("stripe").AUTH_TYPES
    assert {"api_key", "oauth2", "webhook"} == get_provider_class("hubspot").AUTH_TYPES
    assert {"api_key", "basic_auth", "oauth2"} == get_provider_class("mailchimp").AUTH_TYPES
    assert {"oauth2", "jwt"} == get_provider_class("salesforce").AUTH_TYPES


def test_an_auth_type_the_provider_does_not_take_is_refused(db_url: str, fernet_key: str) -> None:
    item = hubspot("basic_auth", {"private_app_token": PRIVATE_TOKEN})
    text = refused(db_url, item)
    assert text.startswith("mapping 'Club HubSpot': authentication_type 'basic_auth'")
    assert "supported: api_key, oauth2, webhook" in text and PRIVATE_TOKEN not in text


def test_credentials_missing_a_field_of_the_auth_type_are_refused(db_url: str, fernet_key: str) -> None:
    item = hubspot("oauth2", {"client_id": "app-1", "client_secret": CLIENT_SECRET})
    text = refused(db_url, item)
    assert "mapping 'Club HubSpot': credentials.refresh_token is missing" in text
    assert "authentication_type 'oauth2'" in text and CLIENT_SECRET not in text
    # A private-app token under `oauth2` is not an OAuth grant either.
    text = refused(db_url, hubspot("oauth2", {"private_app_token": PRIVATE_TOKEN}))
    assert "credentials.client_id is missing" in text and PRIVATE_TOKEN not in text


def test_a_rest_mapping_is_checked_against_its_x_rest_auth(db_url: str, fernet_key: str) -> None:
    rules = {
        "field_mappings": {"id": "booking.external_ref"},
        "sync_config": {"stream": "bookings", "key": "id"},
        "x-rest": {
            "auth": {"type": "basic", "username": "account", "password": "api_password"},
            "streams": {
                "bookings": {
                    "path": "/bookings",
                    "record_path": "items",
                    "cursor_field": None,
                    "paginator": {"type": "offset"},
                }
            },
        },
    }
    base = {
        "system_name": "Court Booking",
        "system_type": "booking_platform",
        "provider_name": "rest",
        "api_endpoint": "https://api.courts.example",
        "mapping_rules": rules,
    }
    wrong_type = MappingInput.model_validate(
        {**base, "authentication_type": "api_key", "credentials": {"account": "a", "api_password": "pw-991"}}
    )
    assert "authentication_type 'api_key' is not supported by provider 'rest' (supported: basic_auth)" in (
        refused(db_url, wrong_type)
    )
    no_password = MappingInput.model_validate(
        {**base, "authentication_type": "basic_auth", "credentials": {"account": "a"}}
    )
    assert "credentials.api_password is missing" in refused(db_url, no_password)


def test_mapping_edit_rechecks_new_credentials_and_a_new_auth_type(db_url: str, fernet_key: str) -> None:
    with session_factory(db_url).begin() as session:
        upsert_mapping(session, Vault.from_env(), hubspot("api_key", {"private_app_token": PRIVATE_TOKEN}))
    with session_factory(db_url).begin() as session:
        row = get_mapping(session, "Club HubSpot")
        with pytest.raises(MappingError) as info:  # new type, the stored credentials lack its fields
            edit_mapping(session, row, {"authentication_type": "oauth2"})
        assert "credentials.client_id is missing" in str(info.value)
        with pytest.raises(MappingError) as info:
            edit_mapping(session, row, {"authentication_type": "jwt"})
        assert "authentication_type 'jwt' is not supported by provider 'hubspot'" in str(info.value)
        with pytest.raises(MappingError) as info:  # new credentials for the row's type
            edit_mapping(
                session, row, {}, credentials={"client_secret": CLIENT_SECRET}, vault=Vault.from_env()
            )
        assert "credentials.private_app_token is missing" in str(info.value)
        assert CLIENT_SECRET not in str(info.value)
        grant = {"client_id": "app-1", "client_secret": CLIENT_SECRET, "refresh_token": "rt-secret-1"}
        changed = edit_mapping(
            session, row, {"authentication_type": "oauth2"}, credentials=grant, vault=Vault.from_env()
        )
        assert changed == ["authentication_type", "credentials"]
    with session_factory(db_url)() as session:
        assert get_mapping(session, "Club HubSpot").authentication_type == AuthenticationType.OAUTH2


def test_esm_mapping_add_and_edit_refuse_with_the_field(
    db_url: str,
    fernet_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ESM_DATABASE_URL", db_url)
    doc = yaml.safe_load((ROOT / "examples" / "stripe_mapping.yaml").read_text())
    doc["authentication_type"] = "oauth2"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert main(["mapping", "add", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Stripe Club Account" in err and "authentication_type 'oauth2'" in err
    assert doc["credentials"]["api_key"] not in err
    assert main(["mapping", "add", str(ROOT / "examples" / "stripe_mapping.yaml")]) == 0
    capsys.readouterr()
    assert main(["mapping", "edit", "Stripe Club Account", "--set", "authentication_type=basic_auth"]) == 2
    err = capsys.readouterr().err
    assert "authentication_type 'basic_auth' is not supported by provider 'stripe'" in err


def test_a_webhook_only_mapping_is_accepted_and_its_sync_refused_before_any_request(
    db_url: str, fernet_key: str
) -> None:
    with HubSpotEmulator([PRIVATE_TOKEN], contacts=3, archived=0) as emulator:
        item = hubspot("webhook", {"client_secret": CLIENT_SECRET}, endpoint=emulator.url)
        with session_factory(db_url).begin() as session:
            upsert_mapping(session, Vault.from_env(), item)
        with pytest.raises(SyncFailed) as info:
            run_mapping(db_url, "Club HubSpot")
        text = str(info.value)
        assert "authentication_type 'webhook' only receives hubspot webhooks" in text
        assert "api_key, oauth2" in text and CLIENT_SECRET not in text
        assert emulator.request_count == 0
    with session_factory(db_url)() as session:
        assert get_mapping(session, "Club HubSpot").sync_status == SyncStatus.ACTIVE
    # A provider without a webhook verifier takes no webhook-only mapping.
    mixpanel = MappingInput.model_validate(
        {
            "system_name": "Club Mixpanel",
            "system_type": "analytics",
            "provider_name": "mixpanel",
            "api_endpoint": "https://api.mixpanel.com",
            "authentication_type": "webhook",
            "credentials": {"webhook_secret": "whsec-1"},
            "mapping_rules": {"field_mappings": {"event": "event.name"}},
        }
    )
    assert "authentication_type 'webhook' is not supported by provider 'mixpanel'" in refused(
        db_url, mixpanel
    )


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in [*sorted((ROOT / "examples").glob("*.yaml")), ROOT / "esm_dagster" / "demo" / "catalog.yaml"]:
        loaded = yaml.safe_load(path.read_text())
        items = loaded.get("mappings", [loaded]) if isinstance(loaded, dict) else loaded
        docs += [(path.name, d) for d in items if isinstance(d, dict) and "authentication_type" in d]
    return docs


def test_every_example_and_demo_mapping_passes_the_check() -> None:
    docs = _documents()
    assert len(docs) >= 3
    for name, doc in docs:
        cls = get_provider_class(doc["provider_name"])
        problem = authentication_problem(
            cls,
            doc["provider_name"],
            doc["authentication_type"],
            doc.get("credentials") or {},
            mapping=doc["system_name"],
            rules=parse_rules(doc["mapping_rules"]),
        )
        assert problem is None, (name, problem)
