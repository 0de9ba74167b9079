"""Deterministic Mailchimp audience members: the people of `sandbox.people` as list members.

Member ids are the subscriber hash, `md5(lowercase(email))` [D]; timestamps are ISO-8601 with an
offset (`2026-10-01T12:00:00+00:00`), to the second, as Mailchimp sends them. Statuses mix
subscribed, unsubscribed, cleaned, pending and transactional; a few members are archived.
Every member has an address (a list cannot hold one without), a few of them invalid.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from esm_dagster.sandbox.people import people

DEFAULT_START = 1788220800  # 2026-09-01T00:00:00Z
DEFAULT_END = 1796083200  # 2026-12-01T00:00:00Z
STATUSES = (("subscribed", 30), ("unsubscribed", 8), ("cleaned", 4), ("pending", 4), ("transactional", 4))
MEMBER_STATUSES = frozenset({"subscribed", "unsubscribed", "cleaned", "pending", "transactional", "archived"})
LANGUAGES = ("th", "en", "", "ja")


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: md5 of the lower-cased address."""
    return hashlib.md5(email.lower().encode("utf-8"), usedforsecurity=False).hexdigest()


def iso_seconds(seconds: int) -> str:
    """`2026-10-01T12:00:00+00:00`."""
    return datetime.fromtimestamp(seconds, UTC).isoformat()


@dataclass(slots=True)
class Member:
    email: str
    status: str
    merge_fields: dict[str, Any]
    signup: int
    opt_in: int
    last_changed: int
    unique_email_id: str
    contact_id: str
    web_id: int
    language: str = ""
    vip: bool = False
    previous_status: str | None = None  # what an archived member was before

    @property
    def id(self) -> str:
        return subscriber_hash(self.email)


def _weighted(rng: random.Random, weights: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([v for v, _ in weights], weights=[w for _, w in weights])[0]


def generate(
    n: int, *, seed: int, start: int = DEFAULT_START, end: int = DEFAULT_END, archived: int = 0
) -> list[Member]:
    """`n` members in signup order; the last `archived` are archived."""
    rng = random.Random(f"mailchimp:{seed}")
    span = end - start
    signups = sorted(start + int(rng.random() * span * 0.6) for _ in range(n))
    out: list[Member] = []
    for index, person in enumerate(people(rng, n, allow_missing_email=False)):
        assert person.email is not None
        signup = signups[index]
        changed = signup + int(rng.random() * (end - signup - 1))
        if out and out[-1].last_changed >= signup and rng.random() < 0.08:
            changed = out[-1].last_changed  # a tie to the second
        merge: dict[str, Any] = {
            "FNAME": person.first_name,
            "LNAME": person.last_name,
            "PHONE": person.phone or "",
            "BIRTHDAY": f"{rng.randrange(1, 13):02d}/{rng.randrange(1, 29):02d}"
            if rng.random() < 0.5
            else "",
        }
        out.append(
            Member(
                email=person.email,
                status=_weighted(rng, STATUSES),
                merge_fields=merge,
                signup=signup,
                opt_in=signup + rng.randrange(0, 600),
                last_changed=changed,
                unique_email_id=rng.randbytes(5).hex(),
                contact_id=rng.randbytes(16).hex(),
                web_id=100_000 + index * 7 + rng.randrange(7),
                language=rng.choice(LANGUAGES),
                vip=rng.random() < 0.05,
            )
        )
    for member in out[len(out) - archived :] if archived else ():
        member.previous_status, member.status = member.status, "archived"
        member.last_changed = min(end - 1, member.last_changed + 3600)
    return out
