"""The HubSpot emulator's own protocol, spoken to with plain httpx over loopback."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from esm_dagster.sandbox.hubspot import HubSpotEmulator

TOKEN = "pat-na1-0c0c0c0c-1d1d-2e2e-3f3f-404040404040"
CONTACTS = "/crm/v3/objects/contacts"


@pytest.fixture
def emulator() -> Iterator[HubSpotEmulator]:
    with HubSpotEmulator([TOKEN], contacts=60, archived=3, seed=4) as em:
        yield em


@pytest.fixture
def client(emulator: HubSpotEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5) as c:
        yield c


def test_seed_is_deterministic_and_carries_bad_data() -> None:
    with (
        HubSpotEmulator([TOKEN], contacts=100, seed=9) as one,
        HubSpotEmulator([TOKEN], contacts=100, seed=9) as two,
    ):
        assert one.contacts() == two.contacts()
        emails = [c["properties"]["email"] for c in one.contacts()]
        phones = [c["properties"]["phone"] for c in one.contacts()]
    assert any(e and "@" not in e for e in emails) and None in emails  # invalid and missing emails
    assert any(e and "+" in e.split("@")[0] for e in emails if e)  # plus addressing
    assert "12345" in phones and None in phones
    assert all(isinstance(v, str) or v is None for c in one.contacts() for v in c["properties"].values())


def test_list_shape_default_properties_and_paging(client: httpx.Client, emulator: HubSpotEmulator) -> None:
    page = client.get(CONTACTS, params={"limit": 7}).json()
    assert len(page["results"]) == 7
    first = page["results"][0]
    assert set(first) == {"id", "properties", "createdAt", "updatedAt", "archived"}
    assert set(first["properties"]) == {
        "createdate",
        "email",
        "firstname",
        "hs_object_id",
        "lastmodifieddate",
        "lastname",
    }
    assert first["createdAt"].endswith("Z") and first["properties"]["hs_object_id"] == first["id"]
    after = page["paging"]["next"]["after"]
    assert page["paging"]["next"]["link"].endswith(f"after={after}")
    rest = client.get(CONTACTS, params={"limit": 100, "after": after, "properties": "phone,email"}).json()
    assert "paging" not in rest and len(page["results"]) + len(rest["results"]) == 57
    assert set(rest["results"][0]["properties"]) == {"phone", "email"}
    assert client.get(CONTACTS, params={"limit": 101}).status_code == 400
    archived = client.get(CONTACTS, params={"archived": "true"}).json()["results"]
    assert len(archived) == 3 and all(r["archived"] and r["archivedAt"] for r in archived)


def test_search_filters_sorts_and_limits(client: httpx.Client, emulator: HubSpotEmulator) -> None:
    contacts = emulator.contacts()
    pivot = sorted(c["properties"]["lastmodifieddate"] for c in contacts)[30]
    body = {
        "filterGroups": [
            {"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": pivot}]}
        ],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}],
        "limit": 5,
    }
    answer = client.post(f"{CONTACTS}/search", json=body).json()
    expected = sorted(
        (c for c in contacts if c["properties"]["lastmodifieddate"] >= pivot),
        key=lambda c: c["properties"]["lastmodifieddate"],
        reverse=True,
    )
    assert answer["total"] == len(expected) and [r["id"] for r in answer["results"]] == [
        c["id"] for c in expected[:5]
    ]
    assert answer["paging"]["next"]["after"] == "5"
    email = contacts[0]["properties"]["email"]
    either = {
        "filterGroups": [
            {"filters": [{"propertyName": "email", "operator": "EQ", "value": email.upper()}]},
            {"filters": [{"propertyName": "hs_object_id", "operator": "IN", "values": ["152", "153"]}]},
        ]
    }
    assert sorted(r["id"] for r in client.post(f"{CONTACTS}/search", json=either).json()["results"]) == [
        "151",
        "152",
        "153",
    ]
    too_many = {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}]}] * 6}
    refused = client.post(f"{CONTACTS}/search", json=too_many)
    assert refused.status_code == 400 and refused.json()["category"] == "VALIDATION_ERROR"
    assert client.post(f"{CONTACTS}/search", json={"after": "10000"}).status_code == 400  # the paging cap
    bad = client.post(
        f"{CONTACTS}/search",
        json={"filterGroups": [{"filters": [{"propertyName": "email", "operator": "LIKE", "value": "x"}]}]},
    )
    assert bad.status_code == 400 and "LIKE" in bad.json()["message"]


def test_batch_upsert_by_email(client: httpx.Client, emulator: HubSpotEmulator) -> None:
    inputs = [
        {
            "idProperty": "email",
            "id": "Coach@Example.com",
            "properties": {"firstname": "Coach", "lifecyclestage": "lead"},
        }
    ]
    first = client.post(f"{CONTACTS}/batch/upsert", json={"inputs": inputs})
    assert first.status_code == 200 and first.json()["status"] == "COMPLETE"
    made = first.json()["results"][0]
    assert made["new"] is True and made["properties"]["email"] == "Coach@Example.com"
    inputs[0]["id"] = "coach@example.com"
    second = client.post(f"{CONTACTS}/batch/upsert", json={"inputs": inputs}).json()["results"][0]
    assert second["new"] is False and second["id"] == made["id"] and second["updatedAt"] == made["updatedAt"]
    dupes = client.post(f"{CONTACTS}/batch/upsert", json={"inputs": inputs * 2})
    assert dupes.status_code == 400 and "Duplicate IDs" in dupes.json()["message"]
    many = [{"idProperty": "email", "id": f"p{n}@example.com", "properties": {}} for n in range(101)]
    assert client.post(f"{CONTACTS}/batch/upsert", json={"inputs": many}).status_code == 400
    read_only = [{"idProperty": "email", "id": "x@example.com", "properties": {"lastmodifieddate": "0"}}]
    refused = client.post(f"{CONTACTS}/batch/upsert", json={"inputs": read_only}).json()
    assert refused["errors"][0]["code"] == "READ_ONLY_VALUE"
    assert (
        client.get(f"{CONTACTS}/coach@example.com", params={"idProperty": "email"}).json()["id"] == made["id"]
    )
    assert client.delete(f"{CONTACTS}/{made['id']}").status_code == 204
    assert client.get(f"{CONTACTS}/{made['id']}").status_code == 404


def test_auth_errors_never_echo_the_token_and_the_log_holds_none(emulator: HubSpotEmulator) -> None:
    wrong = "pat-na1-ffffffff-ffff-ffff-ffff-ffffffffffff"
    with httpx.Client(base_url=emulator.url) as anon:
        missing = anon.get(CONTACTS)
        bad = anon.get(CONTACTS, headers={"Authorization": f"Bearer {wrong}"})
        legacy = anon.get(CONTACTS, params={"hapikey": TOKEN})
    for answer in (missing, bad, legacy):
        body = answer.json()
        assert (
            answer.status_code == 401
            and body["status"] == "error"
            and body["category"] == "INVALID_AUTHENTICATION"
        )
        assert body["correlationId"] and wrong not in answer.text and TOKEN not in answer.text
    logged = " ".join(f"{r.path}?{r.query}" for r in emulator.requests)
    assert TOKEN not in logged and "hapikey=***" in logged


def test_faults_render_hubspot_bodies(client: httpx.Client, emulator: HubSpotEmulator) -> None:
    emulator.faults.rate_limit_next(1, retry_after=None)
    limited = client.get(CONTACTS)
    assert limited.status_code == 429 and limited.json()["policyName"] == "SECONDLY"
    assert (
        limited.json()["errorType"] == "RATE_LIMIT"
        and limited.headers["X-HubSpot-RateLimit-Secondly-Remaining"] == "0"
    )
    emulator.faults.rate_limit_next(1, retry_after=4)
    rolling = client.get(CONTACTS)
    assert rolling.json()["policyName"] == "TEN_SECONDLY_ROLLING"
    assert rolling.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "4000"
    emulator.faults.fail_next(1, status=503)
    failed = client.get(CONTACTS)
    assert failed.status_code == 503 and failed.json()["category"] == "INTERNAL_ERROR"
    ok = client.get(CONTACTS)
    assert int(ok.headers["X-HubSpot-RateLimit-Daily-Remaining"]) < int(
        ok.headers["X-HubSpot-RateLimit-Daily"]
    )


def test_duplicate_and_mutate_faults_on_a_continued_page(
    client: httpx.Client, emulator: HubSpotEmulator
) -> None:
    first = client.get(CONTACTS, params={"limit": 10}).json()
    after = first["paging"]["next"]["after"]
    emulator.faults.duplicate_next(1, items=2)
    repeated = client.get(CONTACTS, params={"limit": 10, "after": after}).json()
    assert [r["id"] for r in repeated["results"][:2]] == [r["id"] for r in first["results"][-2:]]
    emulator.faults.mutate_next(1)
    client.get(CONTACTS, params={"limit": 10, "after": after})
    [mutation] = emulator.mutations
    assert mutation.changed == first["results"][-1]["id"]
    changed = emulator.get_contact(mutation.changed)
    assert changed is not None and changed["properties"]["jobtitle"] == "mutated between pages"
    assert emulator.get_contact(mutation.inserted) is not None
