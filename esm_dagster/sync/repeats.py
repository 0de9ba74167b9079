"""Drop the records a page repeats from the page before (page-boundary dedupe, DESIGN.md §5).

A provider that pages by offset, or one whose cursor slips while records are added, serves the
end of one page again at the start of the next. The upsert already keeps such a record to one row,
but counted twice it inflates `records_read` / `records_written`, and a rejected one is
quarantined twice (`seen_count` 2 for a record seen once). A repeat is dropped only when it is
identical to the copy just served: a record that changed in between is a newer version and is kept
(the upsert then stores the later copy). Only the previous page is remembered, so memory stays
flat however long the sync.
"""

from __future__ import annotations

from typing import Any


def lookup(record: dict[str, Any], path: str) -> Any:
    """The value at a dotted `path` of a record (`id`, `billing_details.email`, `lines.0.id`), or None."""
    value: Any = record
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


class RepeatFilter:
    """`RepeatFilter("id").fresh(page.records)` -> the records not already served unchanged."""

    def __init__(self, key_path: str) -> None:
        self.key_path = key_path
        self.dropped = 0
        self._previous: dict[str, dict[str, Any]] = {}

    def fresh(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        out: list[dict[str, Any]] = []
        for record in records:
            key = lookup(record, self.key_path)
            if key is None or key == "":
                out.append(record)  # no identity: nothing to compare, the rules will judge it
                continue
            key = str(key)
            earlier = seen.get(key, self._previous.get(key))
            if earlier is not None and earlier == record:
                self.dropped += 1
                continue
            seen[key] = record
            out.append(record)
        self._previous = {str(lookup(r, self.key_path)): r for r in records}
        return out
