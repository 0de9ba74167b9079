"""Contract test: the PayPal emulator's answers and our client's request bodies against PayPal's own
OpenAPI specs (`esm_dagster_tests/data/paypal-*.json`, Apache-2.0, `paypal-LICENSE`; provenance in
/work/shared/specs/README.md), validated with openapi-schema-validator's OAS 3.0 validator.

Two notes on the specs: `search_response.transaction_details` has `minItems: 1`, so only non-empty
pages are checked against it; and `date_time` allows `Z` or `+hh:mm` offsets only, which is why the
emulator writes `Z` (PayPal's live answers have been seen with `+0000`; the client reads both).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from esm_dagster.providers.paypal import order_body
from esm_dagster.sandbox.paypal import PayPalEmulator
from esm_dagster.sandbox.paypal.data import DEFAULT_END, DEFAULT_START, rfc3339
from esm_dagster_tests.oauth_fixtures import PP_CLIENT_ID, PP_CLIENT_SECRET

DATA = Path(__file__).resolve().parents[1] / "data"
SPECS = {
    "orders": json.loads((DATA / "paypal-checkout-orders-v2.json").read_text(encoding="utf-8")),
    "reporting": json.loads((DATA / "paypal-reporting-transactions-v1.json").read_text(encoding="utf-8")),
}
REGISTRY: Registry[Any] = Registry().with_resources(
    (f"urn:paypal:{name}", Resource.from_contents(spec, default_specification=DRAFT4))
    for name, spec in SPECS.items()
)


def validate(instance: Any, spec: str, *parts: str) -> None:
    pointer = "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)
    OAS30Validator({"$ref": f"urn:paypal:{spec}{pointer}"}, registry=REGISTRY).validate(instance)


def response(spec: str, path: str, method: str, status: str) -> tuple[str, ...]:
    return ("paths", path, method, "responses", status, "content", "application/json", "schema")


@pytest.fixture(scope="module")
def emulator() -> Iterator[PayPalEmulator]:
    with PayPalEmulator(clients={PP_CLIENT_ID: PP_CLIENT_SECRET}, transactions=80, seed=2) as emu:
        yield emu


@pytest.fixture(scope="module")
def http(emulator: PayPalEmulator) -> Iterator[httpx.Client]:
    token = httpx.post(
        emulator.url + "/v1/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(PP_CLIENT_ID, PP_CLIENT_SECRET),
    ).json()
    assert token["token_type"] == "Bearer" and token["expires_in"] > 0 and token["app_id"]
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    with httpx.Client(base_url=emulator.url, headers=headers) as client:
        yield client


def test_transaction_search_pages_match_search_response(http: httpx.Client) -> None:
    params = {
        "start_date": rfc3339(DEFAULT_START),
        "end_date": rfc3339(DEFAULT_START + 30 * 86400),
        "page_size": 20,
    }
    page, checked = 1, 0
    while True:
        answer = http.get("/v1/reporting/transactions", params={**params, "page": page})
        assert answer.status_code == 200
        body = answer.json()
        validate(body, "reporting", *response("reporting", "/v1/reporting/transactions", "get", "200"))
        checked += len(body["transaction_details"])
        if page >= body["total_pages"]:
            break
        page += 1
    assert checked == body["total_items"] > 20


def test_transaction_search_errors_match_error_400(http: httpx.Client) -> None:
    too_long = {"start_date": rfc3339(DEFAULT_START), "end_date": rfc3339(DEFAULT_END)}  # 59 days
    answer = http.get("/v1/reporting/transactions", params=too_long)
    assert answer.status_code == 400
    body = answer.json()
    validate(body, "reporting", "components", "schemas", "error_400")
    assert body["name"] == "INVALID_REQUEST" and body["details"][0]["field"] == "end_date"


def test_order_create_get_and_minimal_answers_match_order(http: httpx.Client) -> None:
    request_body = order_body(
        {"currency_code": "USD", "value": "42.00", "custom_id": "esm-1", "invoice_id": "INV-1"}
    )
    validate(request_body, "orders", "components", "schemas", "order_request")  # what the client sends
    full = http.post(
        "/v2/checkout/orders",
        json=request_body,
        headers={"PayPal-Request-Id": "contract-1", "Prefer": "return=representation"},
    )
    assert full.status_code == 201
    validate(full.json(), "orders", *response("orders", "/v2/checkout/orders", "post", "201"))
    replay = http.post("/v2/checkout/orders", json=request_body, headers={"PayPal-Request-Id": "contract-1"})
    assert replay.status_code == 200 and replay.json()["id"] == full.json()["id"]
    validate(replay.json(), "orders", *response("orders", "/v2/checkout/orders", "post", "200"))
    got = http.get(f"/v2/checkout/orders/{full.json()['id']}")
    validate(got.json(), "orders", *response("orders", "/v2/checkout/orders/{id}", "get", "200"))
    assert set(got.json()) <= set(
        SPECS["orders"]["components"]["schemas"]["order"]["allOf"][1]["properties"]
    ) | {
        "create_time",
        "update_time",
        "id",
        "intent",
        "status",
        "purchase_units",
        "links",
    }


def test_order_errors_match_the_spec(http: httpx.Client) -> None:
    precision = http.post("/v2/checkout/orders", json=order_body({"currency_code": "JPY", "value": "1.50"}))
    assert precision.status_code == 422
    validate(precision.json(), "orders", *response("orders", "/v2/checkout/orders", "post", "422"))
    missing = http.get("/v2/checkout/orders/ABCDEFGHJKLMNPRST")
    assert missing.status_code == 404
    validate(missing.json(), "orders", *response("orders", "/v2/checkout/orders/{id}", "get", "404"))
    malformed = http.post("/v2/checkout/orders", content=b"{", headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400
    validate(malformed.json(), "orders", *response("orders", "/v2/checkout/orders", "post", "400"))
    unauthenticated = httpx.get(str(http.base_url) + "/v2/checkout/orders/ABCDEFGHJKLMNPRST")
    assert unauthenticated.status_code == 401
    validate(unauthenticated.json(), "orders", *response("orders", "/v2/checkout/orders/{id}", "get", "401"))
