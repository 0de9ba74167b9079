"""Email addresses, validated and normalised with email_validator.

Validation must not reject what real users have: plus addressing (``jsmith+test@example.org``),
internationalised domains (``user@bücher.example``, kept in Unicode NFC form as email_validator
normalises it) and UTF-8 local parts. Deliverability (DNS) is never checked: this is pure code
and a sync must not depend on a resolver. Surrounding whitespace is stripped first.

email_validator costs ~50 µs a call, so `normalize_column` calls it once per distinct value of
a batch, and `normalize_email` is memoised across batches; its cache statistics count the
library calls.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from email_validator import EmailNotValidError, validate_email

from esm_dagster.rules.conversion import Invalid, is_nan, map_distinct, show

CACHE_SIZE = 65_536


@lru_cache(maxsize=CACHE_SIZE)
def normalize_email(value: str) -> str | Invalid:
    """email_validator's normalised form of `value`, or an `Invalid`."""
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


def normalize_column(values: list[Any]) -> list[Any]:
    """Convert a column of raw values; failures are left in place as `Invalid`."""
    texts = [v if v.__class__ is str else _as_text(v) for v in values]
    return map_distinct(texts, normalize_email)
