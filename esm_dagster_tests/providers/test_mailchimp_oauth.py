"""Mailchimp with an OAuth access token (`authentication_type: oauth2`): the emulator over loopback,
which accepts only that token as a bearer (no API key), the catalog on SQLite and PostgreSQL.

The data centre comes from `credentials.dc` or from the OAuth metadata endpoint; a token the
metadata endpoint refuses is an auth error that never shows the token.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.mappings import MappingInput, upsert_mapping
from esm_dagster.catalog.models import ExternalSystemMapping
from esm_dagster.providers.context import ProviderConfigError
from esm_dagster.providers.factory import build_provider
from esm_dagster.sandbox.mailchimp import MailchimpEmulator
from esm_dagster.sandbox.mailchimp.emulator import METADATA_PATH
from esm_dagster.security.secret import Secret
from esm_dagster.security.vault import Vault
from esm_dagster.sync.engine import SyncFailed, run_mapping

TOKEN = "5c1f0e9d8b7a6c5d4e3f2a1b0c9d8e7f"  # Mailchimp OAuth tokens are 32 hex, no -usX suffix
RULES: dict[str, Any] = {
    "field_mappings": {
        "email_address": {"target": "user.email", "type": "email"},
        "status": "user.mailchimp_status",
    },
    "sync_config": {"stream": "members", "batch_size": 25},
}


@pytest.fixture
def emulator() -> Iterator[MailchimpEmulator]:
    with MailchimpEmulator([], oauth_tokens=[TOKEN], dc="us6", members=40, archived=2, seed=4) as em:
        yield em


def add(url: str, emulator: MailchimpEmulator, credentials: dict[str, str]) -> str:
    item = MappingInput.model_validate(
        {
            "system_name": "Club Mailchimp OAuth",
            "system_type": "email_service",
            "provider_name": "mailchimp",
            "api_endpoint": f"{emulator.url}/3.0",
            "authentication_type": "oauth2",
            "credentials": {"list_id": emulator.list_id, **credentials},
            "mapping_rules": RULES,
            "retry_attempts": 1,
            "timeout_seconds": 5,
        }
    )
    with session_factory(url).begin() as session:
        row, _ = upsert_mapping(session, Vault.from_env(), item)
        return str(row.id)


def test_oauth_token_with_its_data_centre_syncs_members(
    db_url: str, fernet_key: str, emulator: MailchimpEmulator
) -> None:
    mapping = add(db_url, emulator, {"access_token": TOKEN, "dc": "us6"})
    report = run_mapping(db_url, mapping)
    assert report.status == "success" and report.records_read == len(emulator.members())
    assert [r for r in emulator.requests if r.path == METADATA_PATH] == []


def test_data_centre_from_the_metadata_endpoint(
    db_url: str, fernet_key: str, emulator: MailchimpEmulator
) -> None:
    metadata = emulator.url + METADATA_PATH
    mapping = add(db_url, emulator, {"access_token": TOKEN, "metadata_url": metadata})
    report = run_mapping(db_url, mapping)
    assert report.status == "success" and report.records_read == len(emulator.members())
    assert len([r for r in emulator.requests if r.path == METADATA_PATH]) == 1


def test_a_refused_token_is_an_auth_error_without_the_token(
    db_url: str, fernet_key: str, emulator: MailchimpEmulator
) -> None:
    wrong = "0123456789abcdef0123456789abcdef"
    metadata = emulator.url + METADATA_PATH
    mapping = add(db_url, emulator, {"access_token": wrong, "metadata_url": metadata})
    with pytest.raises(SyncFailed) as info:
        run_mapping(db_url, mapping)
    report = info.value.report
    assert (report.error_class, report.error_code) == ("auth", "oauth_metadata")
    assert [r for r in emulator.requests if r.path.startswith("/3.0")] == []
    for text in (str(info.value), repr(info.value), report.error or ""):
        assert wrong not in text
    # With the dc given, the API itself refuses the token: the same holds for its 401.
    other = add(db_url, emulator, {"access_token": wrong, "dc": "us6"})
    with pytest.raises(SyncFailed) as info:
        run_mapping(db_url, other)
    assert info.value.report.error_class == "auth" and wrong not in str(info.value)


def test_an_endpoint_of_another_data_centre_is_refused_before_any_request(
    emulator: MailchimpEmulator,
) -> None:
    row = ExternalSystemMapping(
        system_name="Club Mailchimp OAuth",
        provider_name="mailchimp",
        api_endpoint="https://us9.api.mailchimp.com/3.0",
        authentication_type="oauth2",
        retry_attempts=0,
        timeout_seconds=5,
        mapping_rules=RULES,
    )
    credentials = {"access_token": Secret(TOKEN), "dc": "us6", "list_id": emulator.list_id}
    with pytest.raises(ProviderConfigError, match=r"us9\.api\.mailchimp\.com") as caught:
        build_provider(row, credentials)
    assert "'us6'" in str(caught.value) and TOKEN not in str(caught.value)
    bad_dc = {**credentials, "dc": "us-6/../x"}
    with pytest.raises(ProviderConfigError, match=r"credentials\.dc 'us-6/\.\./x'"):
        build_provider(row, bad_dc)
    assert emulator.request_count == 0
