"""Fast JSON for many objects of one shape.

Emulated list pages hold up to 100 objects that share one template (Stripe's charge has about 45
keys and nested card details, 3.4 kB of JSON) and differ in a fixed set of keys. `JsonShape`
serialises the constant part once into a %-format string, so serialising an object costs one
small encode per varying value instead of walking the whole tree: about three times faster than
`json.dumps` of the built dict, and byte-identical to `json.dumps(obj, ensure_ascii=False)`.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Iterable, Mapping
from typing import Any

_ENCODER = json.JSONEncoder(ensure_ascii=False, check_circular=False)
_encode_string = json.encoder.encode_basestring  # the C implementation when available


class RawJSON(str):
    """Text that is already JSON; `encode` inserts it as is."""

    __slots__ = ()


def encode(value: Any) -> str:
    """`json.dumps(value, ensure_ascii=False)`, with fast paths for scalars and `RawJSON`."""
    kind = type(value)
    if kind is str:
        return _encode_string(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is RawJSON:
        return str.__str__(value)
    return _ENCODER.encode(value)


class JsonShape:
    """A template dict whose objects differ only in `varied` keys (some of them nested shapes).

    `obj(fields)` builds the dict (template key order), `text(fields)` its JSON text; `fields`
    must hold exactly the varied keys, a nested shape's key holding that shape's fields. A field
    value may be `RawJSON` (precomputed text; `obj` parses it).
    """

    def __init__(
        self,
        template: Mapping[str, Any],
        varied: Iterable[str],
        nested: Mapping[str, JsonShape] | None = None,
    ) -> None:
        varied_set = set(varied)
        self.nested = dict(nested or {})
        unknown = (varied_set | set(self.nested)) - set(template)
        if unknown:
            raise ValueError(f"varied keys not in the template: {sorted(unknown)}")
        varied_set |= set(self.nested)
        self.template = dict(template)
        self.varied = tuple(k for k in template if k in varied_set)
        parts = []
        for key, value in template.items():
            head = _encode_string(key) + ": "
            parts.append(head + ("%s" if key in varied_set else encode(value).replace("%", "%%")))
        self._format = "{" + ", ".join(parts) + "}"

    def obj(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(self.template)
        for key in self.varied:
            value = fields[key]
            shape = self.nested.get(key)
            if shape is not None:
                out[key] = shape.obj(value)
            elif type(value) is RawJSON:
                out[key] = json.loads(value)
            else:
                out[key] = value
        return out

    def text(self, fields: Mapping[str, Any]) -> str:
        nested = self.nested
        if not nested:
            return self._format % tuple([encode(fields[key]) for key in self.varied])
        values = []
        for key in self.varied:
            shape = nested.get(key)
            values.append(shape.text(fields[key]) if shape is not None else encode(fields[key]))
        return self._format % tuple(values)
