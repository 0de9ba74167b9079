"""The Mailchimp emulator's own protocol, spoken to with plain httpx over loopback."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from esm_dagster.sandbox.mailchimp import MailchimpEmulator, subscriber_hash

KEY = "a1b2c3d4e5f60718293a4b5c6d7e8f90-us6"


@pytest.fixture
def emulator() -> Iterator[MailchimpEmulator]:
    with MailchimpEmulator([KEY], members=50, archived=2, seed=8) as em:
        yield em


@pytest.fixture
def client(emulator: MailchimpEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, auth=httpx.BasicAuth("anystring", KEY), timeout=5) as c:
        yield c


def members_path(emulator: MailchimpEmulator) -> str:
    return f"/3.0/lists/{emulator.list_id}/members"


def test_seed_is_deterministic_and_carries_bad_addresses() -> None:
    with (
        MailchimpEmulator([KEY], members=100, seed=3) as one,
        MailchimpEmulator([KEY], members=100, seed=3) as two,
    ):
        assert one.members() == two.members()
        members = one.members()
    assert all(m["id"] == subscriber_hash(m["email_address"]) for m in members)
    assert any("@" not in m["email_address"] for m in members)  # invalid ones for the rules to reject
    assert {m["status"] for m in members} >= {"subscribed", "unsubscribed", "cleaned", "pending"}


def test_list_shape_paging_status_and_fields(client: httpx.Client, emulator: MailchimpEmulator) -> None:
    path = members_path(emulator)
    page = client.get(path).json()
    assert set(page) == {"members", "list_id", "total_items", "_links"}
    assert len(page["members"]) == 10 and page["total_items"] == 48  # default count; archived left out
    member = page["members"][0]
    assert member["last_changed"].endswith("+00:00") and set(member["merge_fields"]) >= {
        "FNAME",
        "LNAME",
        "PHONE",
    }
    tail = client.get(path, params={"count": 1000, "offset": 40}).json()
    assert len(tail["members"]) == 8
    assert client.get(path, params={"count": 1001}).status_code == 400
    archived = client.get(path, params={"status": "archived"}).json()
    assert archived["total_items"] == 2 and {m["status"] for m in archived["members"]} == {"archived"}
    slim = client.get(path, params={"fields": "members.id,total_items", "count": 2}).json()
    assert slim == {"members": [{"id": m["id"]} for m in page["members"][:2]], "total_items": 48}
    lean = client.get(path, params={"exclude_fields": "members._links,_links", "count": 1}).json()
    assert "_links" not in lean and "_links" not in lean["members"][0]
    assert client.get(path, params={"sort": "x"}).status_code == 400


def test_last_changed_bounds_are_exclusive(client: httpx.Client, emulator: MailchimpEmulator) -> None:
    path = members_path(emulator)
    stamp = sorted(m["last_changed"] for m in emulator.members())[20]
    since = client.get(path, params={"since_last_changed": stamp, "count": 1000}).json()["members"]
    before = client.get(path, params={"before_last_changed": stamp, "count": 1000}).json()["members"]
    assert all(m["last_changed"] > stamp for m in since) and all(m["last_changed"] < stamp for m in before)
    bad = client.get(path, params={"since_last_changed": "yesterday"})
    assert bad.status_code == 400 and "since_last_changed" in bad.json()["detail"]


def test_put_upserts_by_subscriber_hash(client: httpx.Client, emulator: MailchimpEmulator) -> None:
    path = members_path(emulator)
    email = "Member.New@Example.com"
    url = f"{path}/{subscriber_hash(email)}"
    missing_status = client.put(url, json={"email_address": email})
    assert (
        missing_status.status_code == 400 and missing_status.json()["errors"][0]["field"] == "status_if_new"
    )
    made = client.put(
        url, json={"email_address": email, "status_if_new": "subscribed", "merge_fields": {"FNAME": "M"}}
    )
    assert made.status_code == 200 and made.json()["id"] == subscriber_hash(email.lower())
    again = client.put(
        url, json={"email_address": email, "status_if_new": "subscribed", "merge_fields": {"FNAME": "M"}}
    )
    assert again.json()["last_changed"] == made.json()["last_changed"]
    wrong_hash = client.put(
        f"{path}/{subscriber_hash('other@example.com')}",
        json={"email_address": email, "status": "subscribed"},
    )
    assert wrong_hash.status_code == 400
    fake = client.put(
        f"{path}/{subscriber_hash('fake')}", json={"email_address": "fake", "status": "subscribed"}
    )
    assert fake.status_code == 400 and "looks fake or invalid" in fake.json()["detail"]
    assert client.delete(url).status_code == 204
    assert client.get(url).json()["status"] == "archived"
    revived = client.put(url, json={"email_address": email, "status_if_new": "pending"}).json()
    assert revived["status"] == "pending"


def test_errors_are_problem_json_and_never_echo_the_key(emulator: MailchimpEmulator) -> None:
    path = members_path(emulator)
    other_dc = KEY.replace("-us6", "-us2")
    with httpx.Client(base_url=emulator.url, timeout=5) as anon:
        answers = [
            anon.get(path),
            anon.get(path, auth=httpx.BasicAuth("anystring", "0" * 32 + "-us6")),
            anon.get(path, auth=httpx.BasicAuth("anystring", other_dc)),
            anon.get("/3.0/lists/nope/members", auth=httpx.BasicAuth("anystring", KEY)),
        ]
    assert [a.status_code for a in answers] == [401, 401, 401, 404]
    assert [a.json()["title"] for a in answers] == [
        "API Key Missing",
        "API Key Invalid",
        "API Key Invalid",
        "Resource Not Found",
    ]
    for answer in answers:
        assert answer.headers["content-type"] == "application/problem+json"
        assert set(answer.json()) >= {"type", "title", "status", "detail", "instance"}
        assert KEY not in answer.text and KEY[:32] not in answer.text
    assert all(KEY not in r.query for r in emulator.requests)


def test_faults_render_mailchimp_bodies(client: httpx.Client, emulator: MailchimpEmulator) -> None:
    path = members_path(emulator)
    emulator.faults.fail_next(1, status=500)
    failed = client.get(path)
    assert failed.status_code == 500 and failed.json()["title"] == "Internal Server Error"
    first = client.get(path, params={"count": 10}).json()["members"]
    emulator.faults.duplicate_next(1, items=3)
    repeated = client.get(path, params={"count": 10, "offset": 10}).json()["members"]
    assert [m["id"] for m in repeated[:3]] == [m["id"] for m in first[-3:]]
