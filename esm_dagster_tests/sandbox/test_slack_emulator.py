"""The Slack emulator's protocol details, over raw HTTP: ok:false bodies, cursors, history, faults."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from esm_dagster.sandbox.slack import SlackEmulator

TOKEN = "xoxb-4444444444-3333333333-EmulatorTokenValue"


@pytest.fixture
def emulator() -> Iterator[SlackEmulator]:
    with SlackEmulator(tokens=[TOKEN], users=20, channels=5, messages_per_channel=8, seed=6) as em:
        yield em


@pytest.fixture
def http(emulator: SlackEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url + "/api", headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


@pytest.mark.parametrize(
    ("headers", "error"), [({}, "not_authed"), ({"Authorization": "Bearer xoxb-1-2-no"}, "invalid_auth")]
)
def test_auth_failures_are_http_200_ok_false(
    emulator: SlackEmulator, headers: dict[str, str], error: str
) -> None:
    response = httpx.get(emulator.url + "/api/users.list", headers=headers)
    assert (response.status_code, response.json()) == (200, {"ok": False, "error": error})


def test_a_token_parameter_works_and_is_masked_in_the_log(emulator: SlackEmulator) -> None:
    response = httpx.get(emulator.url + "/api/users.list", params={"token": TOKEN, "limit": 2})
    assert response.json()["ok"] is True
    assert TOKEN not in emulator.requests[-1].query and "limit=2" in emulator.requests[-1].query


def test_unknown_method_is_404(http: httpx.Client) -> None:
    response = http.get("/users.lookupByTeapot")
    assert (response.status_code, response.json()["error"]) == (404, "unknown_method")


def test_history_is_newest_first_with_exclusive_or_inclusive_bounds(
    http: httpx.Client, emulator: SlackEmulator
) -> None:
    channel = emulator.channels()[1]["id"]
    history = emulator.history(channel)
    stamps = [m["ts"] for m in history]
    assert stamps == sorted(stamps, reverse=True)
    oldest, latest = stamps[-2], stamps[1]
    inside = http.get(
        "/conversations.history", params={"channel": channel, "oldest": oldest, "latest": latest}
    ).json()
    assert [m["ts"] for m in inside["messages"]] == stamps[2:-2]
    both = http.get(
        "/conversations.history",
        params={"channel": channel, "oldest": oldest, "latest": latest, "inclusive": "true"},
    ).json()
    assert [m["ts"] for m in both["messages"]] == stamps[1:-1]


def test_cursors_are_checked(http: httpx.Client) -> None:
    page = http.get("/users.list", params={"limit": 5}).json()
    assert page["response_metadata"]["next_cursor"]
    again = http.get(
        "/users.list", params={"limit": 5, "cursor": page["response_metadata"]["next_cursor"]}
    ).json()
    assert again["members"][0]["id"] != page["members"][0]["id"]
    assert http.get("/users.list", params={"cursor": "%%%"}).json()["error"] == "invalid_cursor"
    assert http.get("/users.list", params={"limit": "x"}).json()["error"] == "invalid_limit"


def test_a_form_post_is_accepted_and_visible_in_history(http: httpx.Client, emulator: SlackEmulator) -> None:
    channel = next(c["id"] for c in emulator.channels() if not c["is_archived"])
    posted = http.post("/chat.postMessage", data={"channel": channel, "text": "form post"}).json()
    assert posted["ok"] and emulator.history(channel)[0]["ts"] == posted["ts"]
    assert http.post("/chat.postMessage", json={"channel": channel}).json()["error"] == "no_text"


def test_faults_answer_like_slack(http: httpx.Client, emulator: SlackEmulator) -> None:
    emulator.faults.rate_limit_next(1, retry_after=7)
    limited = http.get("/users.list")
    assert (limited.status_code, limited.headers["Retry-After"], limited.json()["error"]) == (
        429,
        "7",
        "ratelimited",
    )
    emulator.faults.fail_next(1, status=500)
    assert http.get("/users.list").status_code == 500


def test_seeding_is_deterministic() -> None:
    def ids(seed: int) -> list[str]:
        with SlackEmulator(tokens=[TOKEN], users=5, seed=seed) as em:
            return [u["id"] for u in em.users()]

    assert ids(1) == ids(1) != ids(2)


def test_a_mutation_between_pages_edits_a_served_member_and_adds_one(
    http: httpx.Client, emulator: SlackEmulator
) -> None:
    emulator.faults.mutate_next(1, path="/api/users.list")
    first = http.get("/users.list", params={"limit": 10}).json()
    rest = http.get(
        "/users.list", params={"limit": 100, "cursor": first["response_metadata"]["next_cursor"]}
    ).json()
    [(edited, joined)] = emulator.mutations
    assert edited == first["members"][-1]["id"] and first["members"][-1]["profile"]["title"] == ""
    assert rest["members"][-1]["id"] == joined and len(first["members"]) + len(rest["members"]) == 22
