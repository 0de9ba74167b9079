"""Email addresses, validated and normalised with email_validator.

Validation must not reject what real users have: plus addressing (``jsmith+test@example.org``),
internationalised domains (``user@bücher.example``, kept in Unicode NFC form as email_validator
normalises it) and UTF-8 local parts. Deliverability (DNS) is never checked: this is pure code
and a sync must not depend on a resolver. Surrounding whitespace is stripped first.

email_validator costs ~50 µs a call, and in real batches most addresses are distinct while their
domains repeat (a club's members share a few mail providers). So an address whose local part is a
plain ASCII dot-atom (`jsmith+test`, `a.b-c_d`) is checked in two parts: the local part by a
pattern that accepts only what email_validator accepts unchanged, the domain by email_validator
itself, once per distinct domain (`_domain`, memoised). Everything else (quoted or UTF-8 local
parts, an invalid domain, long addresses) goes to email_validator whole, so the result, normalised
form and error text alike, is always the library's (the tests compare both paths). `normalize_column`
decides once per distinct value of a batch; what reaches the library is memoised across batches.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from email_validator import EmailNotValidError, validate_email

from esm_dagster.rules.conversion import Invalid, is_nan, show

CACHE_SIZE = 65_536


# A strict subset of RFC 5322's dot-atom that email_validator keeps exactly as written.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9%+_-]+(?:\.[A-Za-z0-9%+_-]+)*")
_FAST_MAX_LENGTH = 200  # well inside the library's 254-character limit, so length never differs
_PROBE_LOCAL = "a"


@lru_cache(maxsize=CACHE_SIZE)
def normalize_email(value: str) -> str | Invalid:
    """email_validator's normalised form of `value`, or an `Invalid`."""
    return _plain_address(value) or library_email(value)


def _plain_address(value: str) -> str | None:
    """The normalised form of an address with a plain local part and a valid domain, else None."""
    text = value.strip()
    local, at, domain = text.rpartition("@")
    if at and len(text) <= _FAST_MAX_LENGTH and len(local) <= 64 and _PLAIN_LOCAL.fullmatch(local):
        normalized_domain = _domain(domain)
        if normalized_domain is not None:
            return f"{local}@{normalized_domain}"
    return None


@lru_cache(maxsize=CACHE_SIZE)
def _domain(domain: str) -> str | None:
    """The library's normalised form of `domain`, or None when it refuses it (the slow path then
    produces the library's own error for the whole address)."""
    try:
        result = validate_email(
            f"{_PROBE_LOCAL}@{domain}",
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=False,
        )
    except EmailNotValidError:
        return None
    return str(result.domain)


def library_email(value: str) -> str | Invalid:
    """email_validator on the whole address: the reference the fast path must agree with."""
    try:
        result = validate_email(
            value.strip(), check_deliverability=False, allow_smtputf8=True, allow_quoted_local=False
        )
    except EmailNotValidError as exc:
        return Invalid("email", f"{show(value)} is not a valid email address: {exc}")
    return str(result.normalized)


def _as_text(value: Any) -> Any:
    if value is None or value.__class__ is str:
        return value
    if is_nan(value):
        return None
    return Invalid("type", f"{show(value)} is not an email address (expected a string)")


def _decide(texts: set[Any]) -> dict[Any, Any]:
    """Distinct text -> normalised address or `Invalid`. Plain addresses skip the cache: deciding
    them costs what a lookup costs, and a sync's addresses are mostly distinct."""
    decided: dict[Any, Any] = {None: None}
    for text in texts:
        if text.__class__ is str:
            decided[text] = _plain_address(text) or normalize_email(text)
        else:
            decided[text] = text  # None or the `Invalid` of a value that is not a string
    return decided


def normalize_column(values: list[Any]) -> list[Any]:
    """Convert a column of raw values; failures are left in place as `Invalid`."""
    texts = [v if v.__class__ is str else _as_text(v) for v in values]
    table = _decide(set(texts))
    return list(map(table.__getitem__, texts))
