"""Phone numbers to E.164.

IDs and phone numbers stay strings (a leading zero is information). A number written the local
way (``081-234-5678``) only means something with a region, so every mapping has a default region
(TH unless the rules say otherwise) and ``+66 81 234 5678`` and ``081-234-5678`` both become
``+66812345678``. Numbers that parse but are not valid for their region are refused.

phonenumbers costs ~45 µs a call and a sync's numbers are mostly distinct, so the verdict on the
plain shapes (``+66812345678``, ``0812345678``) comes from the library's own metadata
(`phone_metadata.verdict`, ~2 µs) and only the other shapes reach the library. `normalize_column`
still decides once per distinct value of a batch, memoised across batches, keyed on the number
without its punctuation (`081-234-5678`, `081 234 5678` and `(081) 234.5678` are one `_parse`); an
error still names the value as it was written.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import phonenumbers

from esm_dagster.rules.conversion import Invalid, is_nan, show
from esm_dagster.rules.phone_metadata import INVALID, PLAIN, verdict

CACHE_SIZE = 65_536


# Punctuation phonenumbers ignores anyway; digits, "+", letters (vanity numbers) and "x"/"ext"
# extension markers are kept, so the compact form parses to the same number.
_PUNCTUATION = re.compile(r"[\s\-.()/]+")


@lru_cache(maxsize=CACHE_SIZE)
def normalize_phone(value: str, region: str) -> str | Invalid:
    """E.164 form of `value` read with default `region`, or an `Invalid`."""
    compact = _PUNCTUATION.sub("", value)
    # Only plain digits are keyed compactly: with letters, punctuation carries meaning
    # ("1000ext..0" is a vanity number, "1000ext0" a number with an extension).
    outcome = verdict(compact, region)
    if outcome is None:
        outcome = _parse(compact if PLAIN.fullmatch(compact) else value, region)
    if outcome[0] == "+":
        return outcome
    if outcome == INVALID:
        return Invalid("phone_number", f"{show(value)} is not a valid phone number for region {region}")
    return Invalid("phone_number", f"{show(value)} is not a phone number ({outcome[1:]})")


@lru_cache(maxsize=CACHE_SIZE)
def _parse(compact: str, region: str) -> str:
    """`library_verdict`, memoised: its cache statistics count the library's calls."""
    return library_verdict(compact, region)


def library_verdict(compact: str, region: str) -> str:
    """`_parse` by phonenumbers itself: the slow path and the reference of `verdict`."""
    try:
        number = phonenumbers.parse(compact, region)
    except phonenumbers.NumberParseException as exc:
        return f"!{exc}"
    if not phonenumbers.is_valid_number(number):
        return INVALID
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


# `_PUNCTUATION` without the line break that separates the numbers of `_compact_all`.
_PUNCTUATION_IN_LINES = re.compile(r"[^\S\n]+|[\-.()/]+")


def _compact_all(texts: list[str]) -> list[str] | None:
    """`_PUNCTUATION.sub("", t)` for every text in one pass, or None if a text holds a line break."""
    compacts = _PUNCTUATION_IN_LINES.sub("", "\n".join(texts)).split("\n")
    return compacts if len(compacts) == len(texts) else None


def _decide(texts: list[str], region: str) -> dict[str | None, Any]:
    """Distinct text -> E.164 or `Invalid`; plain valid numbers without a library call or a cache
    entry (deciding them again is as cheap as looking them up)."""
    compacts = _compact_all(texts)
    if compacts is None:
        return {None: None, **{text: normalize_phone(text, region) for text in texts}}
    decided: dict[str | None, Any] = {None: None}
    for text, compact in zip(texts, compacts, strict=True):
        outcome = verdict(compact, region)
        decided[text] = (
            outcome if outcome is not None and outcome[0] == "+" else normalize_phone(text, region)
        )
    return decided


def normalize_column(values: list[Any], region: str) -> list[Any]:
    """Convert a column of raw values; failures are left in place as `Invalid`."""
    texts = [v if v.__class__ is str else _as_text(v) for v in values]
    distinct = {t for t in texts if t.__class__ is str}
    table = _decide(list(distinct), region)
    return [table[t] if t.__class__ is str or t is None else t for t in texts]
