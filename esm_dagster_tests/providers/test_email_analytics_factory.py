"""SendGrid and Mixpanel clients built from a mapping row by the factory, as the engine builds them."""

from __future__ import annotations

from typing import Any

import pytest

from esm_dagster.catalog.models import AuthenticationType, ExternalSystemMapping, SystemType
from esm_dagster.providers import get_provider_class
from esm_dagster.providers.context import ProviderConfigError
from esm_dagster.providers.factory import build_provider
from esm_dagster.providers.mixpanel import MixpanelProvider
from esm_dagster.providers.sendgrid import SendGridProvider
from esm_dagster.security.secret import Secret
from esm_dagster_tests.mixpanel_fixtures import PROJECT_ID, SECRET, USER, mixpanel_emulator
from esm_dagster_tests.sendgrid_fixtures import KEY, sendgrid_emulator


def row(provider: str, url: str, rules: dict[str, Any] | None = None) -> ExternalSystemMapping:
    return ExternalSystemMapping(
        system_name=f"{provider} test",
        system_type=SystemType.ANALYTICS if provider == "mixpanel" else SystemType.EMAIL_SERVICE,
        provider_name=provider,
        api_endpoint=url,
        authentication_type=AuthenticationType.BASIC_AUTH
        if provider == "mixpanel"
        else AuthenticationType.API_KEY,
        mapping_rules=rules or {"field_mappings": {"email": "t.email"}},
        retry_attempts=0,
        timeout_seconds=5,
    )


def test_both_are_registered() -> None:
    assert get_provider_class("sendgrid") is SendGridProvider
    assert get_provider_class(" Mixpanel ") is MixpanelProvider


def test_a_sendgrid_row_becomes_a_working_client() -> None:
    with sendgrid_emulator(contacts=3, suppressions=2) as emulator:
        client = build_provider(row("sendgrid", emulator.url + "/v3"), {"api_key": Secret(KEY)})
        assert isinstance(client, SendGridProvider) and client.base_url == emulator.url
        assert client.probe() >= 0
        assert KEY not in repr(client)


def test_a_key_that_is_not_a_sendgrid_key_is_refused_by_name_without_its_value() -> None:
    with pytest.raises(ProviderConfigError) as caught:
        build_provider(row("sendgrid", "https://api.sendgrid.com"), {"api_key": "sk_live_0123456789abcdef"})
    assert "credentials.api_key" in str(caught.value) and "0123456789abcdef" not in str(caught.value)


def test_a_mixpanel_service_account_row_reads_both_hosts_from_one_emulator() -> None:
    with mixpanel_emulator(events=5) as emulator:
        credentials = {"username": USER, "secret": Secret(SECRET), "project_id": str(PROJECT_ID)}
        client = build_provider(row("mixpanel", emulator.url), credentials)
        assert isinstance(client, MixpanelProvider) and client.export_url == emulator.url
        assert client.probe() >= 0
        assert SECRET not in repr(client)


def test_a_mixpanel_project_secret_row_works_without_project_id() -> None:
    with mixpanel_emulator(events=5, project_secret="legacy-secret-abc123") as emulator:
        client = build_provider(row("mixpanel", emulator.url), {"api_secret": Secret("legacy-secret-abc123")})
        client.probe()
    assert "project_id" not in emulator.requests[0].query


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ({"username": USER, "secret": SECRET}, "credentials.project_id is missing"),
        ({"project_id": "1"}, "credentials.api_secret"),
        ({"api_secret": "s", "project_timezone": "Mars/Olympus"}, "not a known timezone"),
    ],
)
def test_mixpanel_credential_problems_name_the_field(credentials: dict[str, str], message: str) -> None:
    with pytest.raises(ProviderConfigError, match=message) as caught:
        build_provider(row("mixpanel", "https://api.mixpanel.com"), credentials)
    assert SECRET not in str(caught.value)


def test_mixpanel_derives_the_data_host_and_takes_the_start_date_from_the_rules() -> None:
    rules = {"field_mappings": {"event": "e.name"}, "sync_config": {"start_date": "2026-03-01"}}
    client = build_provider(row("mixpanel", "https://api-eu.mixpanel.com", rules), {"api_secret": "s"})
    assert isinstance(client, MixpanelProvider)
    assert client.export_url == "https://data-eu.mixpanel.com" and str(client.start_date) == "2026-03-01"
    with pytest.raises(ProviderConfigError, match="export_url"):
        build_provider(row("mixpanel", "https://mixpanel.proxy.example"), {"api_secret": "s"})
