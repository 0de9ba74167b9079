"""Phone numbers keyed on their compact form give exactly phonenumbers' answer on the value as
written: the same E.164 number, or an error that names the value as written."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from esm_dagster.rules.phones import _parse, library_phone, normalize_column, normalize_phone

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
@example(parts=["1", "0", "0", "0", "ext.", ".", "0"], region="TH")  # letters: punctuation matters
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
    spellings = ["66 81 234 5678", "66-81-234-5678", "(66) 81.234.5678"]  # no "+": the library's
    assert {normalize_phone(s, "TH") for s in spellings} == {library_phone("66812345678", "TH")}
    assert _parse.cache_info().misses == 1


def test_plain_numbers_never_reach_the_library() -> None:
    normalize_phone.cache_clear()
    _parse.cache_clear()
    assert normalize_phone("081-234-5678", "TH") == normalize_phone("+66 81 234 5678", "TH") == "+66812345678"
    assert _parse.cache_info().misses == 0


@settings(max_examples=200, deadline=None)
@given(
    numbers=st.lists(
        st.lists(st.sampled_from([*PIECES, "\n", "\u00a0", "\r"]), min_size=1, max_size=14).map("".join),
        max_size=12,
    ),
    region=st.sampled_from(["TH", "US", "GB"]),
)
def test_a_column_is_decided_like_each_of_its_values(numbers: list[str], region: str) -> None:
    """The column path compacts all numbers in one pass (lines joined): same answers, line breaks
    inside a value included."""
    column = normalize_column([*numbers, None], region)
    assert column[:-1] == [normalize_phone(n, region) for n in numbers] and column[-1] is None
