"""The polling side of the OAuth device flow (RFC 8628 §3.5; docs/protocol.md §1), pure.

After showing the user code, a client polls ``POST /oauth/token`` every ``interval`` seconds.
:func:`device_poll_step` turns each error answer into the next step: keep waiting
(``authorization_pending``), wait 5 s longer from now on (``slow_down``), or stop with a
message a person understands (``access_denied``, ``expired_token``, anything else).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "MAX_INTERVAL_S",
    "MIN_INTERVAL_S",
    "SLOW_DOWN_STEP_S",
    "DeviceStep",
    "device_poll_step",
    "initial_interval",
    "out_of_time",
]

SLOW_DOWN_STEP_S: Final = 5.0
MIN_INTERVAL_S: Final = 1.0
MAX_INTERVAL_S: Final = 60.0


@dataclass(frozen=True)
class DeviceStep:
    action: Literal["wait", "fail"]
    interval: float
    message: str = ""
    error_type: str | None = None


def initial_interval(value: object, default: float = 5.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return default
    return min(max(float(value), MIN_INTERVAL_S), MAX_INTERVAL_S)


def device_poll_step(error_type: str | None, interval: float, detail: str | None = None) -> DeviceStep:
    if error_type == "authorization_pending":
        return DeviceStep("wait", interval)
    if error_type == "slow_down":
        return DeviceStep("wait", min(interval + SLOW_DOWN_STEP_S, MAX_INTERVAL_S))
    if error_type == "access_denied":
        return DeviceStep("fail", interval, "The login was denied in the browser.", error_type)
    if error_type == "expired_token":
        return DeviceStep("fail", interval,
                          "The code expired before it was approved. Run `tether login` again.", error_type)
    if error_type == "invalid_grant":
        return DeviceStep("fail", interval,
                          "The server no longer knows this login request. Run `tether login` again.", error_type)
    what = f": {detail}" if detail else ""
    return DeviceStep("fail", interval, f"The login failed ({error_type or 'unexpected answer'}){what}", error_type)


def out_of_time(now: float, deadline: float) -> bool:
    return now >= deadline
