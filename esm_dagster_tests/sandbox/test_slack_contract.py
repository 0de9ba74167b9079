"""Contract test: the Slack emulator's answers and our client's requests against Slack's OpenAPI document.

`esm_dagster_tests/data/slack-web-api.subset.json` is the subset of Slack's
`slack_web_openapi_v2.json` (Swagger 2.0, MIT, `slack-LICENSE`) kept in /work/shared/specs: the four
methods we call and every definition they reference, unmodified (`x-subset` names the upstream
commit). Validated as JSON Schema draft 4, `#/definitions/...` resolved inside the document.
Where the 2020 document is weaker or older than the API, the test says so instead of skipping:

- `objs_user`, `objs_conversation` and `objs_response_metadata` are written as `{"items": [...]}`,
  which constrains only arrays, so an object passes them whatever it holds; members, channels and
  paging metadata are therefore also validated against the first (non-enterprise) alternative.
- The `conversations.history` success schema predates cursor paging there: it declares no
  `response_metadata` (and forbids extra keys) and wants at least one message. The history page
  is validated without `response_metadata`, which is checked against `objs_response_metadata`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from esm_dagster.providers.slack import SlackProvider
from esm_dagster.sandbox.slack import SlackEmulator
from esm_dagster.security.secret import Secret
from esm_dagster_tests.providers.messaging_helpers import fast_policy

SPEC_PATH = Path(__file__).resolve().parents[1] / "data" / "slack-web-api.subset.json"
SPEC: dict[str, Any] = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
SPEC_URI = "urn:esm:slack-web-api-subset"
REGISTRY: Registry[Any] = Registry().with_resource(
    SPEC_URI, Resource.from_contents(SPEC, default_specification=DRAFT4)
)
TOKEN = "xoxb-5555555555-6666666666-ContractTokenValue"


def validate(instance: Any, *parts: str | int) -> None:
    pointer = "#/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)
    Draft4Validator({"$ref": SPEC_URI + pointer}, registry=REGISTRY).validate(instance)


def ok_schema(method: str, verb: str = "get") -> tuple[str, ...]:
    return ("paths", f"/{method}", verb, "responses", "200", "schema")


def error_schema(method: str, verb: str = "get") -> tuple[str, ...]:
    return ("paths", f"/{method}", verb, "responses", "default", "schema")


@pytest.fixture(scope="module")
def emulator() -> Iterator[SlackEmulator]:
    with SlackEmulator(tokens=[TOKEN], users=30, channels=9, seed=13) as em:
        yield em


@pytest.fixture
def http(emulator: SlackEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url + "/api", headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def test_the_validator_is_strict_enough() -> None:
    with pytest.raises(ValidationError):
        validate({"ok": True, "members": [{"id": "U1"}]}, *ok_schema("users.list"))  # no cache_ts
    with pytest.raises(ValidationError):
        validate({"id": "U123", "name": "x"}, "definitions", "objs_user", "items", 0)
    with pytest.raises(ValidationError):
        validate({"ok": False, "error": "teapot"}, *error_schema("users.list"))


def test_users_list_pages_match_the_spec(http: httpx.Client) -> None:
    cursor, pages = "", 0
    while True:
        body = http.get("/users.list", params={"limit": 12, **({"cursor": cursor} if cursor else {})}).json()
        validate(body, *ok_schema("users.list"))
        validate(body["response_metadata"], "definitions", "objs_response_metadata", "items", 0)
        for member in body["members"]:
            validate(member, "definitions", "objs_user", "items", 0)
        pages += 1
        cursor = body["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert pages == 3


def test_conversations_list_and_history_match_the_spec(http: httpx.Client) -> None:
    body = http.get("/conversations.list", params={"limit": 100}).json()
    validate(body, *ok_schema("conversations.list"))
    for channel in body["channels"]:
        validate(channel, "definitions", "objs_conversation", "items", 0)
    history = http.get(
        "/conversations.history", params={"channel": body["channels"][1]["id"], "limit": 3}
    ).json()
    metadata = history.pop("response_metadata")
    validate(history, *ok_schema("conversations.history"))
    validate(metadata, "definitions", "objs_response_metadata", "items", 0)


def test_post_message_matches_the_spec(http: httpx.Client, emulator: SlackEmulator) -> None:
    channel = next(c["id"] for c in emulator.channels() if not c["is_archived"])
    body = http.post("/chat.postMessage", json={"channel": channel, "text": "contract"}).json()
    validate(body, *ok_schema("chat.postMessage", "post"))


@pytest.mark.parametrize(
    ("method", "verb", "payload", "token"),
    [
        ("users.list", "get", {}, "xoxb-0000000000-0000000000-nope"),
        ("conversations.list", "get", {}, ""),
        ("conversations.history", "get", {"channel": "C00000NOPE0"}, TOKEN),
        ("chat.postMessage", "post", {"channel": "C00000NOPE0", "text": "x"}, TOKEN),
    ],
)
def test_error_bodies_match_the_spec(
    emulator: SlackEmulator, method: str, verb: str, payload: dict[str, Any], token: str
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=emulator.url + "/api", headers=headers) as client:
        response = (
            client.post(f"/{method}", json=payload)
            if verb == "post"
            else client.get(f"/{method}", params=payload)
        )
    assert response.status_code == 200 and response.json()["ok"] is False
    validate(response.json(), *error_schema(method, verb))


def test_the_clients_requests_match_the_spec(emulator: SlackEmulator) -> None:
    client = SlackProvider(
        emulator.url + "/api", token=Secret(TOKEN), policy=fast_policy(), conversation_types="public_channel"
    )
    post = client.post_body({"channel": "C0123456789", "text": "hi", "thread_ts": "1767225600.000100"}, "key")
    params = {
        p["name"]: p
        for p in SPEC["paths"]["/chat.postMessage"]["post"]["parameters"]
        if p["in"] == "formData"
    }
    assert set(post) <= set(params) and {n for n, p in params.items() if p.get("required")} <= set(post)
    for name, value in post.items():
        Draft4Validator({"type": params[name]["type"]}).validate(value)
    emulator.reset_request_log()
    for stream in ("users", "conversations"):
        list(client.iter_pages(stream, page_size=7))
    client.close()
    for request in emulator.requests:
        method = request.path.removeprefix("/api")
        declared = {
            p["name"]: p
            for p in copy.deepcopy(SPEC["paths"][method]["get"]["parameters"])
            if p["in"] == "query"
        }
        for name, value in parse_qsl(request.query):
            assert name in declared, f"{name} is not a query parameter of {method}"
            kind = declared[name]["type"]
            Draft4Validator({"type": kind}).validate(int(value) if kind == "integer" else value)
