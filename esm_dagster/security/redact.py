"""Scrubbing secrets out of text that is about to be logged, stored or raised.

Error text is where keys leak: httpx errors carry the URL (and its query string), providers echo
parts of a key, and exception chains repeat both. Everything that leaves the engine as a message
goes through `redact_text`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from esm_dagster.security.secret import MASK

_PATTERNS = [
    # Query-string parameters that carry credentials.
    re.compile(
        r"(?i)([?&](?:api[_-]?key|apikey|key|token|access_token|refresh_token|client_secret|"
        r"secret|password|signature|sig|auth)=)[^&#\s\"']+"
    ),
    # Authorization headers and bearer tokens.
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic)?\s*)[^\s\"',}]+"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    # Well-known key shapes (Stripe, SendGrid, Slack, Twilio, Fernet tokens).
    re.compile(r"()\b(?:sk|rk|pk|whsec)_(?:test|live)_[A-Za-z0-9]{6,}"),
    re.compile(r"()\bSG\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    re.compile(r"()\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    re.compile(r"()\bgAAAAA[A-Za-z0-9_=-]{20,}"),
    # user:password@ in URLs.
    re.compile(r"(://[^/\s:@]+:)[^@\s/]+(?=@)"),
]


def redact_text(text: str, extra: Iterable[str] = ()) -> str:
    for secret in sorted({s for s in extra if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    return text
