"""Phone numbers keyed on their compact form give exactly phonenumbers' answer on the value as
written: the same E.164 number, or an error that names the value as written."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from esm_dagster.rules.phones import _parse, library_phone, normalize_phone

PIECES = [
    "0",
    "8",
    "1",
    "2",
    "6",
    "9",
    "+66",
    "+1",
    "00",
    " ",
    "-",
    ".",
    "(",
    ")",
    "/",
    "x",
    "ext.",
    "A",
    "#",
    "\t",
]


@settings(max_examples=500, deadline=None)
@given(
    parts=st.lists(st.sampled_from(PIECES), min_size=1, max_size=16),
    region=st.sampled_from(["TH", "US", "GB"]),
)
def test_compact_keys_agree_with_the_library(parts: list[str], region: str) -> None:
    value = "".join(parts)
    normalize_phone.cache_clear()
    got, expected = normalize_phone(value, region), library_phone(value, region)
    if isinstance(expected, str):
        assert got == expected
    else:
        assert not isinstance(got, str) and got.rule == expected.rule and repr(value) in got.message


def test_spellings_of_one_number_cost_one_library_call() -> None:
    normalize_phone.cache_clear()
    _parse.cache_clear()
    spellings = ["081-234-5678", "081 234 5678", "(081) 234.5678", "0812345678"]
    assert {normalize_phone(s, "TH") for s in spellings} == {"+66812345678"}
    assert _parse.cache_info().misses == 1
