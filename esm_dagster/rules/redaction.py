"""Masking of secret-looking fields in records and in error reports.

Rejected records go to the quarantine table and their errors to run metadata, both of which
people read. A record can carry a card number, a webhook signing secret or an OAuth token, so
anything whose key looks secret is replaced by ``***`` before it leaves the rules layer.
Detection is by key name only and errs on the side of masking.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

MASK = "***"

# Matched against the key lower-cased with "-", " " and "." turned into "_".
_SECRET_SUBSTRINGS = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "private_key",
    "credential",
    "card_number",
    "cardnumber",
    "cvc",
    "cvv",
)
# Whole-key matches: too short or too common to match as substrings (Stripe's card `number`).
_SECRET_EXACT = frozenset({"number", "pan", "pin", "pwd", "auth", "cookie", "set_cookie", "signature", "ssn"})
_SEPARATORS = re.compile(r"[-\s.]+")


@lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """True if a dict key (or the last segment of a source path) names a secret."""
    norm = _SEPARATORS.sub("_", str(key).strip().lower())
    if norm in _SECRET_EXACT:
        return True
    return any(s in norm for s in _SECRET_SUBSTRINGS)


@lru_cache(maxsize=4096)  # asked once per rejected field; a plan has a handful of paths
def is_secret_path(path: str) -> bool:
    """True if the last segment of a dot-separated source path names a secret."""
    return is_secret_key(path.rsplit(".", 1)[-1])


def redact_record(record: Any) -> Any:
    """A copy of `record` with the value of every secret-looking key replaced by ``***``.

    Recurses through dicts and lists; the input is not modified.
    """
    if isinstance(record, dict):
        return {
            k: (MASK if isinstance(k, str) and is_secret_key(k) else redact_record(v))
            for k, v in record.items()
        }
    if isinstance(record, list | tuple):
        return [redact_record(v) for v in record]
    return record
