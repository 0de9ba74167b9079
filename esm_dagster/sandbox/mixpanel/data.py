"""The Mixpanel emulator's seed: a club's product events, the same for the same seed.

Some events carry an `$email` a rules plan must reject (typed by hand in a sign-up form).
"""

from __future__ import annotations

import random
from typing import Any

DEFAULT_START = 1767225600  # 2026-01-01T00:00:00Z
DEFAULT_END = 1769904000  # 2026-02-01T00:00:00Z
EVENT_NAMES = ("Sign Up", "Court Booked", "Booking Cancelled", "Payment Completed")
_BAD_EMAILS = ("player@@club.example", "no-at-sign.example", "spaces in@club.example")


def seed_events(rng: random.Random, count: int, start: int, end: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i in range(count):
        moment = rng.randrange(start, end)
        user = rng.randrange(1, max(2, count // 4))
        email = _BAD_EMAILS[i % len(_BAD_EMAILS)] if i % 11 == 5 else f"player{user}@club.example"
        properties: dict[str, Any] = {
            "time": moment,
            "distinct_id": f"user-{user}",
            "$insert_id": f"{rng.getrandbits(128):032x}",
            "$email": email,
            "mp_processing_time_ms": moment * 1000 + rng.randrange(50, 5000),
            "court": rng.choice(("A", "B", "C")),
        }
        name = rng.choice(EVENT_NAMES)
        if name == "Payment Completed":
            properties["amount"] = rng.choice((350, 500, 700))
            properties["currency"] = "THB"
        events.append({"event": name, "properties": properties})
    return events
