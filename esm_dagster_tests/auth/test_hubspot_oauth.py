"""HubSpot's OAuth2 refresh-token flow through the engine: the HubSpot emulator's `/oauth/v1/token`
over loopback, the catalog on SQLite and PostgreSQL.

What must hold: two runs that find the access token expired make one refresh between them; the
refresh token (which HubSpot does not rotate) stays usable; a refreshed token keeps the mapping in
the same rate-limit bucket; a revoked refresh token puts the mapping in error at once (invalid_grant),
with no secret in any text it leaves.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.models import ExternalSystemMapping, RateLimitBucket, SyncStatus
from esm_dagster.providers.factory import bucket_identity
from esm_dagster.providers.hubspot import HubSpotProvider
from esm_dagster.sandbox.hubspot import HubSpotEmulator
from esm_dagster.sync.engine import SyncFailed, SyncReport, run_mapping
from esm_dagster_tests.oauth_fixtures import add_mapping, prepare_target_tables, stored_credentials

CLIENT_ID = "0f3c2a1e-hubspot-app"
CLIENT_SECRET = "hs-client-secret-5Tq8Lw2Zp9"
TOKEN_PATH = "/oauth/v1/token"


@pytest.fixture
def emulator() -> Iterator[HubSpotEmulator]:
    with HubSpotEmulator([], oauth_clients={CLIENT_ID: CLIENT_SECRET}, contacts=30, archived=0, seed=3) as em:
        yield em


def hubspot_mapping(endpoint: str, credentials: dict[str, str], **sync: Any) -> dict[str, Any]:
    return {
        "system_name": "Club HubSpot OAuth",
        "system_type": "crm",
        "provider_name": "hubspot",
        "api_endpoint": endpoint,
        "authentication_type": "oauth2",
        "credentials": credentials,
        "sync_frequency": "hourly",
        "retry_attempts": 2,
        "timeout_seconds": 10,
        "mapping_rules": {
            "field_mappings": {
                "properties.email": {"target": "user.email", "type": "email"},
                "properties.firstname": "user.first_name",
                "properties.lastmodifieddate": {"target": "user.hubspot_modified_at", "type": "timestamp"},
            },
            "validation_rules": {"required_fields": ["properties.email"]},
            "sync_config": {"stream": "contacts", "batch_size": 50, **sync},
        },
    }


def expired_grant(emulator: HubSpotEmulator) -> dict[str, str]:
    """An app's grant as a past run left it: the access token expired ten seconds ago."""
    return {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": emulator.oauth.issue_refresh_token(CLIENT_ID),
        "access_token": emulator.oauth.issue_access_token(CLIENT_ID, lifetime=-10),
        "expires_at": str(int(time.time()) - 10),
    }


def row_of(url: str, mapping_id: str) -> ExternalSystemMapping:
    with session_factory(url)() as session:
        row = session.get(ExternalSystemMapping, uuid.UUID(mapping_id))
        assert row is not None
        session.expunge(row)
        return row


def test_two_concurrent_runs_with_an_expired_token_refresh_once(
    db_url: str, fernet_key: str, emulator: HubSpotEmulator
) -> None:
    start = expired_grant(emulator)
    raw = hubspot_mapping(emulator.url, start)
    mapping = add_mapping(db_url, raw)
    prepare_target_tables(db_url, raw)
    # The token answer takes half a second: the second run asks while the first refresh is in flight.
    emulator.faults.delay_next(2, seconds=0.5, path=TOKEN_PATH)
    barrier = threading.Barrier(2)
    reports: list[SyncReport] = []
    failures: list[BaseException] = []

    def one_run() -> None:
        barrier.wait()
        try:
            reports.append(run_mapping(db_url, mapping))
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures
    assert [r.status for r in reports] == ["success", "success"]
    assert [r.records_read for r in reports] == [30, 30]
    assert emulator.oauth.refreshes == 1
    assert sum(emulator.oauth.refused.values()) == 0
    token_posts = [r for r in emulator.requests if r.path == TOKEN_PATH]
    assert len(token_posts) == 1  # what reached the server, not only what it counted
    stored = stored_credentials(db_url, mapping)
    assert stored["access_token"].reveal() != start["access_token"]
    assert stored["refresh_token"].reveal() == start["refresh_token"]  # HubSpot does not rotate it
    assert int(stored["expires_at"].reveal()) > time.time() + 600  # by expires_in, not by a 401


def test_a_refreshed_token_keeps_the_same_rate_limit_bucket(
    db_url: str, fernet_key: str, emulator: HubSpotEmulator
) -> None:
    start = expired_grant(emulator)
    raw = hubspot_mapping(emulator.url, start, rate_limiting={"requests_per_minute": 6000, "burst_limit": 50})
    mapping = add_mapping(db_url, raw)
    assert run_mapping(db_url, mapping).status == "success"
    emulator.oauth.expire_access_tokens()
    assert run_mapping(db_url, mapping, full_refresh=True).status == "success"
    assert emulator.oauth.refreshes == 2
    after = stored_credentials(db_url, mapping)
    assert after["access_token"].reveal() != start["access_token"]
    assert bucket_identity(HubSpotProvider, start) == bucket_identity(HubSpotProvider, dict(after))
    with session_factory(db_url)() as session:
        buckets = session.scalars(sa.select(RateLimitBucket.bucket_key)).all()
    assert len(buckets) == 1  # both runs (before and after each refresh) drew from one bucket


def test_revoked_refresh_token_puts_the_mapping_in_error(
    db_url: str, fernet_key: str, emulator: HubSpotEmulator
) -> None:
    start = expired_grant(emulator)
    mapping = add_mapping(db_url, hubspot_mapping(emulator.url, start))
    emulator.oauth.revoke_all()
    with pytest.raises(SyncFailed) as info:
        run_mapping(db_url, mapping)
    report = info.value.report
    assert (report.error_class, report.error_code) == ("auth", "invalid_grant")
    assert emulator.oauth.refused["invalid_grant"] == 1  # not retried: no retry can fix a revoked grant
    contacts = [r for r in emulator.requests if r.path.startswith("/crm/")]
    assert contacts == []  # no API call with a token that could not be renewed
    row = row_of(db_url, mapping)
    assert row.sync_status == SyncStatus.ERROR  # at once, not after error_threshold failures
    assert "invalid_grant" in (row.last_error_message or "")
    for text in (str(info.value), repr(info.value), row.last_error_message or "", report.error or ""):
        for secret in (start["refresh_token"], start["access_token"], CLIENT_SECRET):
            assert secret not in text


def test_private_app_token_and_oauth_mappings_are_told_apart(
    db_url: str, fernet_key: str, emulator: HubSpotEmulator
) -> None:
    """A private-app mapping may also hold the app's client secret (to verify webhooks): the
    private-app token is used, and no token request is made."""
    token = "pat-na1-11111111-2222-3333-4444-555555555555"
    with HubSpotEmulator([token], contacts=5, archived=0, seed=1) as private:
        raw = hubspot_mapping(private.url, {"private_app_token": token, "client_secret": CLIENT_SECRET})
        raw["authentication_type"] = "api_key"
        mapping = add_mapping(db_url, raw)
        report = run_mapping(db_url, mapping)
        assert report.status == "success" and report.records_read == 5
        assert [r for r in private.requests if r.path == TOKEN_PATH] == []
