"""`--since` / run config `since`: the moment a re-read starts, read in the mapping's timezone.

A data engineer who types `2026-11-01` for a Bangkok mapping means Bangkok midnight, as the rules
read naive timestamps in `transformations.timezone`; an explicit offset (`...T00:00+00:00`) wins.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo


def parse_since(value: str, timezone: str = "UTC", *, name: str = "--since") -> dt.datetime:
    """An aware datetime; a naive date or datetime is local time in `timezone`."""
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{name}: {value!r} is not an ISO date or datetime (e.g. 2026-11-01 or 2026-11-01T06:00+07:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(timezone))
    return moment
