"""Deterministic PayPal seed data: completed transactions with payers, some with broken e-mails."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

DEFAULT_START = 1_767_225_600  # 2026-01-01T00:00:00Z
DEFAULT_END = 1_772_323_200  # 2026-03-01T00:00:00Z
CURRENCIES = ("USD", "EUR", "THB", "JPY")
ZERO_DECIMAL = frozenset({"JPY", "HUF", "TWD"})
_GIVEN = ("Ana", "Bruno", "Chai", "Dara", "Emi", "Farid", "Gita", "Hugo", "Ines", "Jun")
_SURNAME = ("Silva", "Okafor", "Suzuki", "Nguyen", "Rossi", "Kowalski", "Dubois", "Haddad")
# Wrong for us, yet inside the pattern of PayPal's own spec (`^.+@[^"\-].+$`): what PayPal could hand back.
_BAD_EMAILS = ("two@@example.com", "dots..twice@example.com", "no-domain-dot@example")


def rfc3339(seconds: float) -> str:
    """RFC 3339 in UTC to the second, in the form PayPal's spec pattern allows (`Z`, or `+hh:mm`)."""
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    """RFC 3339 with `Z`, `+00:00` or `+0000`; an offset is required."""
    parsed = dt.datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        raise ValueError("a time zone offset is required")
    return parsed.timestamp()


def money(currency: str, minor: int) -> dict[str, str]:
    exponent = 0 if currency in ZERO_DECIMAL else 2
    return {"currency_code": currency, "value": str(Decimal(minor).scaleb(-exponent))}


def transaction(
    transaction_id: str, initiated: float, amount: dict[str, str], payer: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    info = {
        "paypal_account_id": payer.get("account_id", ""),
        "transaction_id": transaction_id,
        "transaction_event_code": "T0006",
        "transaction_initiation_date": rfc3339(initiated),
        "transaction_updated_date": rfc3339(initiated + 60),
        "transaction_amount": amount,
        "transaction_status": "S",
        **extra,
    }
    return {"transaction_info": info, "payer_info": payer}


def seed_transactions(count: int, seed: int, start: int, end: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        initiated = rng.randrange(start, end)
        currency = CURRENCIES[i % len(CURRENCIES)]
        minor = rng.randrange(100, 50_000)
        given, surname = rng.choice(_GIVEN), rng.choice(_SURNAME)
        email = f"{given.lower()}.{surname.lower()}{i}@example.com"
        if i % 9 == 4:
            email = _BAD_EMAILS[i % len(_BAD_EMAILS)]
        payer = {
            "account_id": "".join(rng.choice("0123456789ABCDEFGHJKLMNPRSTUVWXY") for _ in range(13)),
            "email_address": email,
            "address_status": "Y",
            "payer_status": "Y",
            "payer_name": {"given_name": given, "surname": surname},
            "country_code": rng.choice(("US", "TH", "JP", "DE")),
        }
        tid = "".join(rng.choice("0123456789ABCDEFGHJKLMNPRSTUVWXY") for _ in range(17))
        out.append(transaction(tid, initiated, money(currency, minor), payer))
    return out
