"""Contract test: the SendGrid emulator's answers and our client's request bodies against SendGrid's
own OpenAPI documents.

`esm_dagster_tests/data/sendgrid-{mail,marketing-contacts,suppressions}-v3.json` are copied unchanged
from twilio/sendgrid-oai (MIT, `sendgrid-LICENSE`; provenance in /work/shared/specs/README.md). They
are OpenAPI 3.1, validated with openapi-schema-validator's OAS 3.1 validator, `$ref`s resolved inside
each document. One strictness note: the documents still write nullable strings the OAS 3.0 way,
`{"type": "string", "nullable": true}` (the `field` of an error, which SendGrid sends as null), and
3.1 ignores `nullable`; the validator is extended to let `null` through exactly there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from jsonschema.exceptions import ValidationError
from jsonschema.validators import extend
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from esm_dagster.providers.sendgrid import SendGridProvider
from esm_dagster.sandbox.sendgrid import SUPPRESSION_LISTS, SendGridEmulator
from esm_dagster.security.secret import Secret
from esm_dagster.transport import TransportPolicy
from esm_dagster_tests.sendgrid_fixtures import KEY, OTHER_KEY

DATA = Path(__file__).resolve().parents[1] / "data"
SPECS = {
    name: json.loads((DATA / f"sendgrid-{name}-v3.json").read_text("utf-8"))
    for name in ("mail", "marketing-contacts", "suppressions")
}


def _nullable_type(validator: Any, types: Any, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    if instance is None and schema.get("nullable") is True:
        return
    yield from OAS31Validator.VALIDATORS["type"](validator, types, instance, schema)


SendGridValidator = extend(OAS31Validator, validators={"type": _nullable_type})


def validate(instance: Any, spec: str, *parts: str) -> None:
    uri = f"urn:esm:sendgrid-{spec}"
    registry: Registry[Any] = Registry().with_resource(
        uri, Resource.from_contents(SPECS[spec], default_specification=DRAFT202012)
    )
    pointer = "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)
    SendGridValidator({"$ref": uri + pointer}, registry=registry).validate(instance)


def response(spec: str, path: str, method: str, status: str) -> tuple[str, ...]:
    return ("paths", path, method, "responses", status, "content", "application/json", "schema")


def request_body(spec: str, path: str, method: str) -> tuple[str, ...]:
    body = SPECS[spec]["paths"][path][method]["requestBody"]
    if "$ref" in body:
        return (
            "components",
            "requestBodies",
            body["$ref"].rsplit("/", 1)[1],
            "content",
            "application/json",
            "schema",
        )
    return ("paths", path, method, "requestBody", "content", "application/json", "schema")


@pytest.fixture
def emulator() -> Iterator[SendGridEmulator]:
    with SendGridEmulator(api_keys=[KEY], contacts=20, suppressions=15, seed=3) as em:
        yield em


@pytest.fixture
def http(emulator: SendGridEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield client


def test_the_validator_is_strict_enough() -> None:
    with pytest.raises(ValidationError):
        validate(
            [{"created": 1, "email": "a@b.example"}],
            "suppressions",
            *response("", "/v3/suppression/blocks", "get", "200"),
        )
    with pytest.raises(ValidationError):
        validate(
            [{"created": "yesterday", "email": "a@b.example"}],
            "suppressions",
            *response("", "/v3/suppression/unsubscribes", "get", "200"),
        )
    with pytest.raises(ValidationError):
        validate(
            {"errors": [{"field": 3, "message": "x"}]},
            "suppressions",
            "components",
            "schemas",
            "ErrorResponse",
        )
    with pytest.raises(ValidationError):
        validate(
            {"personalizations": [{"to": [{"email": "a@b.example"}]}]},
            "mail",
            *request_body("mail", "/v3/mail/send", "post"),
        )


@pytest.mark.parametrize("name", SUPPRESSION_LISTS)
def test_suppression_lists_match_the_spec(http: httpx.Client, name: str) -> None:
    answer = http.get(f"/v3/suppression/{name}", params={"limit": 10, "offset": 5})
    assert answer.status_code == 200 and len(answer.json()) == 10
    validate(answer.json(), "suppressions", *response("", f"/v3/suppression/{name}", "get", "200"))
    for header in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        assert answer.headers[header].isdigit()


def test_error_bodies_match_the_spec(emulator: SendGridEmulator, http: httpx.Client) -> None:
    unauthorized = httpx.get(
        f"{emulator.url}/v3/suppression/bounces", headers={"Authorization": f"Bearer {OTHER_KEY}"}
    )
    assert unauthorized.status_code == 401 and OTHER_KEY not in unauthorized.text
    validate(unauthorized.json(), "suppressions", *response("", "/v3/suppression/bounces", "get", "401"))
    bad_mail = http.post("/v3/mail/send", json={"personalizations": []})
    assert bad_mail.status_code == 400
    validate(
        bad_mail.json(),
        "mail",
        "components",
        "responses",
        "PostMailSend400",
        "content",
        "application/json",
        "schema",
    )
    emulator.faults.rate_limit_next(1)
    limited = http.get("/v3/marketing/contacts/count")
    assert limited.status_code == 429 and limited.json() == {
        "errors": [{"field": None, "message": "too many requests"}]
    }
    validate(limited.json(), "marketing-contacts", "components", "schemas", "ErrorResponse")
    emulator.faults.fail_next(1, 500)
    failed = http.get("/v3/marketing/contacts/count")
    validate(
        failed.json(),
        "marketing-contacts",
        "components",
        "responses",
        "MarketingContacts500",
        "content",
        "application/json",
        "schema",
    )


def test_contacts_endpoints_match_the_spec(http: httpx.Client) -> None:
    count = http.get("/v3/marketing/contacts/count")
    validate(count.json(), "marketing-contacts", *response("", "/v3/marketing/contacts/count", "get", "200"))
    upsert = http.put(
        "/v3/marketing/contacts", json={"contacts": [{"email": "x@club.example", "first_name": "X"}]}
    )
    assert upsert.status_code == 202
    validate(upsert.json(), "marketing-contacts", *response("", "/v3/marketing/contacts", "put", "202"))
    search = http.post("/v3/marketing/contacts/search", json={"query": "email LIKE 'a%'"})
    validate(
        search.json(), "marketing-contacts", *response("", "/v3/marketing/contacts/search", "post", "200")
    )
    started = http.post("/v3/marketing/contacts/exports", json={"file_type": "json"})
    assert started.status_code == 202
    validate(
        started.json(), "marketing-contacts", *response("", "/v3/marketing/contacts/exports", "post", "202")
    )
    path = f"/v3/marketing/contacts/exports/{started.json()['id']}"
    statuses = [http.get(path).json() for _ in range(2)]
    assert [s["status"] for s in statuses] == ["pending", "ready"]
    for status in statuses:
        validate(
            status, "marketing-contacts", *response("", "/v3/marketing/contacts/exports/{id}", "get", "200")
        )
    lines = httpx.get(statuses[1]["urls"][0]).content.splitlines()
    assert len(lines) == 21
    for line in lines:
        validate(orjson.loads(line), "marketing-contacts", "components", "schemas", "ContactDetails3")


def test_the_clients_request_bodies_match_the_spec(emulator: SendGridEmulator) -> None:
    sent: list[tuple[str, bytes]] = []

    def capture(request: httpx.Request) -> None:
        if request.method in ("POST", "PUT"):
            sent.append((request.url.path, request.content))

    with httpx.Client(event_hooks={"request": [capture]}, timeout=5) as raw:
        client = SendGridProvider(
            emulator.url,
            api_key=Secret(KEY),
            policy=TransportPolicy(retry_attempts=0, timeout_seconds=5),
            client=raw,
        )
        mail = {
            "personalizations": [{"to": [{"email": "ana@club.example", "name": "Ana"}], "subject": "Booked"}],
            "from": {"email": "club@padel.example"},
            "content": [{"type": "text/plain", "value": "Court A, 18:00"}],
        }
        client.write("mail_send", [mail], idempotency_keys=["booking-1"])
        client.write(
            "contacts_upsert", [{"email": "Nok@Club.Example", "first_name": "Nok"}], idempotency_keys=["m-1"]
        )
        list(client.iter_pages("contacts"))
    bodies = {path: orjson.loads(content) for path, content in sent}
    validate(bodies["/v3/mail/send"], "mail", *request_body("mail", "/v3/mail/send", "post"))
    validate(
        bodies["/v3/marketing/contacts"],
        "marketing-contacts",
        *request_body("marketing-contacts", "/v3/marketing/contacts", "put"),
    )
    validate(
        bodies["/v3/marketing/contacts/exports"],
        "marketing-contacts",
        *request_body("marketing-contacts", "/v3/marketing/contacts/exports", "post"),
    )
