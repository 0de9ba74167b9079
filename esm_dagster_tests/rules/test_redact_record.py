"""`redact_record` (inline recursion) masks exactly what the plain recursive definition masks."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from esm_dagster.rules.redaction import MASK, is_secret_key, redact_record


def reference(record: Any) -> Any:
    """The definition: every dict (subclasses too) and list/tuple walked, secret keys masked."""
    if isinstance(record, dict):
        return {
            k: (MASK if isinstance(k, str) and is_secret_key(k) else reference(v)) for k, v in record.items()
        }
    if isinstance(record, list | tuple):
        return [reference(v) for v in record]
    return record


KEYS = st.sampled_from(
    ["id", "amount", "card_number", "api_token", "Number", "x-api-key", "metadata", "pin", 7]
)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
RECORDS = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(KEYS, inner, max_size=4)
        | st.dictionaries(KEYS, inner, max_size=3).map(OrderedDict)
    ),
    max_leaves=30,
)


@given(RECORDS)
def test_same_result_as_the_definition(record: Any) -> None:
    assert redact_record(record) == reference(record)


def test_input_untouched_and_containers_copied() -> None:
    record = {"card": {"number": "4242", "brand": "visa"}, "lines": [{"api_key": "k"}, ("a", {"pin": 1})]}
    redacted = redact_record(record)
    assert redacted == {
        "card": {"number": MASK, "brand": "visa"},
        "lines": [{"api_key": MASK}, ["a", {"pin": MASK}]],
    }
    assert record["card"]["number"] == "4242" and redacted["card"] is not record["card"]
