"""Deterministic seed workspace for the Slack emulator: members, channels and their history.

Shapes follow the Slack Web API spec's `objs_user`, `objs_conversation` and `objs_message`. A few
members carry e-mail addresses or phone numbers that are not valid (typos, a missing domain), and
one is a bot without an e-mail, so a mapping's rules have something to reject.
"""

from __future__ import annotations

import random
from typing import Any

TEAM_ID = "T0PADEL0001"
DEFAULT_START = 1_767_225_600  # 2026-01-01T00:00:00Z
DEFAULT_END = 1_769_904_000  # 2026-02-01T00:00:00Z
UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
FIRST = ("Ana", "Somchai", "Lena", "Kenji", "Priya", "Marco", "Nok", "Sara", "Tom", "Aroon")
LAST = ("Silva", "Wong", "Muller", "Sato", "Patel", "Rossi", "Chai", "Berg", "Hale", "Suk")
BAD_EMAILS = ("no-at-sign.example", "bob@", "two@@example.com")
CHANNELS = ("general", "bookings", "coaches", "tournaments", "maintenance", "front-desk", "juniors")


def slack_id(prefix: str, rng: random.Random, length: int = 10) -> str:
    return prefix + "".join(rng.choice(UPPER) for _ in range(length))


def ts(seconds: int, sequence: int) -> str:
    return f"{seconds}.{sequence % 1_000_000:06d}"


def user(
    *, user_id: str, first: str, last: str, email: str | None, phone: str, updated: int, is_bot: bool = False
) -> dict[str, Any]:
    name = f"{first}.{last}".lower()
    real = f"{first} {last}"
    profile: dict[str, Any] = {
        "avatar_hash": "g" + user_id[-6:].lower(),
        "display_name": first,
        "display_name_normalized": first,
        "fields": None,
        "first_name": first,
        "last_name": last,
        "phone": phone,
        "real_name": real,
        "real_name_normalized": real,
        "skype": "",
        "status_emoji": "",
        "status_text": "",
        "team": TEAM_ID,
        "title": "",
    }
    if email is not None:
        profile["email"] = email
    return {
        "color": "9f69e7",
        "deleted": False,
        "id": user_id,
        "is_admin": False,
        "is_app_user": False,
        "is_bot": is_bot,
        "is_owner": False,
        "is_primary_owner": False,
        "is_restricted": False,
        "is_ultra_restricted": False,
        "name": name,
        "profile": profile,
        "real_name": real,
        "team_id": TEAM_ID,
        "tz": "Asia/Bangkok",
        "tz_label": "Indochina Time",
        "tz_offset": 25200,
        "updated": updated,
    }


def conversation(
    *, channel_id: str, name: str, creator: str, created: int, general: bool, archived: bool, members: int
) -> dict[str, Any]:
    return {
        "created": created,
        "creator": creator,
        "id": channel_id,
        "is_archived": archived,
        "is_channel": True,
        "is_ext_shared": False,
        "is_general": general,
        "is_group": False,
        "is_im": False,
        "is_member": not archived,
        "is_mpim": False,
        "is_org_shared": False,
        "is_pending_ext_shared": False,
        "is_private": False,
        "is_shared": False,
        "name": name,
        "name_normalized": name,
        "num_members": members,
        "parent_conversation": None,
        "pending_shared": [],
        "previous_names": [],
        "purpose": {"creator": creator, "last_set": created, "value": f"All about {name}"},
        "topic": {"creator": "", "last_set": 0, "value": ""},
        "unlinked": 0,
    }


def seed_users(count: int, rng: random.Random, start: int, end: int) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        first, last = FIRST[i % len(FIRST)], LAST[(i * 3 + 1) % len(LAST)]
        if i % 11 == 5:
            email: str | None = BAD_EMAILS[i % len(BAD_EMAILS)]
        else:
            email = f"{first}.{last}.{i}@padel.example".lower()
        phone = "" if i % 4 == 0 else ("+66 81 234 " + f"{i:04d}" if i % 13 != 7 else "12345")
        out.append(
            user(
                user_id=slack_id("U", rng),
                first=first,
                last=last,
                email=email,
                phone=phone,
                updated=rng.randrange(start, end),
            )
        )
    return out


def seed_bot(rng: random.Random, start: int) -> dict[str, Any]:
    bot = user(
        user_id=slack_id("U", rng), first="Club", last="Bot", email=None, phone="", updated=start, is_bot=True
    )
    bot["profile"]["bot_id"] = slack_id("B", rng)
    return bot


def seed_conversations(
    count: int, members: list[dict[str, Any]], rng: random.Random, start: int, end: int
) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        name = CHANNELS[i] if i < len(CHANNELS) else f"court-{i - len(CHANNELS) + 1}"
        out.append(
            conversation(
                channel_id=slack_id("C", rng),
                name=name,
                creator=members[i % len(members)]["id"],
                created=rng.randrange(start, end),
                general=i == 0,
                archived=i % 9 == 8,
                members=rng.randrange(2, len(members) + 2),
            )
        )
    return out
