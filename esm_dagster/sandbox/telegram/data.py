"""Deterministic seed for the Telegram emulator: club members writing to the bot.

Most updates are text messages; some are stickers or shared contacts without text, and some
contacts carry phone numbers that are not valid, so a mapping's rules have something to reject.
"""

from __future__ import annotations

import random
from typing import Any

DEFAULT_START = 1_767_225_600  # 2026-01-01T00:00:00Z
DEFAULT_END = 1_769_904_000  # 2026-02-01T00:00:00Z
FIRST_UPDATE_ID = 731_000_100
NAMES = (
    ("Ana", "ana_padel"),
    ("Somchai", "somchai88"),
    ("Lena", None),
    ("Kenji", "kenji_k"),
    ("Priya", "priya"),
)
TEXTS = (
    "Is court 2 free at 18:00?",
    "Please cancel my lesson",
    "Thanks!",
    "/start",
    "Book me for Sunday 9:00",
)
BAD_PHONES = ("12", "+66abc")


def chats(rng: random.Random, count: int) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        first, username = NAMES[i % len(NAMES)]
        user_id = rng.randrange(10**8, 10**10)
        chat: dict[str, Any] = {"id": user_id, "type": "private", "first_name": first}
        if username:
            chat["username"] = f"{username}{i}"
        out.append(chat)
    return out


def sender(chat: dict[str, Any]) -> dict[str, Any]:
    user = {"id": chat["id"], "is_bot": False, "first_name": chat["first_name"], "language_code": "en"}
    if "username" in chat:
        user["username"] = chat["username"]
    return user


def seed_updates(count: int, seed: int, start: int, end: int, members: int = 8) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    people = chats(rng, members)
    dates = sorted(rng.randrange(start, end) for _ in range(count))
    out = []
    for i, date in enumerate(dates):
        chat = people[rng.randrange(len(people))]
        message: dict[str, Any] = {
            "message_id": 1000 + i,
            "from": sender(chat),
            "chat": dict(chat),
            "date": date,
        }
        if i % 10 == 3:
            message["sticker"] = {"file_id": f"CAACAgIAAxkBAAE{i:06d}", "emoji": "🎾", "is_animated": False}
        elif i % 10 == 7:
            phone = BAD_PHONES[i % 2] if i % 20 == 7 else f"+6681{rng.randrange(10**6, 10**7)}"
            message["contact"] = {
                "phone_number": phone,
                "first_name": chat["first_name"],
                "user_id": chat["id"],
            }
        else:
            message["text"] = TEXTS[rng.randrange(len(TEXTS))]
        out.append({"update_id": FIRST_UPDATE_ID + i, "message": message})
    return out
