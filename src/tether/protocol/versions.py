"""Version floors (``min_version`` / ``v2_min_version`` of ``GET /v1/bridge/config``). Pure."""

from __future__ import annotations

import re

__all__ = [
    "version_ok",
    "version_tuple",
]

_DIGITS = re.compile(r"\d+")


def version_tuple(text: str) -> tuple[int, ...]:
    """``"1.2.3rc1"`` → ``(1, 2, 3)``: the leading number of each dot-separated part (0 if none)."""
    parts = []
    for piece in text.split("."):
        digits = _DIGITS.match(piece)
        parts.append(int(digits.group()) if digits else 0)
    return tuple(parts)


def version_ok(minimum: object, current: str) -> bool:
    """True when ``current`` is at least ``minimum`` (no floor — not a non-empty string — passes)."""
    if not isinstance(minimum, str) or not minimum:
        return True
    return version_tuple(current) >= version_tuple(minimum)
