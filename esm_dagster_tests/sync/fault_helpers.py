"""Shared by the fault matrix and the kill -9 test: the charges mapping tuned for fault runs, and a
snapshot of what a sync left behind (target rows and quarantine) that compares across runs and
across SQLite / PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from esm_dagster.catalog.db import get_engine, session_factory
from esm_dagster.catalog.mappings import get_mapping
from esm_dagster.demo.run import register_demo_catalog
from esm_dagster.security.vault import Vault

MAPPING = "stripe/charges"
# The demo's charges mapping plus the fields a `mutate` fault changes, so a change is visible.
EXTRA_FIELDS = {
    "amount_refunded": {
        "target": "payment.amount_refunded",
        "type": "money",
        "currency_from": "currency",
        "minor_units": "stripe",
    },
    "metadata.esm_fault": "payment.fault_note",
}


def prepare_charges_catalog(
    url: str,
    emulator_url: str,
    *,
    batch_size: int = 100,
    retry_attempts: int = 3,
    timeout_seconds: int = 1,
) -> None:
    """The demo catalog on `url`, its charges mapping set for fault runs (small batches, quick retries)."""
    register_demo_catalog(url, emulator_url)
    with session_factory(url).begin() as session:
        row = get_mapping(session, MAPPING)
        rules = dict(row.mapping_rules)
        rules["field_mappings"] = {**rules["field_mappings"], **EXTRA_FIELDS}
        rules["sync_config"] = {**rules["sync_config"], "batch_size": batch_size}
        row.mapping_rules = rules
        row.retry_attempts = retry_attempts
        row.timeout_seconds = timeout_seconds


def rotate_key(url: str, api_key: str) -> None:
    """What an operator does when Stripe says the key expired: store the new one."""
    with session_factory(url).begin() as session:
        row = get_mapping(session, MAPPING)
        row.credentials = Vault.from_env().encrypt({"api_key": api_key})


def _canonical(value: Any) -> Any:
    """A value as both databases agree on it: PostgreSQL's uuid and SQLite's hex text are one id,
    its NUMERIC and SQLite's decimal text one amount (scale included: 16243.00 is not 16243)."""
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return aware.astimezone(dt.UTC).isoformat()
    return value


@dataclass(frozen=True)
class Snapshot:
    """`payment` rows by external id (every column but the sync time) and quarantine by external id."""

    payments: dict[str, tuple[Any, ...]]
    payment_rows: int  # rows in the table: more than len(payments) would be a duplicate
    quarantine: dict[str, tuple[str, int]]  # external id -> (errors, seen_count)
    quarantine_rows: int

    def differences(self, other: Snapshot) -> dict[str, Any]:
        """What differs from `other` (empty when equal): lost, extra and changed ids."""
        lost = sorted(set(other.payments) - set(self.payments))
        extra = sorted(set(self.payments) - set(other.payments))
        changed = sorted(
            k for k in set(self.payments) & set(other.payments) if self.payments[k] != other.payments[k]
        )
        out: dict[str, Any] = {}
        if lost or extra or changed:
            out["payments"] = {
                "lost": lost[:5],
                "extra": extra[:5],
                "changed": changed[:5],
                "n_lost": len(lost),
            }
        if self.payment_rows != len(self.payments):
            out["duplicate_payment_rows"] = self.payment_rows - len(self.payments)
        if self.quarantine != other.quarantine or self.quarantine_rows != other.quarantine_rows:
            mine, theirs = set(self.quarantine.items()), set(other.quarantine.items())
            out["quarantine"] = {
                "only_here": sorted(mine - theirs)[:5],
                "only_there": sorted(theirs - mine)[:5],
            }
        return out


def snapshot(url: str) -> Snapshot:
    with get_engine(url).connect() as conn:
        payment = sa.Table("payment", sa.MetaData(), autoload_with=conn)
        columns = sorted(c.name for c in payment.columns if c.name not in ("esm_synced_at",))
        rows = conn.execute(sa.select(*[payment.c[name] for name in columns])).mappings().all()
        quarantine = conn.execute(
            sa.text("select external_id, errors, seen_count from esm_quarantine where stream = 'charges'")
        ).all()
    payments = {str(r["esm_external_id"]): tuple(_canonical(r[name]) for name in columns) for r in rows}
    held = {
        str(external_id): (
            json.dumps(errors if not isinstance(errors, str) else json.loads(errors), sort_keys=True),
            seen,
        )
        for external_id, errors, seen in quarantine
    }
    return Snapshot(payments, len(rows), held, len(quarantine))
