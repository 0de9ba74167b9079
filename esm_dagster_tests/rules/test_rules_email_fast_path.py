"""The email fast path (pattern for the local part, the library once per domain) gives exactly the
library's answer: the same normalised address, or the same error text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from esm_dagster.rules.emails import _domain, library_email, normalize_email

DOMAINS = [
    "example.com", "EXAMPLE.COM", "gmail.com", "padel.co.th", "xn--bcher-kva.example", "bücher.example",
    "localhost", "x.invalid", "-x.com", "x-.com", "x..com", "x.com.", ".x.com", "a.b", "123.123.123.123",
    "[1.2.3.4]", "x_y.com", "a" * 63 + ".com", "a" * 64 + ".com", "ex ample.com", "", "x.test", "x.local",
]  # fmt: skip
LOCAL_CHARS = "abcXYZ019.+-_%!#$&'*/=?^`{|}~\"\\ @ü"


@settings(max_examples=400, deadline=None)
@given(
    local=st.text(alphabet=LOCAL_CHARS, min_size=0, max_size=70),
    domain=st.sampled_from(DOMAINS),
    pad=st.sampled_from(["", " ", "\t"]),
)
def test_the_fast_path_agrees_with_the_library(local: str, domain: str, pad: str) -> None:
    value = f"{pad}{local}@{domain}{pad}"
    normalize_email.cache_clear()
    assert normalize_email(value) == library_email(value)


def test_known_addresses_take_the_fast_path_and_keep_their_case() -> None:
    normalize_email.cache_clear()
    _domain.cache_clear()
    assert normalize_email("Somchai.J+court3@PADEL.co.th") == "Somchai.J+court3@padel.co.th"
    assert normalize_email("x@xn--bcher-kva.example") == "x@bücher.example"
    for n in range(50):
        assert normalize_email(f"member{n}@gmail.com") == f"member{n}@gmail.com"
    # one library call per distinct domain, not per address
    assert _domain.cache_info().misses == 3
