"""The run tags the proxy writes on every run a person launches through the UI.

The proxy overwrites whatever the client sent under these keys, so behind it the tags name the
authenticated operator; anyone who can reach the loopback webserver directly can still set them,
which is why the webserver must never listen on another interface.
"""

from __future__ import annotations

from collections.abc import Mapping

LAUNCHED_BY = "esm/launched_by"
LAUNCHED_BY_ROLE = "esm/launched_by_role"
STAMPED = frozenset({LAUNCHED_BY, LAUNCHED_BY_ROLE})


def launched_by(tags: Mapping[str, str]) -> tuple[str, str | None] | None:
    """(operator email, role) of the person who launched a run, when the proxy stamped it."""
    name = (tags.get(LAUNCHED_BY) or "").strip()
    if not name:
        return None
    role = (tags.get(LAUNCHED_BY_ROLE) or "").strip() or None
    return name, role
