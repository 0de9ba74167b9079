"""Bounds on the JSON documents a person writes into the catalog (rules, credentials).

The catalog is read at every code-location load and by every run; one huge or absurdly deep
document slows all of them, and deep nesting breaks recursive code (pydantic, json, the rules
compiler) with a RecursionError instead of a message. So a document is measured before anything
else reads it: at most `MAX_JSON_BYTES` as compact JSON and `MAX_JSON_DEPTH` levels of nesting.

The walk is iterative and stops as soon as a bound is passed, so a YAML alias bomb (a few lines
that expand to gigabytes) or a self-referencing document costs no more than the bound itself.
"""

from __future__ import annotations

from typing import Any

MAX_JSON_BYTES = 256 * 1024
MAX_JSON_DEPTH = 32


class InputTooLarge(ValueError):
    """A document over a bound; the message names the field and the bound, never the content."""

    def __init__(self, field: str, problem: str, at: str | None = None) -> None:
        self.field, self.problem, self.at = field, problem, at or field
        super().__init__(f"{self.at}: {problem}")

    def relative(self) -> str:
        """The problem as said under the field's own name (pydantic prefixes the field)."""
        return self.problem if self.at == self.field else f"{self.problem} (at {self.at})"


def check_json_limits(
    value: Any, field: str, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> None:
    """Raise `InputTooLarge` naming `field` when `value` is over either bound."""
    size = 0
    stack: list[tuple[Any, int, str]] = [(value, 1, field)]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, dict | list | tuple):
            if depth > max_depth:
                raise InputTooLarge(field, f"nested deeper than {max_depth} levels", path)
            size += 2 + max(len(node) - 1, 0)  # brackets and commas
            if isinstance(node, dict):
                for key, item in node.items():
                    size += len(str(key).encode()) + 3  # quotes and colon
                    stack.append((item, depth + 1, f"{path}.{key}"))
            else:
                for position, item in enumerate(node):
                    stack.append((item, depth + 1, f"{path}[{position}]"))
        elif isinstance(node, str):
            size += len(node.encode()) + 2
        else:
            size += len(str(node))
        if size > max_bytes:
            raise InputTooLarge(field, f"larger than {max_bytes // 1024} kB as JSON")
