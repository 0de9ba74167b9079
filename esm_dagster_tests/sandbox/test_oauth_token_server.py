"""The embedded OAuth2 token endpoint, spoken to over loopback HTTP (through the Salesforce and PayPal
emulators that embed it): rotation, revocation, JWT verification, expiry and counts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from esm_dagster.sandbox.paypal import PayPalEmulator
from esm_dagster.sandbox.salesforce import SalesforceEmulator
from esm_dagster_tests.oauth_fixtures import (
    PP_CLIENT_ID,
    PP_CLIENT_SECRET,
    SF_AUDIENCE,
    SF_CLIENT_ID,
    SF_CLIENT_SECRET,
    rsa_pair,
)

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@pytest.fixture
def salesforce() -> Iterator[SalesforceEmulator]:
    with SalesforceEmulator(
        clients={SF_CLIENT_ID: SF_CLIENT_SECRET},
        contacts=5,
        jwt_public_key=rsa_pair()[1],
        login_audience=SF_AUDIENCE,
    ) as emu:
        yield emu


def refresh(emu: SalesforceEmulator, token: str, secret: str = SF_CLIENT_SECRET) -> httpx.Response:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": token,
        "client_id": SF_CLIENT_ID,
        "client_secret": secret,
    }
    return httpx.post(emu.url + "/services/oauth2/token", data=form)


def assertion(private_key: str, **claims: object) -> str:
    body = {
        "iss": SF_CLIENT_ID,
        "sub": "u@club.example",
        "aud": SF_AUDIENCE,
        "exp": int(time.time()) + 120,
        **claims,
    }
    return jwt.encode(body, private_key, algorithm="RS256")


def query(emu: SalesforceEmulator, token: str) -> httpx.Response:
    return httpx.get(
        emu.url + "/services/data/v62.0/query",
        params={"q": "SELECT Id FROM Contact"},
        headers={"Authorization": f"Bearer {token}"},
    )


def test_refresh_token_rotates_and_the_old_one_is_then_invalid_grant(salesforce: SalesforceEmulator) -> None:
    first = salesforce.oauth.issue_refresh_token(SF_CLIENT_ID)
    answer = refresh(salesforce, first)
    assert answer.status_code == 200
    body = answer.json()
    assert body["refresh_token"] != first and body["instance_url"] == salesforce.url
    assert "expires_in" not in body and body["issued_at"].isdigit()  # Salesforce says nothing of expiry
    signed = hmac.new(SF_CLIENT_SECRET.encode(), (body["id"] + body["issued_at"]).encode(), hashlib.sha256)
    assert body["signature"] == base64.b64encode(signed.digest()).decode()
    again = refresh(salesforce, first)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert refresh(salesforce, body["refresh_token"]).status_code == 200
    assert salesforce.oauth.refreshes == 2 and salesforce.oauth.refused["invalid_grant"] == 1
    assert query(salesforce, body["access_token"]).status_code == 200


def test_wrong_client_secret_is_invalid_client(salesforce: SalesforceEmulator) -> None:
    answer = refresh(salesforce, salesforce.oauth.issue_refresh_token(SF_CLIENT_ID), secret="wrong")
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_client"


def test_revoked_tokens_are_refused(salesforce: SalesforceEmulator) -> None:
    token = salesforce.oauth.issue_refresh_token(SF_CLIENT_ID)
    access = refresh(salesforce, token).json()
    assert query(salesforce, access["access_token"]).status_code == 200
    for revoked in (access["refresh_token"], access["access_token"]):
        assert (
            httpx.post(salesforce.url + "/services/oauth2/revoke", data={"token": revoked}).status_code == 200
        )
    assert refresh(salesforce, access["refresh_token"]).json()["error"] == "invalid_grant"
    refused = query(salesforce, access["access_token"])
    assert refused.status_code == 401 and refused.json()[0]["errorCode"] == "INVALID_SESSION_ID"


def test_expired_session_is_refused(salesforce: SalesforceEmulator) -> None:
    access = refresh(salesforce, salesforce.oauth.issue_refresh_token(SF_CLIENT_ID)).json()["access_token"]
    salesforce.oauth.expire_access_tokens()
    assert query(salesforce, access).status_code == 401


@pytest.mark.parametrize(
    ("claims", "key", "description"),
    [
        ({}, "other", "invalid assertion"),
        ({"aud": "https://test.salesforce.com"}, "right", "audience is invalid"),
        ({"exp": int(time.time()) - 600}, "right", "expired authorization code"),
    ],
)
def test_jwt_assertions_are_verified(
    salesforce: SalesforceEmulator, claims: dict, key: str, description: str
) -> None:
    private = rsa_pair()[0] if key == "right" else rsa_pair("another key")[0]
    answer = httpx.post(
        salesforce.url + "/services/oauth2/token",
        data={"grant_type": JWT_BEARER, "assertion": assertion(private, **claims)},
    )
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_grant", "error_description": description}
    assert salesforce.oauth.issued["jwt_bearer"] == 0


def test_good_jwt_assertion_gets_a_session(salesforce: SalesforceEmulator) -> None:
    answer = httpx.post(
        salesforce.url + "/services/oauth2/token",
        data={"grant_type": JWT_BEARER, "assertion": assertion(rsa_pair()[0])},
    )
    assert answer.status_code == 200 and "refresh_token" not in answer.json()
    assert query(salesforce, answer.json()["access_token"]).status_code == 200
    assert salesforce.oauth.issued["jwt_bearer"] == 1


def test_paypal_client_credentials_need_basic_auth_and_log_no_secret() -> None:
    with PayPalEmulator(clients={PP_CLIENT_ID: PP_CLIENT_SECRET}, transactions=3) as emu:
        good = httpx.post(
            emu.url + "/v1/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(PP_CLIENT_ID, PP_CLIENT_SECRET),
        )
        bad = httpx.post(
            emu.url + "/v1/oauth2/token", data={"grant_type": "client_credentials"}, auth=(PP_CLIENT_ID, "x")
        )
        body = good.json()
        assert good.status_code == 200 and body["token_type"] == "Bearer" and body["expires_in"] == 32400
        assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
        logged = str(emu.requests)
    for secret in (PP_CLIENT_SECRET, body["access_token"]):
        assert secret not in logged
