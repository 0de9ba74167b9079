"""Stripe's v1 parameter encoding: `application/x-www-form-urlencoded` with bracket nesting.

`metadata[plan]=gold` -> `{"metadata": {"plan": "gold"}}`, `expand[]=a&expand[]=b` -> `{"expand": ["a",
"b"]}`, `items[0][price]=p` -> `{"items": [{"price": "p"}]}`. The same rules decode query strings
(`created[gte]=...`) and POST bodies.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


class FormError(ValueError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def decode(text: str) -> dict[str, Any]:
    """Decode a query string or form body; a scalar given twice keeps the last value."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        match = _KEY.match(key)
        if match is None:
            raise FormError(f"Invalid parameter name: {key}", key)
        parts = [match.group(1), *_PART.findall(match.group(2))]
        _assign(root, parts, value, key)
    result: dict[str, Any] = _listify(root)
    return result


def _assign(root: dict[str, Any], parts: list[str], value: str, key: str) -> None:
    node = root
    for i, part in enumerate(parts[:-1]):
        if part == "":
            raise FormError(f"Invalid array parameter: {key}", key)
        if parts[i + 1] == "" and i + 2 == len(parts):  # `a[]` / `a[b][]`: append
            current = node.setdefault(part, [])
            if not isinstance(current, list):
                raise FormError(f"Invalid array: {key} is given both as an array and otherwise", key)
            current.append(value)
            return
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise FormError(f"Invalid hash: {key} is given both as a hash and otherwise", key)
        node = child
    last = parts[-1]
    if isinstance(node.get(last), dict | list):
        raise FormError(f"Invalid hash: {key} is given both as a hash and otherwise", key)
    node[last] = value


def _listify(value: Any) -> Any:
    """A hash whose keys are all integers (`items[0]`, `items[1]`) is an array, in index order."""
    if isinstance(value, list):
        return [_listify(v) for v in value]
    if not isinstance(value, dict):
        return value
    converted = {k: _listify(v) for k, v in value.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def encode(params: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """The inverse of `decode` (used by tests and clients): nested dicts and lists to bracket pairs."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, dict):
            pairs.extend(encode(value, name))
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    pairs.extend(encode(item, f"{name}[{index}]"))
                else:
                    pairs.append((f"{name}[]", _scalar(item)))
        elif value is not None:
            pairs.append((name, _scalar(value)))
    return pairs


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
