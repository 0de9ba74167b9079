"""The SendGrid emulator's seed: marketing contacts and suppression lists, the same for the same seed.

A few records carry the kind of data real accounts hold and rules must reject: bounce and block
lists keep the malformed addresses a sender tried (that is why they bounced), and contacts carry
phone numbers typed by hand.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

DEFAULT_START = 1767225600  # 2026-01-01T00:00:00Z
DEFAULT_END = 1793491200  # 2026-11-01T00:00:00Z
SUPPRESSION_LISTS = ("bounces", "blocks", "spam_reports", "unsubscribes")

_FIRST = ("Ana", "Ben", "Chai", "Dara", "Eli", "Fon", "Gus", "Hana", "Ivo", "June", "Kit", "Lek")
_LAST = ("Somsak", "Miller", "Tanaka", "Okafor", "Novak", "Silva", "Kim", "Haddad", "Berg", "Rossi")
_BAD_EMAILS = ("jane.doe@@example.com", "no-at-sign.example.com", "trailing.dot@example.com.")
_BAD_PHONES = ("12345", "+1-555-CALL-NOW", "0000")
_BOUNCE_REASONS = (
    ("550 5.1.1 The email account that you tried to reach does not exist.", "5.1.1"),
    ("552 5.2.2 The email account that you tried to reach is over quota.", "5.2.2"),
)
_BLOCK_REASONS = (
    ("unable to resolve MX record for example.invalid: servfail", "4.0.0"),
    ("554 5.7.1 Service unavailable; client host blocked", "5.7.1"),
)


def iso(seconds: float) -> str:
    """SendGrid's ISO 8601 UTC form for contact timestamps (`2026-01-05T10:00:00Z`)."""
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seed_contacts(rng: random.Random, count: int, start: int, end: int) -> list[dict[str, Any]]:
    contacts: list[dict[str, Any]] = []
    for i in range(count):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        created = rng.randrange(start, end)
        updated = min(end - 1, created + rng.randrange(0, 30 * 86400))
        phone = (
            _BAD_PHONES[i % len(_BAD_PHONES)] if i % 9 == 4 else f"+66{rng.randrange(810000000, 899999999)}"
        )
        contacts.append(
            {
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "email": f"{first}.{last}.{i}@club.example".lower(),
                "first_name": first,
                "last_name": last,
                "phone_number": phone,
                "city": rng.choice(("Bangkok", "Chiang Mai", "Phuket")),
                "country": "TH",
                "list_ids": [],
                "segment_ids": [],
                "custom_fields": {"member_level": rng.choice(("gold", "silver", "bronze"))},
                "created_at": iso(created),
                "updated_at": iso(updated),
            }
        )
    return contacts


def seed_suppressions(
    rng: random.Random, count: int, start: int, end: int
) -> dict[str, list[dict[str, Any]]]:
    """`count` entries per list; every seventh bounce and block address is malformed."""
    lists: dict[str, list[dict[str, Any]]] = {}
    for name in SUPPRESSION_LISTS:
        rows = []
        for i in range(count):
            created = rng.randrange(start, end)
            email = f"{name}.{i}@mail.example"
            if name in ("bounces", "blocks") and i % 7 == 3:
                email = f"{name}{i}." + _BAD_EMAILS[i % len(_BAD_EMAILS)]  # unique per list
            row: dict[str, Any] = {"created": created, "email": email}
            if name == "bounces":
                row["reason"], row["status"] = rng.choice(_BOUNCE_REASONS)
            elif name == "blocks":
                row["reason"], row["status"] = rng.choice(_BLOCK_REASONS)
            elif name == "spam_reports":
                row["ip"] = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            rows.append(row)
        lists[name] = rows
    return lists
