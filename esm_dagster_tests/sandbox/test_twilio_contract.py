"""Contract test: the Twilio emulator's answers and our client's requests against Twilio's OpenAPI document.

`esm_dagster_tests/data/twilio-api-v2010.messages.subset.json` is the message part of Twilio's
`twilio_api_v2010.json` (MIT, `twilio-LICENSE`): the two message paths and every schema they
reference, unmodified; `x-subset` names the upstream commit and blob. Validated with
openapi-schema-validator's OAS 3.0 validator. The message schema does not forbid extra keys, so
every key the emulator sends is also checked to be declared.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from esm_dagster.providers.auth import BasicAuth
from esm_dagster.providers.twilio import TwilioProvider
from esm_dagster.sandbox.twilio import TwilioEmulator
from esm_dagster.security.secret import Secret
from esm_dagster_tests.providers.messaging_helpers import fast_policy

SPEC_PATH = Path(__file__).resolve().parents[1] / "data" / "twilio-api-v2010.messages.subset.json"
SPEC: dict[str, Any] = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
SPEC_URI = "urn:esm:twilio-api-v2010-messages"
REGISTRY: Registry[Any] = Registry().with_resource(
    SPEC_URI, Resource.from_contents(SPEC, default_specification=DRAFT4)
)
LIST = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
ONE = "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json"
ACCOUNT = "AC" + "00112233445566778899aabbccddeeff"
TOKEN = "contract-auth-token-123456"


def validate(instance: Any, *parts: str) -> None:
    pointer = "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)
    OAS30Validator({"$ref": SPEC_URI + pointer}, registry=REGISTRY).validate(instance)


def body_schema(path: str, method: str, status: str) -> tuple[str, ...]:
    return ("paths", path, method, "responses", status, "content", "application/json", "schema")


def assert_declared(message: dict[str, Any]) -> None:
    declared = set(SPEC["components"]["schemas"]["api.v2010.account.message"]["properties"])
    assert not set(message) - declared, f"keys not in Twilio's spec: {sorted(set(message) - declared)}"


@pytest.fixture(scope="module")
def emulator() -> Iterator[TwilioEmulator]:
    with TwilioEmulator(account_sid=ACCOUNT, auth_token=TOKEN, messages=80, seed=11) as em:
        yield em


@pytest.fixture
def http(emulator: TwilioEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, auth=(ACCOUNT, TOKEN)) as client:
        yield client


def test_the_validator_is_strict_enough() -> None:
    with pytest.raises(ValidationError):
        validate({"messages": [{"sid": "XX1", "status": "teleported"}]}, *body_schema(LIST, "get", "200"))
    with pytest.raises(ValidationError):
        validate({"next_page_uri": 5}, *body_schema(LIST, "get", "200"))


def test_list_pages_match_the_spec(http: httpx.Client) -> None:
    uri: str | None = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json?PageSize=30"
    pages = 0
    while uri:
        body = http.get(uri).json()
        validate(body, *body_schema(LIST, "get", "200"))
        for message in body["messages"]:
            assert_declared(message)
        uri = body["next_page_uri"]
        pages += 1
    assert pages == 3


def test_create_and_fetch_match_the_spec(http: httpx.Client) -> None:
    form = {"To": "+66811112222", "From": "+15005550006", "Body": "contract"}
    created = http.post(f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json", data=form)
    assert created.status_code == 201
    validate(created.json(), *body_schema(LIST, "post", "201"))
    assert_declared(created.json())
    fetched = http.get(f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{created.json()['sid']}.json")
    validate(fetched.json(), *body_schema(ONE, "get", "200"))


def test_the_clients_requests_match_the_spec(emulator: TwilioEmulator) -> None:
    client = TwilioProvider(
        emulator.url, account_sid=ACCOUNT, auth=BasicAuth(ACCOUNT, Secret(TOKEN)), policy=fast_policy()
    )
    form = client.message_form({"To": "+66811112222", "From": "+15005550006", "Body": "hi"}, "key-1")
    validate(
        form, "paths", LIST, "post", "requestBody", "content", "application/x-www-form-urlencoded", "schema"
    )
    emulator.reset_request_log()
    list(client.iter_pages("messages", window_start=1_767_225_600, window_end=1_768_000_000, page_size=25))
    client.close()
    declared = {
        p["name"]: p["schema"] for p in SPEC["paths"][LIST]["get"]["parameters"] if p["in"] == "query"
    }
    assert emulator.requests
    for request in emulator.requests:
        for name, value in parse_qsl(request.query):
            assert name in declared, f"{name} is not a query parameter of {LIST}"
            schema = declared[name]
            OAS30Validator(schema).validate(int(value) if schema.get("type") == "integer" else value)
