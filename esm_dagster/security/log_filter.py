"""Masking the credentials in use out of the log records of libraries we do not own.

httpcore logs every response's headers at DEBUG, and httpx logs every request URL at INFO: a
server that reflects the Authorization header into a `Location` (or any header), or a key sent in
the query string, then lands in whatever handler the deployment configured. Those messages are
built inside the libraries, so they cannot be scrubbed where they are made; a filter on their
loggers masks the values of every credential a live client holds (providers `register` theirs
when built and `release` them when closed), plus anything shaped like a key.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from esm_dagster.security.redact import redact_text
from esm_dagster.security.secret import Secret

# A filter acts only on records logged by the logger it is attached to, not by its children.
LIBRARY_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)

_lock = threading.Lock()
_active: collections.Counter[str] = collections.Counter()


def _forms(secret: Secret) -> set[str]:
    value = secret.reveal()
    return {f for f in (value, quote(value, safe=""), quote_plus(value)) if len(f) >= 4}


def register(secrets: Iterable[Secret]) -> None:
    """Mask these values in library log records until they are released."""
    with _lock:
        for secret in secrets:
            _active.update(_forms(secret))


def release(secrets: Iterable[Secret]) -> None:
    with _lock:
        for secret in secrets:
            for form in _forms(secret):
                _active[form] -= 1
                if _active[form] <= 0:
                    del _active[form]


class KnownSecretsFilter(logging.Filter):
    """Rewrites a record whose text holds a registered secret or a key-shaped token."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the logging module's to report, not ours
            return True
        with _lock:
            known = list(_active)
        clean = redact_text(message, extra=known)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


_FILTER = KnownSecretsFilter()


def install() -> None:
    """Attach the filter to the library loggers (idempotent)."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
