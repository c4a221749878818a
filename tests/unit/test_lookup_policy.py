"""The lookup policy: validated once, defaults kept, options laid over a policy."""

from __future__ import annotations

import math

import pytest

from taogate import InvalidRequest, LookupPolicy, Priority


def test_the_defaults_are_one_shared_value() -> None:
    assert LookupPolicy.of(None, {}) is LookupPolicy.of(None, {})
    # options equal to the defaults make no new policy (the hit path passes them)
    assert LookupPolicy.of(None, {"max_age_s": None, "allow_stale": True}) is LookupPolicy.of(
        None, {}
    )


def test_options_are_laid_over_a_policy() -> None:
    base = LookupPolicy(priority=Priority.BULK, deadline_s=30.0)
    asked = LookupPolicy.of(base, {"max_age_s": 5.0})
    assert asked == LookupPolicy(priority=Priority.BULK, deadline_s=30.0, max_age_s=5.0)


@pytest.mark.parametrize("field", ["max_age_s", "max_stale_s", "deadline_s"])
@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_bad_times_are_refused_once(field: str, value: float) -> None:
    with pytest.raises(InvalidRequest, match=field):
        LookupPolicy.of(None, {field: value})  # type: ignore[misc]


def test_a_priority_must_be_one() -> None:
    with pytest.raises(InvalidRequest, match="priority"):
        LookupPolicy(priority=3)  # type: ignore[arg-type]
