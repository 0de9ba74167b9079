"""Deterministic data of a padel club's booking platform: courts, members, bookings, payments, waitlist.

Times are Asia/Bangkok wall-clock times written in ISO-8601 with their `+07:00` offset, as a Thai
booking platform shows them; payments carry unix seconds, the way its payment export does. Prices
are THB decimal strings (`"1800.00"`), payments integer satang. Members include what the rules must
catch: a fixed share of invalid emails and phones, missing emails, Thai phones in several spellings.
Bookings never overlap on a court, and every booking's price is the court's rate times its hours.
"""

from __future__ import annotations

import datetime as dt
import random
import string
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

BANGKOK = dt.timezone(dt.timedelta(hours=7), "Asia/Bangkok")
DEFAULT_START = 1788220800  # 2026-09-01T00:00:00Z
DEFAULT_END = 1796083200  # 2026-12-01T00:00:00Z
INVALID_EMAIL = "not-an-email"
INVALID_PHONE = "12345"

COURTS: tuple[tuple[str, str, bool, str], ...] = (  # name, surface, indoor, hourly rate THB
    ("Court 1 Panoramic", "panoramic_glass", True, "1200.00"),
    ("Court 2 Panoramic", "panoramic_glass", True, "1200.00"),
    ("Court 3", "glass", True, "1000.00"),
    ("Court 4", "glass", True, "1000.00"),
    ("Court 5 Outdoor", "glass", False, "800.00"),
    ("Court 6 Outdoor", "wall", False, "700.00"),
    ("Centre Court", "panoramic_glass", True, "1500.00"),
    ("Single Court", "glass", True, "600.00"),
)
PEOPLE: tuple[tuple[str, str, str], ...] = (  # first, last, email local part
    ("Somchai", "Jaidee", "somchai.j"),
    ("สมชาย", "ใจดี", "somchai"),
    ("Suda", "Srisuk", "suda.s"),
    ("Anan", "Chaiyaporn", "anan.c"),
    ("Kanya", "Wongsawat", "kanya.w"),
    ("พิมพ์ชนก", "รัตนกุล", "pimchanok"),
    ("Niran", "Boonmee", "niran"),
    ("Wichai", "Thongdee", "wichai.t"),
    ("Malee", "Sukjai", "malee"),
    ("John", "Smith", "jsmith"),
    ("Anna", "Müller", "anna.mueller"),
    ("José", "García", "jose.garcia"),
    ("Hiroshi", "Tanaka", "h.tanaka"),
    ("Priya", "Raman", "priya.r"),
)
DOMAINS = ("example.com", "example.co.th", "mail.example.org", "ตัวอย่าง.ไทย")
DURATIONS = (60, 90, 90, 120)  # minutes
STATUSES = ("confirmed",) * 16 + ("cancelled",) * 2 + ("pending",) * 2
METHODS = ("promptpay", "promptpay", "card", "card", "cash")
NOTES = (None, None, None, "Racket rental x2", "ขอลูกใหม่", "Coaching session", "Birthday group")
# Per-block shares of member email and phone kinds, shuffled per block like the Stripe seed.
EMAIL_KINDS = ("plain",) * 14 + ("plus",) * 2 + ("missing",) * 2 + ("invalid",) * 2
PHONE_KINDS = (
    ("e164",) * 5 + ("local_dashed",) * 5 + ("intl_spaced",) * 4 + ("missing",) * 4 + ("invalid",) * 2
)


def iso(seconds: float) -> str:
    """Unix seconds as Bangkok wall-clock ISO-8601 with its offset: 2026-10-03T18:30:00+07:00."""
    return dt.datetime.fromtimestamp(int(seconds), BANGKOK).isoformat()


def parse_iso(text: str) -> float:
    """An ISO-8601 time with an offset (or Z) as unix seconds; ValueError otherwise."""
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return when.timestamp()


@dataclass(slots=True)
class Dataset:
    courts: list[dict[str, Any]]
    members: list[dict[str, Any]]
    bookings: list[dict[str, Any]]
    payments: list[dict[str, Any]]
    waitlist: list[dict[str, Any]]


def _blocks(rng: random.Random, n: int, block: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        shuffled = list(block)
        rng.shuffle(shuffled)
        out.extend(shuffled)
    return out[:n]


def _phone(rng: random.Random, kind: str) -> str | None:
    if kind == "missing":
        return None
    if kind == "invalid":
        return INVALID_PHONE
    digits = rng.choice(("81", "86", "89", "91", "95", "62")) + f"{rng.randrange(10**7):07d}"
    if kind == "e164":
        return f"+66{digits}"
    if kind == "local_dashed":
        return f"0{digits[:2]}-{digits[2:5]}-{digits[5:]}"
    return f"+66 {digits[:2]} {digits[2:5]} {digits[5:]}"


def _email(rng: random.Random, kind: str, local: str, number: int) -> str | None:
    if kind == "missing":
        return None
    if kind == "invalid":
        return INVALID_EMAIL
    tag = "+padel" if kind == "plus" else ""
    return f"{local}{number}{tag}@{rng.choice(DOMAINS)}"


def generate(*, members: int, bookings: int, seed: int, start: int, end: int) -> Dataset:
    """The seeded platform: same arguments, same data, in any process."""
    if members < 1 or bookings < 0:
        raise ValueError("members must be >= 1 and bookings >= 0")
    if end - start < 14 * 86_400:
        raise ValueError("the seeded period must span at least two weeks")
    rng = random.Random(f"booking:{seed}")
    courts = [
        {
            "id": f"court-{i + 1:02d}",
            "name": name,
            "surface": surface,
            "indoor": indoor,
            "hourly_rate_thb": rate,
            "currency": "THB",
            "created_at": iso(start - 400 * 86_400 + i * 3_600),
        }
        for i, (name, surface, indoor, rate) in enumerate(COURTS)
    ]
    email_kinds = _blocks(rng, members, EMAIL_KINDS)
    phone_kinds = _blocks(rng, members, PHONE_KINDS)
    member_rows = []
    for i in range(members):
        first, last, local = rng.choice(PEOPLE)
        created = start + int(rng.random() * (end - start) * 0.6)
        updated = created if rng.random() < 0.5 else created + int(rng.random() * (end - created))
        member_rows.append(
            {
                "id": 1001 + i,
                "first_name": first,
                "last_name": last,
                "email": _email(rng, email_kinds[i], local, 1001 + i),
                "phone": _phone(rng, phone_kinds[i]),
                "level": round(1.0 + rng.randrange(11) * 0.5, 1),
                "marketing_opt_in": rng.random() < 0.6,
                "external_ref": None,
                "created_at": iso(created),
                "updated_at": iso(updated),
            }
        )
    taken: set[tuple[str, int]] = set()  # (court, half-hour slot index since start)
    booking_rows: list[dict[str, Any]] = []
    alnum = string.ascii_lowercase + string.digits
    while len(booking_rows) < bookings:
        court = rng.randrange(len(COURTS))
        court_id, rate = f"court-{court + 1:02d}", COURTS[court][3]
        day = rng.randrange((end - start) // 86_400)
        minutes = rng.choice(DURATIONS)
        first_slot = rng.randrange(14, 44 - minutes // 30 + 1)  # 07:00 .. 22:00 Bangkok
        slots = [(court_id, day * 48 + s) for s in range(first_slot, first_slot + minutes // 30)]
        if any(s in taken for s in slots):
            continue
        taken.update(slots)
        day_start = dt.datetime.fromtimestamp(start, BANGKOK).replace(hour=0, minute=0, second=0)
        begins = int((day_start + dt.timedelta(days=day, minutes=30 * first_slot)).timestamp())
        member = member_rows[rng.randrange(members)]
        created = max(start - 30 * 86_400, begins - rng.randrange(3_600, 21 * 86_400))
        status = rng.choice(STATUSES)
        updated = (
            created if status == "confirmed" and rng.random() < 0.7 else created + rng.randrange(60, 86_400)
        )
        booking_rows.append(
            {
                "id": "bk_" + "".join(rng.choices(alnum, k=10)),
                "court_id": court_id,
                "member_id": member["id"],
                "starts_at": iso(begins),
                "ends_at": iso(begins + minutes * 60),
                "duration_minutes": minutes,
                "status": status,
                "price_thb": price(rate, minutes),
                "currency": "THB",
                "notes": rng.choice(NOTES),
                "created_at": iso(created),
                "updated_at": iso(updated),
            }
        )
    payments = []
    for booking in booking_rows:
        if booking["status"] != "confirmed":
            continue
        paid = parse_iso(booking["created_at"]) + rng.randrange(30, 3_600)
        payments.append(
            {
                "id": "pay_" + booking["id"][3:][::-1],
                "booking_id": booking["id"],
                "member_id": booking["member_id"],
                "amount_satang": int(Decimal(booking["price_thb"]) * 100),
                "currency": "THB",
                "method": rng.choice(METHODS),
                "paid_at": int(paid),
            }
        )
    waitlist = [
        {
            "id": 501 + i,
            "court_id": courts[rng.randrange(len(COURTS))]["id"],
            "member_id": member_rows[rng.randrange(members)]["id"],
            "wanted_at": iso(start + rng.randrange((end - start) // 1800) * 1800),
            "created_at": iso(start + i * 7_200 + rng.randrange(3_600)),
        }
        for i in range(max(3, bookings // 20))
    ]
    return Dataset(courts, member_rows, booking_rows, payments, waitlist)


def price(hourly_rate_thb: str, minutes: int) -> str:
    """The court's rate for `minutes`, in THB with two decimals."""
    return f"{(Decimal(hourly_rate_thb) * minutes / 60).quantize(Decimal('0.01'))}"
