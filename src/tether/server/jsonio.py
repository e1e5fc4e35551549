"""JSON in and out at the server's edge: one depth limit on the way in, no 500 on the way out.

* :func:`parse` decodes a body or frame and refuses one nested deeper than
  :data:`~tether.protocol.json_depth.MAX_DEPTH` (docs/protocol.md §4.8) with 400, before
  anything is stored.
* :func:`dumps` serialises a response or frame. orjson refuses values deeper than 254 levels;
  rows stored before the limit existed may hold such values, so on that one error the value is
  clamped (:func:`~tether.protocol.json_depth.clamp`) and served. Nothing else changes: the
  happy path is a plain ``orjson.dumps``.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from tether.errors import InvalidRequest, PayloadTooLarge
from tether.protocol import json_depth

MAX_DEPTH: Final = json_depth.MAX_DEPTH
# Where a stored value is cut when serving it: far below orjson's 254 levels (room for any
# envelope), far above MAX_DEPTH (nothing accepted since the limit is ever cut).
SERVE_DEPTH: Final = 200
_CONTAINERS: Final = frozenset((dict, list))


class TooDeep(InvalidRequest):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} nests deeper than {MAX_DEPTH} levels.")


def parse(raw: bytes | bytearray | memoryview | str, what: str = "The request body", *,
          check: bool = True) -> Any:
    """Decode ``raw``; 400 (:class:`InvalidRequest`) for invalid JSON or (unless the caller
    checks the parts itself, see :func:`check_batch`) too deep a value."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"{what} is not valid JSON: {exc}.") from None
    if check:
        check_depth(raw, value, what)
    return value


def check_batch(body: dict[str, Any], events: list[Any], payload_key: str | None = None) -> None:
    """The depth limit on a worker's event batch, parsed unchecked, except for its events:
    the hub checks each event with the bytes it serialises anyway (a bracket count, rarely a
    walk of that one event), where a walk of the whole batch cost more than parsing it. Here:
    the rest of the body, and of each ``{payload_key: event, …}`` item."""
    for key, value in body.items():  # values of the body are at level 2
        if key != "events" and json_depth.nesting(value, MAX_DEPTH - 1) > MAX_DEPTH - 1:
            raise TooDeep("The request body")
    if payload_key is not None:
        for item in events:  # an item is at level 3, its values at 4; mostly flags (scalars)
            if type(item) is dict and len(item) > 1:
                for key, value in item.items():
                    if key != payload_key and type(value) in _CONTAINERS and \
                            json_depth.nesting(value, MAX_DEPTH - 3) > MAX_DEPTH - 3:
                        raise TooDeep("The request body")


# Where the events of a batch sit (the body is level 1): a stored event may nest this deep so
# that the whole body stays within MAX_DEPTH.
EVENT_ROOM_V1_POST: Final = MAX_DEPTH - 2  # {"events": [event]}
EVENT_ROOM_V2_POST: Final = MAX_DEPTH - 4  # {"events": [{"payload": event}]}


def check_depth(raw: bytes | bytearray | memoryview | str, value: Any, what: str = "The request body") -> None:
    if json_depth.exceeds(raw if not isinstance(raw, memoryview) else bytes(raw), value, MAX_DEPTH):
        raise TooDeep(what)


def check_size(value: Any, limit: int, what: str) -> bytes:
    """``value`` serialised, or 413 when that is more than ``limit`` bytes: every JSON field the
    server stores is bounded like an event (docs/protocol.md §4.8)."""
    raw = dumps(value)  # (a merge may carry an old, too deep row along: measured clamped)
    if len(raw) > limit:
        raise PayloadTooLarge(f"{what} is larger than {limit} bytes.")
    return raw


def dumps(value: Any) -> bytes:
    """``orjson.dumps``, except that a value too deep to serialise is served clamped."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        if "recursion" not in str(exc).lower():
            raise
        return orjson.dumps(json_depth.clamp(value, SERVE_DEPTH))
