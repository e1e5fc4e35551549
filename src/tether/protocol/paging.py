"""Pages of stored events bounded by bytes as well as by count (pure).

A page of 1,000 events of up to 1 MiB each is a gigabyte built in memory at once; four
concurrent reads of 90 such events added 360 MB to a server (issue #11). A page ends at its
count or at its byte budget, whichever comes first, and always holds at least one event, so
a reader paging on always makes progress.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "fitting",
]


def fitting(sizes: Iterable[int], max_bytes: int) -> int:
    """How many of the leading ``sizes`` fit in ``max_bytes`` together (at least one if any)."""
    total = count = 0
    for size in sizes:
        total += size
        if count and total > max_bytes:
            break
        count += 1
    return count
