"""The rules engine alone against a per-record Python loop, on the seed's rules.

Both sides get the same batches of generated Stripe customers (seeded, so every run measures the
same data) and must produce the same verdicts: the loop calls the very same validators
(email_validator and phonenumbers, through `library_email` / `library_phone`, the unix-time
reading) once per record, without any cache, the way a straightforward integration script would. What the ratio measures is the
structure: column-wise conversion and one library call per distinct value in a batch, against a
library call per record and field.

The loop is slow (tens of microseconds per record), so it runs on the first `loop_records` and is
compared on those same records as well as by records/s.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from esm_dagster.rules import emails, phones
from esm_dagster.rules.conversion import Invalid

SEED_RULES = Path(__file__).resolve().parents[1] / "examples" / "seed_mapping_rules.json"
BATCH = 10_000
_MS_THRESHOLD = 100_000_000_000  # the engine's `auto` unit: larger magnitudes are milliseconds


def batches(total: int, batch: int = BATCH) -> Iterator[list[dict[str, Any]]]:
    """`total` customers as Stripe objects, `batch` at a time, each batch its own seeded set."""
    from esm_dagster.sandbox.stripe import data

    for number in range(0, (total + batch - 1) // batch):
        size = min(batch, total - number * batch)
        rows = data.generate(
            customers=size, charges=0, seed=1000 + number, start=data.DEFAULT_START, end=data.DEFAULT_END
        ).customers
        yield [data.customer_object(row) for row in rows]


def per_record(records: list[dict[str, Any]], region: str = "TH") -> tuple[list[dict[str, Any]], int]:
    """The straightforward loop: each record, each field, one validator call each."""
    email_of = emails.library_email  # the library on every value, as a plain script calls it
    phone_of = phones.library_phone
    rows: list[dict[str, Any]] = []
    rejected = 0
    for record in records:
        errors: list[str] = []
        email = record.get("email")
        name = record.get("name")
        if email is None:
            errors.append("email: required")
        if name is None:
            errors.append("name: required")
        if email is not None:
            email = email_of(email) if isinstance(email, str) else Invalid("type", "not a string")
            if isinstance(email, Invalid):
                errors.append(f"email: {email.message}")
        phone = record.get("phone")
        if phone is not None:
            phone = phone_of(phone, region) if isinstance(phone, str) else Invalid("type", "not a string")
            if isinstance(phone, Invalid):
                errors.append(f"phone: {phone.message}")
        address = record.get("address") or {}
        created = record.get("created")
        when = None
        if created is not None:
            seconds = created / 1000 if abs(created) >= _MS_THRESHOLD else created
            when = dt.datetime.fromtimestamp(seconds, dt.UTC)
        if errors:
            rejected += 1
            continue
        rows.append(
            {
                "external_id": str(record["id"]),
                "email": email,
                "full_name": name,
                "phone_number": phone,
                "city": address.get("city"),
                "external_created_at": when,
            }
        )
    return rows, rejected


_COMPARED = ("external_id", "email", "phone_number")


def _same_rows(result: Any, rows: list[dict[str, Any]]) -> bool:
    """The engine's accepted rows equal the loop's, in order, on the key and the validated fields."""
    table = result.tables["user"]
    engine_rows = list(zip(*(table[c].tolist() for c in _COMPARED), strict=True))
    return engine_rows == [tuple(row[c] for c in _COMPARED) for row in rows]


def measure(total: int = 1_000_000, loop_records: int = 100_000) -> dict[str, Any]:
    from esm_dagster.rules.plan import compile_rules

    plan = compile_rules(json.loads(SEED_RULES.read_text()))
    for cached in (emails.normalize_email, emails._domain, phones.normalize_phone, phones._parse):
        cached.cache_clear()
    engine_seconds = engine_on_loop_records = 0.0
    loop_seconds = 0.0
    engine_accepted = loop_accepted = engine_accepted_on_loop_records = 0
    seen = loop_n = 0
    same_verdicts = True
    for batch in batches(total):
        started = time.perf_counter()
        result = plan.apply(batch, start_index=seen)
        took = time.perf_counter() - started
        engine_seconds += took
        engine_accepted += result.accepted_count
        # The loop takes whole batches (the engine's time is per batch): `loop_records` rounds up.
        if seen < loop_records:
            engine_on_loop_records += took
            engine_accepted_on_loop_records += result.accepted_count
            started = time.perf_counter()
            rows, _ = per_record(batch)
            loop_seconds += time.perf_counter() - started
            loop_accepted += len(rows)
            loop_n += len(batch)
            same_verdicts = same_verdicts and _same_rows(result, rows)
        seen += len(batch)
    return {
        "records": total,
        "batch": BATCH,
        "engine_seconds": round(engine_seconds, 3),
        "engine_records_per_second": round(total / engine_seconds),
        "engine_accepted": engine_accepted,
        "loop_records": loop_n,
        "loop_seconds": round(loop_seconds, 3),
        "loop_records_per_second": round(loop_n / loop_seconds),
        "loop_accepted": loop_accepted,
        "engine_accepted_on_loop_records": engine_accepted_on_loop_records,
        # Record by record: the same records accepted, with the same key, email and phone.
        "same_verdicts_on_loop_records": same_verdicts,
        "speedup_same_records": round(loop_seconds / engine_on_loop_records, 1),
        "speedup_records_per_second": round((total / engine_seconds) / (loop_n / loop_seconds), 1),
    }


if __name__ == "__main__":
    import sys

    total = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(json.dumps(measure(total, min(total, 100_000)), indent=2))
