from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.epochs import (
    MAX_SAFE_INTEGER,
    EpochError,
    EpochInvalid,
    EpochSuperseded,
    check_epoch,
    next_epoch,
    parse_epoch,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (7, 7), ("7", 7), ("0012", 12), (3.0, 3), (MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)],
)
def test_parse_valid(value: object, expected: int) -> None:
    assert parse_epoch(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        None,
        1.5,
        math.nan,
        math.inf,
        "",
        " 7",
        "7 ",
        "7\n",
        "1e3",
        "0x10",
        "abc",
        "-1",
        -1,
        2**53,
        str(2**53),
        "9" * 5000,
        [1],
        {"epoch": 1},
        float(2**60),
    ],
)
def test_parse_invalid(value: object) -> None:
    with pytest.raises(EpochInvalid):
        parse_epoch(value)


def test_check_epoch() -> None:
    check_epoch(3, 3)
    check_epoch(3, "3")
    with pytest.raises(EpochSuperseded) as info:
        check_epoch(3, 2)
    assert (info.value.current, info.value.presented) == (3, 2)
    with pytest.raises(EpochSuperseded):
        check_epoch(3, "4")  # never issued
    with pytest.raises(EpochInvalid):
        check_epoch(3, "three")
    assert issubclass(EpochSuperseded, EpochError) and issubclass(EpochInvalid, EpochError)
    assert issubclass(EpochError, ValueError)


def test_next_epoch() -> None:
    assert next_epoch(0) == 1
    with pytest.raises(EpochInvalid):
        next_epoch(MAX_SAFE_INTEGER)


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=MAX_SAFE_INTEGER))
def test_int_and_string_forms_agree(n: int) -> None:
    assert parse_epoch(n) == parse_epoch(str(n)) == n
    check_epoch(n, str(n))


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=10**6))
def test_only_current_epoch_passes(current: int, presented: int) -> None:
    if current == presented:
        check_epoch(current, presented)
    else:
        with pytest.raises(EpochSuperseded):
            check_epoch(current, presented)
