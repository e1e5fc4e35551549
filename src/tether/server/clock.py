"""Wall-clock helpers for the server (the pure core takes time as a parameter)."""

from __future__ import annotations

import datetime as dt
import time


def now() -> float:
    return time.time()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
