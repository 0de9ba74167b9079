"""The leaks the leak scan found, each as the input that leaked it (fast; the scan itself is slow)."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest
import sqlalchemy as sa

from esm_dagster.alerts import Alert
from esm_dagster.alerts.channels import SlackChannel, WebhookChannel
from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import MappingError, MappingInput, edit_mapping, get_mapping, upsert_mapping
from esm_dagster.catalog.models import ExternalSystemMapping
from esm_dagster.providers.base import ProviderError
from esm_dagster.providers.factory import build_provider
from esm_dagster.providers.stripe import StripeProvider
from esm_dagster.security import log_filter
from esm_dagster.security.secret import Secret
from esm_dagster.security.vault import Vault
from esm_dagster.transport import TransportPolicy
from esm_dagster_tests.providers.booking_helpers import provider as booking_provider
from esm_dagster_tests.providers.booking_helpers import rest_block
from esm_dagster_tests.security.hostile import HostileServer
from esm_dagster_tests.security.leak_cases import BOOKING_QUERY_KEY, CASES, OWNER, STRIPE_KEY


def _catalog_dump(url: str) -> str:
    engine = get_engine(url)
    metadata = sa.MetaData()
    metadata.reflect(engine)
    with engine.connect() as conn:
        return repr([tuple(r) for t in metadata.tables.values() for r in conn.execute(sa.select(t))])


def _register(url: str, document: dict[str, Any]) -> None:
    from esm_dagster.catalog.models import User, UserRole

    with session_factory(url).begin() as session:
        if session.scalar(sa.select(User).where(User.email == OWNER)) is None:
            session.add(User(email=OWNER, full_name="Leak fixes", role=UserRole.ADMIN))
            session.flush()
        upsert_mapping(session, Vault.from_env(), MappingInput.model_validate(document))


@pytest.mark.parametrize(
    "paste",
    [
        lambda rules, key: rules["field_mappings"].update({f"metadata.{key}": "leak_stripe.pasted"}),
        lambda rules, key: rules["field_mappings"].update({"email": f"leak_stripe.{key}"}),
        lambda rules, key: rules["validation_rules"].update({"required_fields": ["id", key]}),
    ],
    ids=["field path", "target", "list value"],
)
def test_a_key_pasted_into_the_rules_is_refused_and_not_stored(
    paste: Any, db_url: str, fernet_key: str
) -> None:
    """Leak: `mapping_rules` is stored in clear, so a pasted key sat unencrypted in the catalog."""
    case = CASES["stripe"]
    document = case.mapping("http://127.0.0.1:9")
    document["mapping_rules"].setdefault("validation_rules", {"required_fields": ["id"]})
    paste(document["mapping_rules"], STRIPE_KEY)
    with pytest.raises(MappingError) as refused:
        _register(db_url, document)
    text = f"{refused.value} {refused.value!r}"
    assert "mapping_rules." in text  # refused by the credential check, or by the rules if invalid
    assert STRIPE_KEY not in text
    assert STRIPE_KEY not in _catalog_dump(db_url)


def test_a_key_shaped_value_is_refused_even_when_it_is_another_mappings(db_url: str, fernet_key: str) -> None:
    case = CASES["stripe"]
    document = case.mapping("http://127.0.0.1:9")
    other = "sk_live_someOtherAccountKey12345"
    document["mapping_rules"]["field_mappings"][f"metadata.{other}"] = "leak_stripe.pasted"
    with pytest.raises(MappingError) as refused:
        _register(db_url, document)
    assert other not in str(refused.value) and other not in _catalog_dump(db_url)


def test_editing_the_rules_refuses_a_pasted_key(db_url: str, fernet_key: str) -> None:
    case = CASES["stripe"]
    _register(db_url, case.mapping("http://127.0.0.1:9"))
    rules = case.mapping("http://127.0.0.1:9")["mapping_rules"]
    rules["field_mappings"][f"metadata.{STRIPE_KEY}"] = "leak_stripe.pasted"
    with session_factory(db_url).begin() as session, pytest.raises(MappingError) as refused:
        row = get_mapping(session, case.ref)
        edit_mapping(
            session, row, {}, mapping_rules=rules, credentials={"api_key": STRIPE_KEY}, vault=Vault.from_env()
        )
    assert "holds a credential" in str(refused.value) and STRIPE_KEY not in str(refused.value)
    assert STRIPE_KEY not in _catalog_dump(db_url)


def test_rules_without_a_credential_still_register(db_url: str, fernet_key: str) -> None:
    """The check looks for the mapping's values and key shapes, not for words like `token`."""
    case = CASES["stripe"]
    document = case.mapping("http://127.0.0.1:9")
    document["mapping_rules"]["field_mappings"]["metadata.api_token_hint"] = "leak_stripe.token_hint"
    _register(db_url, document)


@pytest.fixture
def debug_httpcore(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    for name in ("httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)


def test_a_redirect_reflecting_the_key_is_masked_in_httpcore_debug_logs(
    debug_httpcore: pytest.LogCaptureFixture,
) -> None:
    """Leak: httpcore logs response headers at DEBUG; a `Location` quoting the key showed it."""
    with HostileServer() as hostile:
        hostile.mode = "redirect"
        provider = StripeProvider(hostile.url, api_key=Secret(STRIPE_KEY), policy=TransportPolicy(0, 2))
        with provider, pytest.raises(ProviderError) as failed:
            provider.probe()
    logged = _logged(debug_httpcore)
    assert "Location" in logged  # the header was logged, masked
    assert STRIPE_KEY not in logged and STRIPE_KEY not in f"{failed.value} {failed.value!r}"


def test_a_key_in_a_custom_query_parameter_is_masked_in_httpx_request_logs(
    debug_httpcore: pytest.LogCaptureFixture,
) -> None:
    """Leak: httpx logs each request URL at INFO, and a query key under a name the patterns do not
    know (`?access-code=`) showed in it."""
    auth = {"type": "api_key", "in": "query", "name": "access-code", "credential": "api_key"}
    with HostileServer() as hostile:
        hostile.mode = "echo_error"
        client = booking_provider(
            hostile.url,
            stream="members",
            rest=rest_block(auth=auth),
            credentials={"api_key": BOOKING_QUERY_KEY},
        )
        with client, pytest.raises(ProviderError) as failed:
            client.probe()
    logged = _logged(debug_httpcore)
    assert "HTTP Request" in logged and "access-code=" in logged
    assert BOOKING_QUERY_KEY not in logged and BOOKING_QUERY_KEY not in str(failed.value)


@pytest.mark.parametrize("provider", ["twilio", "mailchimp", "mixpanel"])
def test_an_error_body_echoing_the_basic_header_is_scrubbed(provider: str, fernet_key: str) -> None:
    """Leak: a server quoting the `Authorization: Basic` header back in its error body put the
    base64 of `user:password` into the ProviderError (and from there the run, the row, the alert)."""
    case = CASES[provider]
    user, password = case.basic_pairs[0]
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    with HostileServer() as hostile:
        hostile.mode = "echo_error"
        document = case.mapping(hostile.url)
        row = ExternalSystemMapping(
            system_name=case.system_name,
            provider_name=case.provider,
            api_endpoint=document["api_endpoint"],
            mapping_rules=document["mapping_rules"],
            retry_attempts=0,
            timeout_seconds=2,
        )
        client = build_provider(row, {k: Secret(v) for k, v in document["credentials"].items()})
        with client, pytest.raises(ProviderError) as failed:
            client.probe()
    text = f"{failed.value} {failed.value!r} {failed.value.provider_message}"
    assert "invalid credential" in text  # the echoed body did reach the error, masked
    assert encoded.rstrip("=") not in text and password not in text


def test_a_delivered_webhook_alert_does_not_log_its_url(debug_httpcore: pytest.LogCaptureFixture) -> None:
    """Leak: httpx logs the URL of every POST at INFO, and a webhook URL (Slack's) is the token."""
    token = "T0LEAKSCAN/B0LEAKSCAN/xyzWebhookToken42"
    with HostileServer() as receiver:  # answers 200, which a webhook channel takes as delivered
        for channel in (
            WebhookChannel(name="pager", url=Secret(f"{receiver.url}/hooks/{token}")),
            SlackChannel(name="slack", url=Secret(f"{receiver.url}/services/{token}")),
        ):
            channel.deliver(Alert.run_failure(run_id="run-1", message="sync failed"))
    logged = _logged(debug_httpcore)
    assert logged.count("HTTP Request: POST") == 2 and token not in logged


def test_a_closed_client_no_longer_masks_its_values() -> None:
    """Registration follows the client's life: the filter does not grow with every client made."""
    value = "leakscan-filter-lifetime-Zq81"
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, "sent %s", (value,), None)
    log_filter.register([Secret(value)])
    log_filter.register([Secret(value)])  # two clients, same credential
    log_filter.release([Secret(value)])
    log_filter.KnownSecretsFilter().filter(record)
    assert value not in record.getMessage()  # still held by the second client
    log_filter.release([Secret(value)])
    fresh = logging.LogRecord("httpx", logging.INFO, __file__, 1, "sent %s", (value,), None)
    log_filter.KnownSecretsFilter().filter(fresh)
    assert value in fresh.getMessage()
