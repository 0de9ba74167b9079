"""A value that must never be printed.

Credentials travel through code that logs, raises and serialises freely (Dagster events,
exceptions with chained causes, reprs in tracebacks). Wrapping them in `Secret` makes every one
of those paths print `***`; only `reveal()` hands out the clear text, at the one place that
puts it on the wire.
"""

from __future__ import annotations

from typing import Any

MASK = "***"


class Secret:
    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        object.__setattr__(self, "_value", str(value))

    def reveal(self) -> str:
        return self._value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        import hmac

        if isinstance(other, Secret):
            return hmac.compare_digest(self._value.encode(), other._value.encode())
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:
        # Pickling would copy the clear text into run storage or step IPC.
        raise TypeError("Secret values cannot be pickled")
