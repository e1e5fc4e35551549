"""Identifiers and their costumes (docs/protocol.md §2).

A session has one body (a 26-character lowercase ULID) and two costumes:
``session_<body>`` for the Sessions API and ``cse_<body>`` for code sessions and
worker routes. Servers compare by body.
"""

from __future__ import annotations

import os
import re
import time
from typing import NewType

__all__ = [
    "CODE_SESSION_PREFIX",
    "ID_PATTERN",
    "SESSION_PREFIX",
    "EnvironmentId",
    "SessionId",
    "WorkId",
    "id_body",
    "is_valid_id",
    "new_body",
    "new_id",
    "prefixed_body",
    "same_session_id",
    "session_body",
    "to_compat_session_id",
    "to_infra_session_id",
]

SessionId = NewType("SessionId", str)
"""A session's body (the ULID both costumes share): what servers store and compare."""
EnvironmentId = NewType("EnvironmentId", str)
"""``env_<body>``, whole."""
WorkId = NewType("WorkId", str)
"""``work_<body>``, whole."""

ID_PATTERN = re.compile(r"^[a-zA-Z0-9_-]+$")
_BODY_PATTERN = re.compile(r"^[0-9a-z]{26}$")
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"

SESSION_PREFIX = "session_"
CODE_SESSION_PREFIX = "cse_"


def new_body(now_ms: int | None = None, randomness: bytes | None = None) -> str:
    """Return a new lowercase ULID: 48 bits of milliseconds, 80 random bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = os.urandom(10) if randomness is None else randomness
    if len(rand) != 10:
        raise ValueError("randomness must be 10 bytes")
    value = (ms & ((1 << 48) - 1)) << 80 | int.from_bytes(rand, "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """Return ``<prefix>_<ulid body>``, e.g. ``new_id("env")``."""
    return f"{prefix}_{new_body()}"


def is_valid_id(value: object) -> bool:
    """True when ``value`` is a string that the wire allows inside a path."""
    return isinstance(value, str) and 0 < len(value) <= 256 and ID_PATTERN.match(value) is not None


def id_body(value: str) -> str:
    """The text after the last ``_`` (the whole string when there is none)."""
    return value.rsplit("_", 1)[-1]


def same_session_id(a: str, b: str) -> bool:
    """Reference ``sameSessionId``: equal strings, or equal bodies of length ≥ 4."""
    if a == b:
        return True
    body_a, body_b = id_body(a), id_body(b)
    return len(body_a) >= 4 and body_a == body_b


def session_body(value: str) -> str | None:
    """The ULID body of a session id in either costume, or None when it is not one."""
    for prefix in (SESSION_PREFIX, CODE_SESSION_PREFIX):
        if value.startswith(prefix):
            body = value[len(prefix):]
            return body if _BODY_PATTERN.match(body) else None
    return None


def to_compat_session_id(value: str) -> str:
    """``cse_X`` → ``session_X``; anything else unchanged."""
    if value.startswith(CODE_SESSION_PREFIX):
        return SESSION_PREFIX + value[len(CODE_SESSION_PREFIX):]
    return value


def to_infra_session_id(value: str) -> str:
    """``session_X`` → ``cse_X``; anything else unchanged."""
    if value.startswith(SESSION_PREFIX):
        return CODE_SESSION_PREFIX + value[len(SESSION_PREFIX):]
    return value


def prefixed_body(value: str, prefix: str) -> str | None:
    """The body of ``<prefix>_<body>`` when ``value`` has that form, else None."""
    head = prefix + "_"
    if value.startswith(head):
        body = value[len(head):]
        return body if _BODY_PATTERN.match(body) else None
    return None
