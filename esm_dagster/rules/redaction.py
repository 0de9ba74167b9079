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

    Recurses through dicts and lists; the input is not modified. Scalars are not passed to a
    recursive call (the isinstance test is inline): a Stripe charge has a hundred-odd leaves, and
    the calls were most of the cost of quarantining it.
    """
    if isinstance(record, dict):
        return _redact_dict(record)
    if isinstance(record, list | tuple):
        return _redact_list(record)
    return record


def _redact_dict(record: dict[Any, Any]) -> dict[Any, Any]:
    return {
        k: (
            MASK
            if isinstance(k, str) and is_secret_key(k)
            else (
                _redact_dict(v)
                if isinstance(v, dict)
                else _redact_list(v)
                if isinstance(v, list | tuple)
                else v
            )
        )
        for k, v in record.items()
    }


def _redact_list(values: list[Any] | tuple[Any, ...]) -> list[Any]:
    return [
        _redact_dict(v) if isinstance(v, dict) else _redact_list(v) if isinstance(v, list | tuple) else v
        for v in values
    ]
