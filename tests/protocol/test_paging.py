from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.paging import fitting


def test_examples() -> None:
    assert fitting([], 10) == 0
    assert fitting([3, 3, 3, 3], 10) == 3
    assert fitting([30, 1], 10) == 1  # one event bigger than the budget still makes a page
    assert fitting([5, 5], 10) == 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 100), max_size=30), st.integers(1, 300))
def test_the_largest_prefix_within_budget_and_never_empty(sizes: list[int], budget: int) -> None:
    n = fitting(sizes, budget)
    assert (n >= 1) == bool(sizes)
    assert n == 1 or sum(sizes[:n]) <= budget
    if n < len(sizes):
        assert sum(sizes[:n + 1]) > budget
