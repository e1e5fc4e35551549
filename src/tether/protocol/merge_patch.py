"""JSON merge patch (RFC 7396) limited to the depth the worker metadata uses.

``PUT /worker`` merges ``external_metadata`` / ``internal_metadata`` one level deep:
top-level keys of the patch replace (or, when ``null``, delete) the stored keys.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "merge_one_level",
]


def merge_one_level(current: dict[str, Any] | None, patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(current or {})
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
