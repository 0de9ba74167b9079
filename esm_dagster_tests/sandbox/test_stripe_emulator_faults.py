"""The emulator's sync-level faults over real HTTP: repeated page items, objects changed between
pages, keys that expire mid-sync, answers lost after a write committed, and `after=`."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from esm_dagster.sandbox.stripe import StripeEmulator
from esm_dagster_tests.sandbox.stripe_helpers import KEY, fetch_all

OTHER_KEY = "sk_test_51EsmSandboxRotatedKey00000000000009876"


@pytest.fixture
def emulator() -> Iterator[StripeEmulator]:
    with StripeEmulator(api_keys=[KEY, OTHER_KEY], customers=30, charges=60, seed=21) as em:
        yield em


def _client(emulator: StripeEmulator, key: str = KEY) -> httpx.Client:
    return httpx.Client(base_url=emulator.url, headers={"Authorization": f"Bearer {key}"}, timeout=5)


def _pages(client: httpx.Client, path: str, limit: int) -> list[list[dict]]:
    pages, query = [], {"limit": limit}
    while True:
        body = client.get(path, params=query).json()
        pages.append(body["data"])
        if not body["has_more"]:
            return pages
        query["starting_after"] = body["data"][-1]["id"]


def test_duplicate_next_starts_continuing_pages_with_the_end_of_the_page_before(
    emulator: StripeEmulator,
) -> None:
    with _client(emulator) as c:
        clean = [o["id"] for o in fetch_all(c, "/v1/charges", limit=10)]
        emulator.faults.duplicate_next(2, items=3, path="/v1/charges", after=1)
        pages = _pages(c, "/v1/charges", 10)
    ids = [[o["id"] for o in page] for page in pages]
    # the first page carries no cursor and the `after=1` lets the second through: pages 3 and 4
    assert ids[0] == clean[0:10] and ids[1] == clean[10:20]
    assert ids[2] == clean[17:27]  # starts with the last 3 of page 2
    assert ids[3] == clean[24:34]
    assert ids[4] == clean[34:44]  # fault used up: clean keyset paging again
    served = [i for page in ids for i in page]
    assert len(served) == len(clean) + 6 and set(served) == set(clean)
    assert emulator.faults.pending == 0


def test_mutate_next_changes_a_served_object_and_creates_one_before_the_cursor(
    emulator: StripeEmulator,
) -> None:
    with _client(emulator) as c:
        before = {o["id"]: o for o in fetch_all(c, "/v1/charges", limit=100)}
        emulator.faults.mutate_next(1, backdate=5, path="/v1/charges", after=2)
        served = [o for page in _pages(c, "/v1/charges", 10) for o in page]
        after = {o["id"]: o for o in fetch_all(c, "/v1/charges", limit=100)}
        events = c.get("/v1/events", params={"limit": 2}).json()["data"]
    [mutation] = emulator.mutations
    assert mutation.resource == "charges"
    # the object changed is the cursor of the third continuing page: the last of page 3, already served
    assert served[29]["id"] == mutation.changed
    assert served[29] == before[mutation.changed]  # served as it was
    changed = after[mutation.changed]
    assert changed["amount_refunded"] == max(1, before[mutation.changed]["amount"] // 2)
    assert changed["metadata"]["esm_fault"] == "mutated between pages"
    # the new object sorts before the cursor (newest), so this walk never sees it; a new one does
    assert mutation.inserted not in {o["id"] for o in served}
    assert [o["id"] for o in served] == list(before)
    assert next(iter(after)) == mutation.inserted and len(after) == len(before) + 1
    assert {e["type"] for e in events} == {"charge.refunded", "charge.succeeded"}
    refunded = next(e for e in events if e["type"] == "charge.refunded")
    assert refunded["data"]["object"]["id"] == mutation.changed
    assert refunded["data"]["previous_attributes"]["amount_refunded"] == 0


def test_mutate_next_on_customers_updates_metadata_and_adds_a_customer(emulator: StripeEmulator) -> None:
    with _client(emulator) as c:
        emulator.faults.mutate_next(1, path="/v1/customers")
        first = c.get("/v1/customers", params={"limit": 5}).json()["data"]
        c.get("/v1/customers", params={"limit": 5, "starting_after": first[-1]["id"]})
        changed = c.get(f"/v1/customers/{first[-1]['id']}").json()
        newest = c.get("/v1/customers", params={"limit": 1}).json()["data"][0]
    [mutation] = emulator.mutations
    assert (mutation.changed, mutation.inserted) == (first[-1]["id"], newest["id"])
    assert changed["metadata"]["esm_fault"] == "mutated between pages"
    assert emulator.count("customers") == 31


def test_expired_key_answers_stripes_401_after_n_requests(emulator: StripeEmulator) -> None:
    emulator.faults.expire_credentials_after(3, credential=KEY)
    with _client(emulator) as c, _client(emulator, OTHER_KEY) as other:
        assert [c.get("/v1/charges", params={"limit": 1}).status_code for _ in range(3)] == [200] * 3
        assert other.get("/v1/charges").status_code == 200  # another key does not count
        expired = c.get("/v1/charges")
        assert c.get("/v1/customers").status_code == 401  # stays expired
        assert other.get("/v1/charges").status_code == 200  # the rotated key keeps working
    assert expired.status_code == 401
    body = expired.json()
    assert body == {
        "error": {
            "code": "api_key_expired",
            "doc_url": "https://stripe.com/docs/error-codes/api-key-expired",
            "message": "Expired API Key provided: sk_test_" + "*" * (len(KEY) - 12) + KEY[-4:],
            "type": "invalid_request_error",
        }
    }
    assert KEY not in expired.text
    emulator.faults.clear()
    with _client(emulator) as c:
        assert c.get("/v1/charges").status_code == 200


def test_expire_any_credential_counts_requests_of_every_key(emulator: StripeEmulator) -> None:
    emulator.faults.expire_credentials_after(2)
    with _client(emulator) as c, _client(emulator, OTHER_KEY) as other:
        assert c.get("/v1/charges").status_code == 200
        assert other.get("/v1/charges").status_code == 200
        assert c.get("/v1/charges").json()["error"]["code"] == "api_key_expired"
        assert other.get("/v1/charges").json()["error"]["code"] == "api_key_expired"


def test_lost_response_commits_the_write_and_idempotency_returns_the_original(
    emulator: StripeEmulator,
) -> None:
    form = {"email": "once@example.com", "name": "Only Once"}
    before = emulator.count("customers")
    emulator.faults.lose_response_next(1, path="/v1/customers")
    with _client(emulator) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.post("/v1/customers", data=form, headers={"Idempotency-Key": "esm-test-once"})
        assert emulator.count("customers") == before + 1  # it happened, though nobody was told
        retry = c.post("/v1/customers", data=form, headers={"Idempotency-Key": "esm-test-once"})
    assert retry.status_code == 200 and retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json()["id"] == emulator.object_ids("customers")[0]
    assert emulator.count("customers") == before + 1


def test_lost_response_without_a_key_is_a_second_object_on_retry(emulator: StripeEmulator) -> None:
    """The control: a blind resend without an idempotency key doubles the write."""
    before = emulator.count("customers")
    emulator.faults.lose_response_next(1, path="/v1/customers")
    with _client(emulator) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.post("/v1/customers", data={"email": "twice@example.com"})
        assert c.post("/v1/customers", data={"email": "twice@example.com"}).status_code == 200
    assert emulator.count("customers") == before + 2


def test_after_lets_matching_requests_through_first(emulator: StripeEmulator) -> None:
    emulator.faults.fail_next(1, status=503, path="/v1/charges", after=2)
    with _client(emulator) as c:
        statuses = [c.get(p).status_code for p in ("/v1/customers", "/v1/charges", "/v1/charges")]
        assert statuses == [200, 200, 200]  # customers do not count towards `after`
        assert c.get("/v1/charges").status_code == 503
        assert c.get("/v1/charges").status_code == 200
    with pytest.raises(ValueError):
        emulator.faults.disconnect_next(1, after=-1)
