"""Deterministic people for the CRM and mailing-list emulators (HubSpot contacts, Mailchimp members).

The same pools as the Stripe seed (`sandbox.stripe.data`): Thai and international names, plus and
IDN addresses, upper-case domains, Thai phones in four spellings, and a small fixed share of invalid
emails and phones, so the rules' rejections are exercised by every provider's data. Each block of
50 people holds every category; `rng` alone decides everything, so a seed gives the same people.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from esm_dagster.sandbox.stripe.data import (
    IDN_DOMAINS,
    INVALID_EMAIL,
    INVALID_PHONE,
    PEOPLE,
    PLAIN_DOMAINS,
    PLUS_TAGS,
    THAI_MOBILE_PREFIXES,
)

# Shares per block of 50. Every person of a mailing list needs an address, so `missing` emails are
# only drawn for providers that allow them (HubSpot contacts may have none).
EMAIL_KINDS = (("plain", 33), ("plus", 6), ("idn", 4), ("upper", 3), ("invalid", 2), ("missing", 2))
PHONE_KINDS = (("th_intl", 12), ("th_local", 12), ("th_e164", 10), ("uk", 5), ("missing", 8), ("invalid", 3))


@dataclass(frozen=True, slots=True)
class Person:
    first_name: str
    last_name: str
    email: str | None
    phone: str | None


def _schedule(rng: random.Random, n: int, weights: tuple[tuple[str, int], ...]) -> list[str]:
    block = [value for value, weight in weights for _ in range(weight)]
    out: list[str] = []
    while len(out) < n:
        shuffled = block[:]
        rng.shuffle(shuffled)
        out.extend(shuffled)
    return out[:n]


def _email(rng: random.Random, kind: str, local: str, number: int) -> str | None:
    if kind == "missing":
        return None
    if kind == "invalid":
        return f"{INVALID_EMAIL}-{number}"
    if kind == "plus":
        return f"{local}{number}+{rng.choice(PLUS_TAGS)}@{rng.choice(PLAIN_DOMAINS)}"
    if kind == "idn":
        return f"{local}{number}@{rng.choice(IDN_DOMAINS)}"
    if kind == "upper":
        return f"{local.title()}{number}@{rng.choice(PLAIN_DOMAINS).upper()}"
    return f"{local}{number}@{rng.choice(PLAIN_DOMAINS)}"


def _phone(rng: random.Random, kind: str) -> str | None:
    if kind == "missing":
        return None
    if kind == "invalid":
        return INVALID_PHONE
    if kind == "uk":
        return f"+44 20 7946 0{rng.randrange(1000):03d}"
    digits = rng.choice(THAI_MOBILE_PREFIXES) + f"{rng.randrange(10**7):07d}"
    if kind == "th_intl":
        return f"+66 {digits[:2]} {digits[2:5]} {digits[5:]}"
    if kind == "th_local":
        return f"0{digits[:2]}-{digits[2:5]}-{digits[5:]}"
    return f"+66{digits}"


def people(rng: random.Random, n: int, *, allow_missing_email: bool = True) -> list[Person]:
    """`n` people; emails are unique case-insensitively (both providers key on the address)."""
    kinds = _schedule(rng, n, EMAIL_KINDS)
    if not allow_missing_email:
        kinds = ["plain" if kind == "missing" else kind for kind in kinds]
    phones = _schedule(rng, n, PHONE_KINDS)
    out: list[Person] = []
    for number, (email_kind, phone_kind) in enumerate(zip(kinds, phones, strict=True), start=1):
        full_name, local = PEOPLE[rng.randrange(len(PEOPLE))]
        first, _, last = full_name.partition(" ")
        out.append(Person(first, last, _email(rng, email_kind, local, number), _phone(rng, phone_kind)))
    return out
