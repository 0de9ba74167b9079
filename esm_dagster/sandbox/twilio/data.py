"""Deterministic seed messages for the Twilio emulator, shaped like `api.v2010.account.message`.

A few recipients are not valid phone numbers (too short, letters, a missing `+`), as real message
logs hold after typos and imports, so a mapping's `phone_number` rule has something to reject.
"""

from __future__ import annotations

import email.utils
import random
from typing import Any

API_VERSION = "2010-04-01"
DEFAULT_START = 1_767_225_600  # 2026-01-01T00:00:00Z
DEFAULT_END = 1_769_904_000  # 2026-02-01T00:00:00Z
HEX = "0123456789abcdef"
STATUSES = ("delivered", "delivered", "delivered", "sent", "undelivered", "failed", "received")
BAD_NUMBERS = ("+1555", "12", "not-a-number", "+66abc")
BODIES = (
    "Your court is booked for {h}:00 tomorrow.",
    "Reminder: padel lesson at {h}:30.",
    "Your membership renews next week.",
    "Thanks! See you on court {h}.",
)


def rfc2822(unix_seconds: int) -> str:
    """`Fri, 13 Aug 2010 01:16:24 +0000`, as Twilio writes dates."""
    return email.utils.formatdate(unix_seconds, usegmt=False).replace("-0000", "+0000")


def sid(prefix: str, rng: random.Random) -> str:
    return prefix + "".join(rng.choice(HEX) for _ in range(32))


def message(
    *,
    account_sid: str,
    message_sid: str,
    to: str,
    sender: str | None,
    body: str,
    status: str,
    direction: str,
    created: int,
    sent: int | None,
    messaging_service_sid: str | None = None,
    price: str | None = None,
) -> dict[str, Any]:
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{message_sid}.json"
    failed = status in ("failed", "undelivered")
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": body,
        "date_created": rfc2822(created),
        "date_sent": rfc2822(sent) if sent is not None else None,
        "date_updated": rfc2822(sent if sent is not None else created),
        "direction": direction,
        "error_code": 30003 if failed else None,
        "error_message": "Unreachable destination handset" if failed else None,
        "from": sender,
        "messaging_service_sid": messaging_service_sid,
        "num_media": "0",
        "num_segments": "1",
        "price": price,
        "price_unit": "USD" if price is not None else None,
        "sid": message_sid,
        "status": status,
        "subresource_uris": {"media": uri.removesuffix(".json") + "/Media.json"},
        "to": to,
        "uri": uri,
    }


def seed_messages(
    account_sid: str, sender: str, count: int, seed: int, start: int, end: int
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        created = rng.randrange(start, end)
        if i % 9 == 4:
            to = BAD_NUMBERS[i % len(BAD_NUMBERS)]
        else:
            to = "+668" + "".join(rng.choice("0123456789") for _ in range(8))
        status = STATUSES[rng.randrange(len(STATUSES))]
        inbound = status == "received"
        out.append(
            message(
                account_sid=account_sid,
                message_sid=sid("SM", rng),
                to=sender if inbound else to,
                sender=to if inbound else sender,
                body=BODIES[i % len(BODIES)].format(h=rng.randrange(6, 22)),
                status=status,
                direction="inbound" if inbound else "outbound-api",
                created=created,
                sent=created + rng.randrange(0, 5),
                price=f"-0.0{rng.randrange(100, 999)}0" if not inbound else None,
            )
        )
    return out
