"""Deterministic Salesforce seed data: Contacts, some with invalid e-mails and phones."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

DEFAULT_START = 1_767_225_600  # 2026-01-01T00:00:00Z
DEFAULT_END = 1_772_323_200  # 2026-03-01T00:00:00Z
_FIRST = ("Ana", "Bruno", "Chai", "Dara", "Emi", "Farid", "Gita", "Hugo", "Ines", "Jun")
_LAST = ("Silva", "Okafor", "Suzuki", "Nguyen", "Rossi", "Kowalski", "Dubois", "Haddad")
_ID_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CONTACT_FIELDS = frozenset(
    {
        "Id",
        "FirstName",
        "LastName",
        "Email",
        "Phone",
        "External_Id__c",
        "CreatedDate",
        "LastModifiedDate",
        "SystemModstamp",
    }
)
DATETIME_FIELDS = frozenset({"CreatedDate", "LastModifiedDate", "SystemModstamp"})
EXTERNAL_ID_FIELDS = frozenset({"External_Id__c"})


def sf_time(seconds: float) -> str:
    """Salesforce's datetime format: milliseconds and an offset without a colon."""
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def record_id(rng: random.Random, prefix: str = "003") -> str:
    return prefix + "".join(rng.choice(_ID_CHARS) for _ in range(15))


def seed_contacts(count: int, seed: int, start: int, end: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        created = rng.randrange(start, end)
        modified = min(end - 1, created + rng.randrange(0, 86400 * 5))
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        email: str | None = f"{first.lower()}.{last.lower()}{i}@example.com"
        phone: str | None = f"+1415555{1000 + i:04d}"
        if i % 10 == 3:
            email = "not-an-email"
        if i % 10 == 7:
            phone = "12"
        if i % 13 == 5:
            email = None
        out.append(
            {
                "Id": record_id(rng),
                "FirstName": first,
                "LastName": last,
                "Email": email,
                "Phone": phone,
                "External_Id__c": f"club-{i:05d}" if i % 2 == 0 else None,
                "CreatedDate": sf_time(created),
                "LastModifiedDate": sf_time(modified),
                "SystemModstamp": sf_time(modified),
            }
        )
    return out
