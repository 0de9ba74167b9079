"""phonenumbers' verdict on the common shapes of a phone number, from its own metadata.

`phonenumbers.parse` + `is_valid_number` cost ~45 µs a number, and in a sync of customers almost
every number is distinct, so caching by value does not help: the phone column was ~90% of the
rules engine's time. Most numbers arrive in one of two plain shapes once punctuation is gone,
``+<digits>`` and ``0<digits>`` (national, with the default region's trunk prefix). For those,
the library's decisions reduce to a few regular expressions of the same metadata: which country
calling code the digits start with, whether a national prefix would be stripped, which region of a
shared calling code the number belongs to, and whether the national number fully matches the
region's general pattern and one of its number-type patterns with an allowed length. `verdict`
takes exactly those steps, in the library's order, on patterns compiled once per region.

Anything else (letters, extensions, IDD prefixes like ``00``, national prefixes with transform
rules, non-geographic calling codes, Italian leading zeros, numbers the library would refuse to
parse) returns None and goes to the library itself, so error texts are always the library's. The
tests compare `verdict` with the library on every example number of every region in several
formats and on random digit strings (`rules/test_phone_metadata.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from phonenumbers import COUNTRY_CODE_TO_REGION_CODE
from phonenumbers.phonemetadata import PhoneMetadata, PhoneNumberDesc

INVALID = "!invalid"

PLAIN = re.compile(r"\+?[0-9]{3,}")  # the only shapes `verdict` reads
_MIN_NSN, _MAX_NSN = 2, 17  # phonenumbers' _MIN_LENGTH_FOR_NSN / _MAX_LENGTH_FOR_NSN
_MAX_CC_DIGITS = 3
_NON_GEO = "001"

# The number types `_number_type_helper` tries after the general description, in its order.
_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
)


def _lengths(desc: PhoneNumberDesc | None) -> tuple[int, ...]:
    return tuple(desc.possible_length or ()) if desc is not None else ()


def _pattern(desc: PhoneNumberDesc | None) -> str | None:
    return desc.national_number_pattern or None if desc is not None else None


def _known_type_patterns(metadata: PhoneMetadata) -> dict[int, re.Pattern[str]]:
    """Length -> one pattern equivalent to `_number_type_helper(nsn) != UNKNOWN` at that length.

    `_is_number_matching_desc` is "an allowed length (when the description lists any) and a full
    match"; the helper asks it of the general description, then of each type. At a given length
    that is a full match of the general pattern (a lookahead) and of any type allowed there.
    """
    general = metadata.general_desc
    general_pattern = _pattern(general)
    if general_pattern is None:
        return {}
    descs = [getattr(metadata, name) for name in _TYPES]
    if not metadata.same_mobile_and_fixed_line_pattern:
        descs.append(metadata.mobile)
    typed = [(_lengths(d), p) for d in descs if (p := _pattern(d)) is not None]
    general_lengths = _lengths(general)
    by_length: dict[int, re.Pattern[str]] = {}
    for length in range(_MIN_NSN, _MAX_NSN + 1):
        if general_lengths and length not in general_lengths:
            continue
        allowed = [p for lengths, p in typed if not lengths or length in lengths]
        if allowed:
            alternatives = "|".join(f"(?:{p})" for p in allowed)
            by_length[length] = re.compile(f"(?=(?:{general_pattern})\\Z)(?:{alternatives})")
    return by_length


@dataclass(frozen=True, slots=True)
class _Region:
    code: str
    country_code: int
    known_type: dict[int, re.Pattern[str]]
    general_pattern: re.Pattern[str] | None
    leading_digits: re.Pattern[str] | None
    national_prefix: re.Pattern[str] | None
    # The trunk prefix where `parse` would strip it by plain rules: not after an IDD prefix,
    # and None when the region has no prefix or rewrites it (a transform rule).
    national_head: re.Pattern[str] | None
    usable_lengths: frozenset[int]
    sole_region: bool  # the only region of its calling code

    def is_known_type(self, nsn: str) -> bool:
        """`_number_type_helper(nsn, metadata) != UNKNOWN`."""
        pattern = self.known_type.get(len(nsn))
        return pattern is not None and pattern.fullmatch(nsn) is not None

    def viable(self, nsn: str) -> bool:
        """`_match_national_number(nsn, general_desc, False)`: the pattern alone, no length."""
        return self.general_pattern is not None and self.general_pattern.fullmatch(nsn) is not None


def _usable_lengths(general: PhoneNumberDesc | None) -> frozenset[int]:
    """Lengths where `_test_number_length` is not TOO_SHORT, IS_POSSIBLE_LOCAL_ONLY or
    INVALID_LENGTH, so that `parse` keeps a national number stripped of its prefix."""
    lengths = _lengths(general)
    if not lengths or -1 in lengths:
        return frozenset()
    local = set(general.possible_length_local_only or ()) if general is not None else set()
    return frozenset(
        n for n in range(_MAX_NSN + 1) if n not in local and (n > lengths[-1] or n in lengths)
    )  # TOO_LONG is usable: parse keeps it and fails later on length


@cache
def _region(code: str) -> _Region | None:
    metadata = PhoneMetadata.metadata_for_region(code.upper(), None)
    if metadata is None or metadata.country_code is None:
        return None
    general = metadata.general_desc
    general_pattern = _pattern(general)
    prefix = metadata.national_prefix_for_parsing
    idd = metadata.international_prefix
    return _Region(
        code=code,
        country_code=metadata.country_code,
        known_type=_known_type_patterns(metadata),
        general_pattern=re.compile(general_pattern) if general_pattern else None,
        leading_digits=re.compile(metadata.leading_digits) if metadata.leading_digits else None,
        national_prefix=re.compile(prefix) if prefix else None,
        national_head=None
        if not prefix or metadata.national_prefix_transform_rule
        else re.compile(f"(?!(?:{idd}))(?:{prefix})" if idd else f"(?:{prefix})"),
        usable_lengths=_usable_lengths(general),
        sole_region=len(COUNTRY_CODE_TO_REGION_CODE.get(metadata.country_code, ())) == 1,
    )


def _is_valid(country_code: int, nsn: str) -> bool:
    """`is_valid_number` for a number without leading zeros: its region, then its type."""
    regions = COUNTRY_CODE_TO_REGION_CODE.get(country_code)
    if not regions:
        return False
    if len(regions) == 1:
        region = _region(regions[0])
        return region is not None and region.is_known_type(nsn)
    for code in regions:  # `_region_code_for_number_from_list`
        region = _region(code)
        if region is None:
            continue
        if region.leading_digits is not None:
            if region.leading_digits.match(nsn):
                return region.is_known_type(nsn)
        elif region.is_known_type(nsn):
            return True
    return False


# A calling code by the digits it is written with: "66" -> 66 (`_extract_country_code`).
_CALLING_CODES = {str(code): code for code in COUNTRY_CODE_TO_REGION_CODE}


def _international(digits: str) -> str | None:
    """``+<digits>``: calling code, then the national number as the library would keep it."""
    for size in (1, 2, 3):  # _MAX_CC_DIGITS
        country_code = _CALLING_CODES.get(digits[:size])
        if country_code is None:
            continue
        regions = COUNTRY_CODE_TO_REGION_CODE[country_code]
        if regions[0] == _NON_GEO:
            return None
        region = _region(regions[0])
        rest = digits[size:]
        if region is None or not _MIN_NSN <= len(rest) <= _MAX_NSN or rest[0] == "0":
            return None  # the library's length errors, or Italian leading zeros: its own path
        if region.national_prefix is not None and region.national_prefix.match(rest):
            return None  # a trunk prefix after the calling code: the library's stripping rules
        if not region.sole_region:
            return f"+{digits}" if _is_valid(country_code, rest) else INVALID
        pattern = region.known_type.get(len(rest))
        return f"+{digits}" if pattern is not None and pattern.fullmatch(rest) else INVALID
    return None  # no calling code: the library's INVALID_COUNTRY_CODE


def _national(digits: str, default_region: str) -> str | None:
    """``0<digits>`` read in `default_region`, whose trunk prefix the library strips."""
    region = _region(default_region)
    if region is None or region.national_head is None:
        return None
    match = region.national_head.match(digits)
    if match is None:
        return None  # no trunk prefix, or an IDD prefix (TH "001"): the library reads it
    stripped = digits[match.end() :]
    if len(stripped) not in region.usable_lengths:
        return None  # the library keeps the prefix as part of the number
    if not _MIN_NSN <= len(stripped) <= _MAX_NSN or stripped[0] == "0":
        return None  # the library's length errors, or Italian leading zeros: its own path
    if region.sole_region:
        pattern = region.known_type.get(len(stripped))
        if pattern is not None and pattern.fullmatch(stripped):
            return f"+{region.country_code}{stripped}"  # valid, hence viable: stripped, as below
    if region.viable(digits) and not region.viable(stripped):
        return None  # the library keeps the prefix as part of the number
    return f"+{region.country_code}{stripped}" if _is_valid(region.country_code, stripped) else INVALID


def verdict(compact: str, default_region: str) -> str | None:
    """E.164, `INVALID`, or None when the library itself must decide.

    `compact` is the number without punctuation (`phones._PUNCTUATION`).
    """
    if not PLAIN.fullmatch(compact):
        return None
    first = compact[0]
    if first == "+":
        if compact[1] == "0":
            return None  # no calling code starts with 0: the library's error
        return _international(compact[1:])
    if first != "0":
        return None  # may begin with the default calling code: the library decides
    return _national(compact, default_region)
