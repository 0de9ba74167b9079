"""Phone numbers to E.164.

IDs and phone numbers stay strings (a leading zero is information). A number written the local
way (``081-234-5678``) only means something with a region, so every mapping has a default region
(TH unless the rules say otherwise) and ``+66 81 234 5678`` and ``081-234-5678`` both become
``+66812345678``. Numbers that parse but are not valid for their region are refused.

phonenumbers costs ~50 µs a call, so `normalize_column` calls it once per distinct value of a
batch; `normalize_phone` is also memoised across batches. The library call is keyed on the number
without its punctuation (`081-234-5678`, `081 234 5678` and `(081) 234.5678` are one call,
`_parse`, whose cache statistics are the honest count of library calls); an error still names the
value as it was written.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import phonenumbers

from esm_dagster.rules.conversion import Invalid, is_nan, map_distinct, show

CACHE_SIZE = 65_536


# Punctuation phonenumbers ignores anyway; digits, "+", letters (vanity numbers) and "x"/"ext"
# extension markers are kept, so the compact form parses to the same number.
_PUNCTUATION = re.compile(r"[\s\-.()/]+")


@lru_cache(maxsize=CACHE_SIZE)
def normalize_phone(value: str, region: str) -> str | Invalid:
    """E.164 form of `value` read with default `region`, or an `Invalid`."""
    outcome = _parse(_PUNCTUATION.sub("", value), region)
    if outcome.__class__ is str and not outcome.startswith("!"):
        return outcome
    if outcome == "!invalid":
        return Invalid("phone_number", f"{show(value)} is not a valid phone number for region {region}")
    return Invalid("phone_number", f"{show(value)} is not a phone number ({outcome[1:]})")


@lru_cache(maxsize=CACHE_SIZE)
def _parse(compact: str, region: str) -> str:
    """E.164, or `!invalid`, or `!<parse error>`: the library's verdict on the compact form."""
    try:
        number = phonenumbers.parse(compact, region)
    except phonenumbers.NumberParseException as exc:
        return f"!{exc}"
    if not phonenumbers.is_valid_number(number):
        return "!invalid"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def library_phone(value: str, region: str) -> str | Invalid:
    """phonenumbers on the value as written: the reference `normalize_phone` must agree with."""
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        return Invalid("phone_number", f"{show(value)} is not a phone number ({exc})")
    if not phonenumbers.is_valid_number(number):
        return Invalid("phone_number", f"{show(value)} is not a valid phone number for region {region}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _as_text(value: Any) -> Any:
    if value is None or value.__class__ is str:
        return value
    if is_nan(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return Invalid("type", f"{show(value)} is not a phone number (expected a string)")


def normalize_column(values: list[Any], region: str) -> list[Any]:
    """Convert a column of raw values; failures are left in place as `Invalid`."""
    texts = [v if v.__class__ is str else _as_text(v) for v in values]
    return map_distinct(texts, lambda v: normalize_phone(v, region))
