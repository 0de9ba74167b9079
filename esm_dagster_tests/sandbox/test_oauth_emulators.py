"""The OAuth side of the HubSpot and Mailchimp emulators, spoken to with plain httpx over loopback."""

from __future__ import annotations

import httpx

from esm_dagster.sandbox.hubspot import HubSpotEmulator
from esm_dagster.sandbox.mailchimp import MailchimpEmulator
from esm_dagster.sandbox.mailchimp.emulator import METADATA_PATH

CLIENT_ID, CLIENT_SECRET = "app-7", "hs-secret-Pq2"


def test_hubspot_refresh_answer_keeps_the_refresh_token_and_the_token_opens_the_api() -> None:
    with HubSpotEmulator([], oauth_clients={CLIENT_ID: CLIENT_SECRET}, contacts=3, archived=0) as emu:
        refresh = emu.oauth.issue_refresh_token(CLIENT_ID)
        form = {
            "grant_type": "refresh_token",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "refresh_token": refresh,
        }
        answer = httpx.post(emu.url + "/oauth/v1/token", data=form)
        assert answer.status_code == 200
        body = answer.json()
        assert set(body) == {"token_type", "access_token", "refresh_token", "expires_in"}
        assert body["refresh_token"] == refresh and body["expires_in"] == 1800
        contacts = emu.url + "/crm/v3/objects/contacts"
        bearer = {"Authorization": f"Bearer {body['access_token']}"}
        assert httpx.get(contacts, headers=bearer).status_code == 200
        again = httpx.post(emu.url + "/oauth/v1/token", data=form)  # no rotation: it still works
        assert again.status_code == 200 and emu.oauth.refreshes == 2
        emu.oauth.expire_access_tokens()
        expired = httpx.get(contacts, headers=bearer)
        assert expired.status_code == 401 and body["access_token"] not in expired.text
        wrong = httpx.post(emu.url + "/oauth/v1/token", data={**form, "client_secret": "nope"})
        assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_client")
        emu.oauth.revoke(refresh)
        revoked = httpx.post(emu.url + "/oauth/v1/token", data=form)
        assert (revoked.status_code, revoked.json()["error"]) == (400, "invalid_grant")
        assert all(refresh not in r.query and refresh not in r.path for r in emu.requests)


def test_mailchimp_bearer_token_and_metadata() -> None:
    token = "ab" * 16
    with MailchimpEmulator([], oauth_tokens=[token], dc="us19", members=4, archived=0) as emu:
        members = f"{emu.url}/3.0/lists/{emu.list_id}/members"
        assert httpx.get(members, headers={"Authorization": f"Bearer {token}"}).json()["total_items"] == 4
        refused = httpx.get(members, headers={"Authorization": "Bearer " + "cd" * 16})
        assert refused.status_code == 401
        meta = httpx.get(emu.url + METADATA_PATH, headers={"Authorization": f"OAuth {token}"})
        assert meta.status_code == 200 and meta.json()["dc"] == "us19"
        assert meta.json()["api_endpoint"] == "https://us19.api.mailchimp.com"
        bad = httpx.get(emu.url + METADATA_PATH, headers={"Authorization": "OAuth " + "cd" * 16})
        assert bad.status_code == 401 and bad.json()["error"] == "invalid_token"
