"""`phone_metadata.verdict` gives phonenumbers' own answer whenever it answers at all.

The reference is `phones.library_verdict` (parse + is_valid_number + E.164 by the library). Every
example number of every region, in E.164, international and national form, read with several
default regions, plus near misses (a digit more, a digit less, another first digit) and random
digit strings: where `verdict` is not None it must equal the library's verdict. And it must answer
for the shapes a sync mostly sees, or the speed-up would be a silent no-op.
"""

from __future__ import annotations

import re

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esm_dagster.rules.phone_metadata import INVALID, verdict
from esm_dagster.rules.phones import _PUNCTUATION, library_verdict

DEFAULT_REGIONS = ("TH", "US", "GB", "DE", "FR", "IT", "JP", "AU", "SG", "RU", "BR", "IN", "AR", "MX")
FORMATS = (
    phonenumbers.PhoneNumberFormat.E164,
    phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    phonenumbers.PhoneNumberFormat.NATIONAL,
)


def _compact(text: str) -> str:
    return _PUNCTUATION.sub("", text)


def _examples() -> list[tuple[str, str]]:
    """(compact number, region it is written for) for every region's example numbers."""
    found: list[tuple[str, str]] = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in phonenumbers.PhoneNumberType.values():
            number = phonenumbers.example_number_for_type(region, kind)
            if number is None:
                continue
            for fmt in FORMATS:
                found.append((_compact(phonenumbers.format_number(number, fmt)), region))
    return sorted(set(found))


EXAMPLES = _examples()


def _near_misses(compact: str) -> list[str]:
    head, digits = ("+", compact[1:]) if compact.startswith("+") else ("", compact)
    misses = [compact + "7", compact[:-1]]
    for replacement in "0159":
        misses.append(head + digits[:-4] + replacement + digits[-3:] if len(digits) > 4 else compact)
    return misses


def _check(compact: str, region: str) -> bool:
    """True when `verdict` answered (and then agreed with the library)."""
    fast = verdict(compact, region)
    if fast is None:
        return False
    assert fast == library_verdict(compact, region), (compact, region)
    return True


def test_every_example_number_agrees_with_the_library() -> None:
    answered = 0
    for compact, written_for in EXAMPLES:
        for region in {written_for, *DEFAULT_REGIONS[:4]}:
            answered += _check(compact, region)
    assert answered > len(EXAMPLES)  # the fast path really runs on most of them


def test_near_misses_agree_with_the_library() -> None:
    answered = invalid = 0
    for compact, written_for in EXAMPLES:
        for miss in _near_misses(compact):
            if _check(miss, written_for):
                answered += 1
                invalid += verdict(miss, written_for) == INVALID
    assert answered > len(EXAMPLES) and invalid > len(EXAMPLES) // 2


@pytest.mark.parametrize(
    ("written", "region", "expected"),
    [
        ("+66812345678", "TH", "+66812345678"),
        ("0812345678", "TH", "+66812345678"),
        ("+12125550199", "TH", "+12125550199"),
        ("+442079460320", "TH", "+442079460320"),
        ("026883586", "TH", "+6626883586"),
        ("+6612345", "TH", INVALID),
        ("0512345678", "TH", INVALID),
    ],
)
def test_the_shapes_a_sync_sees_are_answered_without_the_library(
    written: str, region: str, expected: str
) -> None:
    assert verdict(written, region) == expected == library_verdict(written, region)


@pytest.mark.parametrize(
    ("written", "region"),
    [
        ("0016612345678", "TH"),  # IDD prefix: international, read by the library
        ("66812345678", "TH"),  # may start with the calling code
        ("+0812345678", "TH"),  # no calling code starts with 0
        ("+80012345678", "TH"),  # non-geographic calling code
        ("+390612345678", "TH"),  # Italian leading zero
        ("+4402079460320", "TH"),  # trunk prefix after the calling code
        ("+66 81x123", "TH"),  # letters, extensions
        ("08123456789012345678901", "TH"),  # too long for a national number
    ],
)
def test_other_shapes_are_left_to_the_library(written: str, region: str) -> None:
    assert verdict(written, region) is None


@settings(max_examples=3000, deadline=None)
@given(
    head=st.sampled_from(["+", "0", "00", "+1", "+44", "+66", "+7", "+39", "+61", "+86", "", "01", "+2"]),
    digits=st.text(alphabet="0123456789", min_size=1, max_size=18),
    region=st.sampled_from(DEFAULT_REGIONS),
)
def test_random_digit_strings_agree_with_the_library(head: str, digits: str, region: str) -> None:
    _check(head + digits, region)


def test_patterns_are_compiled_once_per_region() -> None:
    from esm_dagster.rules.phone_metadata import _region

    assert _region("TH") is _region("TH")
    assert isinstance(_region("TH").general_pattern, re.Pattern)  # type: ignore[union-attr]
