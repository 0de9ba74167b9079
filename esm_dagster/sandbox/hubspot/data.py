"""Deterministic HubSpot contacts: the people of `sandbox.people` as CRM records.

Every property value is a string, as HubSpot sends them (PROVIDERS.md §4 quirks); `createdate` and
`lastmodifieddate` are ISO-8601 with milliseconds, like `createdAt` / `updatedAt`. Modification
times are spread over the seeded range with a small share of exact ties (same millisecond), so
keyset paging on `lastmodifieddate` meets ties; a few contacts are archived.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

from esm_dagster.sandbox.people import people

DEFAULT_START_MS = 1788220800000  # 2026-09-01T00:00:00Z
DEFAULT_END_MS = 1796083200000  # 2026-12-01T00:00:00Z
LIFECYCLE_STAGES = ("subscriber", "lead", "marketingqualifiedlead", "customer", "evangelist")
FIRST_ID = 151  # HubSpot ids are numeric strings


def iso_ms(ms: int) -> str:
    """`2026-10-01T12:00:00.123Z`: HubSpot's timestamp text."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass(slots=True)
class Contact:
    id: int
    properties: dict[str, str | None]
    created_ms: int
    updated_ms: int
    archived_ms: int | None = None
    history: list[str] = field(default_factory=list)  # what changed it, for tests that ask

    @property
    def archived(self) -> bool:
        return self.archived_ms is not None


def generate(
    n: int, *, seed: int, start_ms: int = DEFAULT_START_MS, end_ms: int = DEFAULT_END_MS, archived: int = 0
) -> list[Contact]:
    """`n` contacts with ids from `FIRST_ID`; the last `archived` of them are archived."""
    rng = random.Random(f"hubspot:{seed}")
    span = end_ms - start_ms
    created = sorted(start_ms + int(rng.random() * span * 0.5) for _ in range(n))
    out: list[Contact] = []
    previous_modified: int | None = None
    for index, person in enumerate(people(rng, n)):
        created_ms = created[index]
        modified = created_ms + int(rng.random() * (end_ms - created_ms - 1))
        if previous_modified is not None and previous_modified >= created_ms and rng.random() < 0.08:
            modified = previous_modified  # a tie with another contact, to the millisecond
        previous_modified = modified
        contact_id = FIRST_ID + index
        props: dict[str, str | None] = {
            "email": person.email,
            "firstname": person.first_name,
            "lastname": person.last_name or None,
            "phone": person.phone,
            "lifecyclestage": rng.choice(LIFECYCLE_STAGES),
            "createdate": iso_ms(created_ms),
            "lastmodifieddate": iso_ms(modified),
            "hs_object_id": str(contact_id),
        }
        out.append(Contact(contact_id, props, created_ms, modified))
    for contact in out[len(out) - archived :] if archived else ():
        contact.archived_ms = min(end_ms - 1, contact.updated_ms + 3_600_000)
    return out
