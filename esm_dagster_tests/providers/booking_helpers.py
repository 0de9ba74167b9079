"""The booking platform described for the `rest` provider: the `x-rest` block a data engineer would
write for it, and clients built from a mapping row exactly as the engine builds them."""

from __future__ import annotations

import copy
from typing import Any

from esm_dagster.catalog.models import ExternalSystemMapping
from esm_dagster.providers.factory import build_provider
from esm_dagster.providers.rest import RestProvider

KEY = "bk_live_4f8a1c9e2b7d6a5f3e0c1b2a9d8e7f6a"
HEADER_AUTH = {"type": "api_key", "in": "header", "name": "X-Api-Key", "credential": "api_key"}

BOOKING_REST: dict[str, Any] = {
    "base_path": "/api/v2",
    "auth": HEADER_AUTH,
    "streams": {
        "bookings": {
            "path": "/bookings",
            "record_path": "data.items",
            "cursor_field": "updated_at",
            "cursor_format": "iso",
            "window": {
                "start_param": "updated_since_ms",
                "end_param": "updated_before_ms",
                "format": "unix_ms",
            },
            "paginator": {"type": "cursor", "cursor_path": "data.next_cursor", "cursor_param": "cursor"},
        },
        "members": {
            "path": "/members",
            "record_path": "items",
            "cursor_field": "updated_at",
            "window": {"start_param": "updated_since", "end_param": "updated_before", "format": "iso"},
            "paginator": {
                "type": "offset",
                "offset_param": "offset",
                "size_param": "limit",
                "total_path": "total",
            },
        },
        "courts": {
            "path": "/courts",
            "record_path": "data",
            "max_page_size": 50,
            "paginator": {
                "type": "page",
                "page_param": "page",
                "size_param": "per_page",
                "total_pages_path": "meta.total_pages",
            },
        },
        "payments": {
            "path": "/payments",
            "cursor_field": "paid_at",
            "cursor_format": "unix_s",
            "paginator": {"type": "link_header", "size_param": "limit"},
        },
        "waitlist": {
            "path": "/waitlist",
            "record_path": "results",
            "cursor_field": "created_at",
            "paginator": {"type": "next_url", "next_path": "next", "size_param": "limit"},
        },
    },
    "writes": {
        "create_booking": {
            "method": "POST",
            "path": "/bookings",
            "envelope": "booking",
            "response_path": "data",
            "idempotency": "key",
            "idempotency_header": "Idempotency-Key",
        },
        "update_member": {
            "method": "PATCH",
            "path": "/members/{id}",
            "operation": "update",
            "response_path": "data",
            "idempotency": "natural",
        },
        "create_member": {
            "method": "POST",
            "path": "/members",
            "response_path": "data",
            "idempotency": "none",
            "marker_field": "external_ref",
            "find": {"path": "/members", "param": "external_ref", "record_path": "items"},
        },
    },
}


def rest_block(**changes: Any) -> dict[str, Any]:
    block = copy.deepcopy(BOOKING_REST)
    block.update(changes)
    return block


def rules(stream: str = "bookings", rest: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A rules document that maps a few fields of `stream` and carries the `x-rest` block."""
    return {
        "field_mappings": {"id": f"{stream}_copy.source_id"},
        "sync_config": {"stream": stream, "batch_size": 100},
        "x-rest": rest if rest is not None else rest_block(),
        **extra,
    }


def provider(
    url: str,
    *,
    stream: str = "bookings",
    rest: dict[str, Any] | None = None,
    credentials: dict[str, Any] | None = None,
    retry_attempts: int = 3,
    timeout_seconds: int = 5,
) -> RestProvider:
    """The client the factory builds for a `rest` mapping row (from_context, auth, policy)."""
    row = ExternalSystemMapping(
        system_name="Padel Booking",
        provider_name="rest",
        api_endpoint=url,
        mapping_rules=rules(stream, rest),
        retry_attempts=retry_attempts,
        timeout_seconds=timeout_seconds,
    )
    client = build_provider(row, credentials if credentials is not None else {"api_key": KEY})
    assert isinstance(client, RestProvider)
    return client
