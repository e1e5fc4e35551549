"""How deeply a JSON value nests: checked cheaply at the edge, repaired when serving old rows.

Every JSON body and frame the server accepts is at most ``MAX_DEPTH`` containers deep
(docs/protocol.md §4.8). Without the limit a value could be parsed (orjson reads up to 1,024
levels) and stored, and then never be served again: orjson writes at most 254 levels, and a
response wraps a stored value in a few more (``{"data": [ … ]}``). 64 leaves room for any
real agent output and for every envelope the protocol puts around it.

:func:`exceeds` is on the hot paths (a worker's event POST, subscribe frames), so it first
counts opening brackets in the raw text — C-speed, and a sound upper bound on the depth,
since every level of the decoded value was opened by one of them — and walks the decoded
value only when the count alone cannot settle it (brackets inside strings inflate it).

:func:`clamp` is the repair path for values stored before the limit existed: containers
deeper than a bound are replaced by a short marker, so such a row is served, not a 500.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "MAX_DEPTH",
    "TOO_DEEP",
    "clamp",
    "exceeds",
    "nesting",
]

MAX_DEPTH: Final = 64
TOO_DEEP: Final = "[nested too deep]"


_CONTAINERS: Final = frozenset((dict, list))  # what orjson decodes objects and arrays to


def nesting(value: object, limit: int) -> int:
    """The container depth of a decoded JSON value (0 for a scalar), counted up to ``limit + 1``.

    Level by level: each step is one list comprehension over the children of the level's
    containers (scalars are only looked at, never descended into).
    """
    level: list[Any] = [value] if type(value) in _CONTAINERS else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return depth
        below: list[Any] = []
        for node in level:
            below += [child for child in (node.values() if type(node) is dict else node)
                      if type(child) in _CONTAINERS]
        level = below
    return depth


def exceeds(raw: bytes | bytearray | str, value: object, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` (decoded from ``raw``) nests deeper than ``limit``."""
    if isinstance(raw, str):
        opened = raw.count("{") + raw.count("[")
    else:
        opened = raw.count(b"{") + raw.count(b"[")
    if opened <= limit:
        return False
    return nesting(value, limit) > limit


def clamp(value: object, limit: int, marker: object = TOO_DEEP) -> object:
    """A copy of ``value`` whose containers below ``limit`` levels are replaced by ``marker``
    (shallow parts are shared, not copied; only the path down to a cut is rebuilt)."""
    return _clamp(value, limit, marker)


def _clamp(value: object, room: int, marker: object) -> object:
    if type(value) not in _CONTAINERS:
        return value
    if room <= 0:
        return marker
    if nesting(value, room) <= room:
        return value
    if isinstance(value, dict):
        return {key: _clamp(child, room - 1, marker) for key, child in value.items()}
    assert isinstance(value, list)
    return [_clamp(child, room - 1, marker) for child in value]
