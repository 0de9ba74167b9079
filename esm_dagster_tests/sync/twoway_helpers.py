"""A bidirectional Stripe customers <-> `user` mapping and ways to change either side (shared by the
two-way tests; imported, not a conftest)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine
from esm_dagster.catalog.types import ExactDecimal, UTCDateTime
from esm_dagster.sandbox.stripe import StripeEmulator

KEY = "sk_test_51TwoWayTestKey00000000000000000004242"
COLUMNS = ["email", "full_name", "phone_number", "balance", "currency"]


def customer_mapping(
    emulator: StripeEmulator, name: str, policy: str = "external_wins", **sync: Any
) -> dict[str, Any]:
    return {
        "system_name": name,
        "system_type": "payment_gateway",
        "provider_name": "stripe",
        "api_endpoint": emulator.url,
        "authentication_type": "api_key",
        "credentials": {"api_key": KEY},
        "retry_attempts": 1,
        "mapping_rules": {
            "field_mappings": {
                "email": {"target": "user.email", "type": "email"},
                "name": "user.full_name",
                "phone": {"target": "user.phone_number", "type": "phone_number", "region": "TH"},
                "balance": {
                    "target": "user.balance",
                    "type": "money",
                    "currency_from": "metadata.currency",
                    "minor_units": True,
                },
                "metadata.currency": "user.currency",
            },
            "sync_config": {
                "stream": "customers",
                "sync_direction": "bidirectional",
                "conflict_resolution": policy,
                "batch_size": 10,
                "external_updated_at": "metadata.changed_at",
                "outbound": {
                    "create": "create_customer",
                    "update": "update_customer",
                    "updated_at_column": "updated_at",
                },
                **sync,
            },
        },
    }


def user_rows(url: str, source: str, columns: list[str] = COLUMNS) -> dict[str, dict[str, Any]]:
    """`esm_external_id` -> mapped columns (+ is_deleted) of the `user` rows of one mapping."""
    names = ", ".join(f'"{c}"' for c in ["esm_external_id", *columns, "is_deleted", "deleted_at"])
    with get_engine(url).connect() as conn:
        rows = conn.execute(
            sa.text(f'select {names} from "user" where esm_source = :s'), {"s": source}
        ).mappings()
        out = {str(r["esm_external_id"]): dict(r) for r in rows}
    for row in out.values():  # SQLite hands back the decimal's text
        if row.get("balance") is not None:
            row["balance"] = Decimal(str(row["balance"]))
        row["is_deleted"] = bool(row["is_deleted"])
    return out


def change_user(url: str, source: str, external_id: str, at: dt.datetime, **values: Any) -> None:
    """What the club's application does: change a row and stamp `updated_at`."""
    types: dict[str, Any] = {"balance": ExactDecimal(), "updated_at": UTCDateTime()}
    names = [*values, "updated_at", "esm_source", "esm_external_id"]
    user = sa.table("user", *(sa.column(n, types.get(n, sa.Text())) for n in names))
    with get_engine(url).begin() as conn:
        conn.execute(
            sa.update(user)
            .where(user.c.esm_source == source, user.c.esm_external_id == external_id)
            .values(**values, updated_at=at)
        )


def posts(emulator: StripeEmulator) -> int:
    """Writes the emulator has received (every Stripe write is a POST)."""
    return sum(1 for r in emulator.requests if r.method == "POST")
