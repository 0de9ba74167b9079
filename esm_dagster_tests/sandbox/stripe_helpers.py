"""Constants and helpers shared by the Stripe emulator tests (imported, not a conftest)."""

from __future__ import annotations

from typing import Any

import httpx

KEY = "sk_test_51EsmSandboxKey0000000000000000001234"
CUSTOMERS, CHARGES, SEED = 200, 1000, 7


def fetch_all(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every object of a list endpoint, following `starting_after` until `has_more` is false."""
    out: list[dict[str, Any]] = []
    query = dict(params)
    while True:
        response = client.get(path, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        out.extend(body["data"])
        if not body["has_more"]:
            return out
        query["starting_after"] = body["data"][-1]["id"]


def order_key(obj: dict[str, Any]) -> tuple[int, str]:
    return (obj["created"], obj["id"])
