"""The marker a non-idempotent send carries, so a lost answer can be reconciled instead of resent.

Twilio messages and Slack posts take no idempotency key (PROVIDERS.md §2, §8): a POST whose answer
is lost may or may not have been delivered. The only thing the provider shows back is what was
sent, so the text carries a short tag derived from the write's deterministic idempotency key, and
`find_written` looks for it in what the provider lists. The tag is a digest: the key itself (which
names a mapping and a record) never reaches the recipient.
"""

from __future__ import annotations

import hashlib

MARKER_PREFIX = "esm:"
_DIGEST_CHARS = 12  # 48 bits: a collision among one recipient's messages of one day is negligible


def marker_for(idempotency_key: str) -> str:
    """`[esm:<12 hex>]` for a key; the same key always gives the same marker."""
    if not isinstance(idempotency_key, str) or not idempotency_key:
        raise ValueError("idempotency_key must be a non-empty string")
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:_DIGEST_CHARS]
    return f"[{MARKER_PREFIX}{digest}]"


def with_marker(text: str, idempotency_key: str) -> str:
    """`text` ending in its marker (once, even if the caller already added it)."""
    marker = marker_for(idempotency_key)
    if text.endswith(marker):
        return text
    return f"{text} {marker}" if text else marker


def carries_marker(text: object, idempotency_key: str) -> bool:
    return isinstance(text, str) and marker_for(idempotency_key) in text
