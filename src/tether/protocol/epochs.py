"""Worker epochs (docs/protocol.md §3.4, §9.4, §4.5).

Each worker registration bumps a session's epoch; every ``/worker/*`` write carries
the epoch it registered with. A write with any other epoch comes from a replaced
worker and is refused (409 ``epoch_superseded``) so that the older worker stops.
On the wire an epoch is a JSON number or a string holding an integer (protojson
int64); either way it must be a finite, safe (|n| < 2**53), non-negative integer.
"""

from __future__ import annotations

import math
import re
from typing import Final

__all__ = [
    "MAX_SAFE_INTEGER",
    "EpochError",
    "EpochInvalid",
    "EpochSuperseded",
    "check_epoch",
    "next_epoch",
    "parse_epoch",
]

MAX_SAFE_INTEGER: Final = 2**53 - 1
_INT_STRING = re.compile(r"-?[0-9]{1,20}")


class EpochError(ValueError):
    """Base of the epoch errors."""


class EpochInvalid(EpochError):
    """The presented value is not an epoch at all (maps to 400)."""


class EpochSuperseded(EpochError):
    """The presented epoch is not the current one (maps to 409 ``epoch_superseded``)."""

    def __init__(self, current: int, presented: int) -> None:
        super().__init__(f"worker epoch {presented} is superseded by {current}")
        self.current = current
        self.presented = presented


def parse_epoch(value: object) -> int:
    """An epoch from a JSON value; raises :class:`EpochInvalid` with the reason."""
    number: int
    if isinstance(value, bool):
        raise EpochInvalid("worker_epoch must be an integer, got a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise EpochInvalid(f"worker_epoch must be a finite integer, got {value!r}")
        if abs(value) > MAX_SAFE_INTEGER:
            raise EpochInvalid(f"worker_epoch {value!r} is not a safe integer")
        number = int(value)
    elif isinstance(value, str):
        if not _INT_STRING.fullmatch(value):
            raise EpochInvalid(f"worker_epoch string must hold an integer, got {value[:40]!r}")
        number = int(value)
    else:
        raise EpochInvalid(f"worker_epoch must be a number or an integer string, got {type(value).__name__}")
    if abs(number) > MAX_SAFE_INTEGER:
        raise EpochInvalid(f"worker_epoch {number} is not a safe integer")
    if number < 0:
        raise EpochInvalid(f"worker_epoch must not be negative, got {number}")
    return number


def check_epoch(current: int, presented: object) -> None:
    """Accept only the current epoch.

    A presented epoch below ``current`` is stale; one above it was never issued.
    Both mean "this caller is not the live worker", so both raise
    :class:`EpochSuperseded`.
    """
    epoch = parse_epoch(presented)
    if epoch != current:
        raise EpochSuperseded(current, epoch)


def next_epoch(current: int) -> int:
    """The epoch a new registration gets."""
    if current >= MAX_SAFE_INTEGER:
        raise EpochInvalid("worker epoch space exhausted")
    return current + 1
