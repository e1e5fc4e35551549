from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.body_budget import BodyBudget


def test_takes_until_full_then_refuses_without_reserving() -> None:
    budget = BodyBudget(10)
    assert budget.take(6) and budget.take(4)
    assert not budget.take(1)
    assert budget.used == 10 and budget.refused == 1
    budget.give(6)
    assert budget.take(5) and budget.used == 9 and budget.peak == 10


def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError):
        BodyBudget(0)
    budget = BodyBudget(5)
    budget.take(2)
    with pytest.raises(ValueError):
        budget.give(3)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=60))
def test_never_overdrawn(steps: list[tuple[bool, int]]) -> None:
    budget = BodyBudget(100)
    held: list[int] = []
    for take, size in steps:
        if take:
            if budget.take(size):
                held.append(size)
        elif held:
            budget.give(held.pop())
        assert 0 <= budget.used <= budget.capacity and budget.used == sum(held)
