"""`sync.changes`: the three-way, field-level merge and its policies."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from esm_dagster.sync.changes import canonical, merge

T = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def test_equal_values_in_other_shapes_are_one_canonical_value() -> None:
    assert canonical(Decimal("19.990")) == canonical(Decimal("19.99")) == "19.99"
    assert canonical(Decimal("80")) == canonical(80) == "80"
    assert canonical(dt.datetime(2026, 12, 1)) == canonical(T)  # SQLite's naive UTC
    assert canonical(True) is True and canonical(None) is None


def test_non_overlapping_changes_from_both_sides_are_both_kept() -> None:
    base = {"email": "a@x.org", "phone": "+661"}
    out = merge(base, {"email": "a@x.org", "phone": "+662"}, {"email": "b@x.org", "phone": "+661"}, "manual")
    assert out.agreed == {"email": "b@x.org", "phone": "+662"}
    assert out.to_internal == {"email": "b@x.org"} and out.to_external == {"phone": "+662"}
    assert not out.decisions and not out.pending


@pytest.mark.parametrize(
    ("policy", "internal_at", "external_at", "winner"),
    [
        ("external_wins", T, T, "ext"),
        ("internal_wins", T, T, "int"),
        ("latest_wins", T + dt.timedelta(seconds=1), T, "int"),
        ("latest_wins", T, T + dt.timedelta(seconds=1), "ext"),
        ("latest_wins", T, T, "ext"),  # a tie goes to the external side, every time
        ("latest_wins", None, None, "ext"),
    ],
)
def test_a_conflict_goes_to_the_policys_winner(
    policy: str, internal_at: dt.datetime | None, external_at: dt.datetime | None, winner: str
) -> None:
    out = merge(
        {"name": "base"},
        {"name": "int"},
        {"name": "ext"},
        policy,
        internal_at=internal_at,
        external_at=external_at,
    )  # type: ignore[arg-type]
    assert out.agreed == {"name": winner}
    (decision,) = out.decisions
    assert decision.winner == ("internal" if winner == "int" else "external")


def test_manual_leaves_the_field_alone_until_decided() -> None:
    out = merge({"name": "base"}, {"name": "int"}, {"name": "ext"}, "manual")
    assert out.pending and out.agreed == {"name": "base"} and not out.to_internal and not out.to_external
    decided = merge(
        {"name": "base"}, {"name": "int"}, {"name": "ext"}, "manual", decided={"name": "internal"}
    )
    assert decided.agreed == {"name": "int"} and decided.to_external == {"name": "int"}


def test_a_write_coming_back_is_no_change() -> None:
    agreed = {"name": "int"}
    out = merge(agreed, agreed, agreed, "external_wins")
    assert not out.to_internal and not out.to_external and not out.decisions
