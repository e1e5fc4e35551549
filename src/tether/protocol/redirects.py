"""Where a page may send a browser after login: the ``next`` of ``/login`` and of a login link.

Only a path on the same origin is allowed, so a link cannot bounce a freshly logged-in
browser to another site (an open redirect). Browsers are lenient with what they take for a
path: ``//host`` and ``/\\host`` name another host, and tabs, newlines and leading
control characters are dropped before parsing (``/\\t/host`` becomes ``//host``). The rule
is therefore strict: a ``/`` followed by printable ASCII only (a path and query the browser
already percent-encoded), no second ``/`` or a backslash at the start, no backslash at all.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DEFAULT_NEXT",
    "MAX_NEXT_LEN",
    "next_or_default",
    "safe_next_path",
]

DEFAULT_NEXT: Final = "/code"
MAX_NEXT_LEN: Final = 2000


def safe_next_path(value: object) -> str | None:
    """``value`` when it is a same-origin relative path (with an optional query), else None."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NEXT_LEN:
        return None
    if value[0] != "/" or value[1:2] in ("/", "\\"):
        return None
    if "\\" in value or any(not "\x21" <= ch <= "\x7e" for ch in value):
        return None  # whitespace, control characters and non-ASCII arrive percent-encoded
    return value


def next_or_default(value: object) -> str:
    """The ``next`` to use: ``value`` when safe, else the session list."""
    return safe_next_path(value) or DEFAULT_NEXT
