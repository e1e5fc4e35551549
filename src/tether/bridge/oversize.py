"""Agent output the server will not take (docs/protocol.md §4.8: an event is at most 1 MiB).

Dropping such a line silently breaks a session: a ``control_request`` that never reaches a
client is never answered, so the agent waits for ever (a huge Write asks ``can_use_tool``
with the whole file as input); a ``result`` that never reaches the server leaves the session
``running``. The session host therefore still reads lines up to a larger cap and handles one
over the limit with these helpers:

* a ``control_request`` is answered on the agent's stdin (:func:`refusal`): ``can_use_tool``
  with a deny the model can act on, any other subtype with an error reply;
* a ``control_response`` (to a client's request) is relayed as an error reply;
* an ephemeral event (``stream_event``: the durable message that follows supersedes it) is dropped;
* anything else is relayed as a shortened copy (same type, ids and ``uuid``; long strings
  and lists cut, strings marked, the copy flagged with ``tether_oversize``) when one fits.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from tether.protocol import messages as m
from tether.protocol.replay_buffer import message_uuid

Message = dict[str, Any]

UUID_FIELD_BYTES: Final = len(',"uuid":""') + 36  # what the transport adds to a message without one
OVERSIZE_FIELD: Final = "tether_oversize"  # on a shortened copy: {"bytes": original size, "limit": limit}
_CUTS: Final = ((4096, 100), (256, 10))  # (characters kept per string, items kept per list), tried in order


def relay_size(msg: Message) -> int:
    """The size the server measures: compact JSON, with the ``uuid`` the transport adds.
    Raises ``TypeError`` (``orjson.JSONEncodeError``) when ``msg`` cannot be serialised."""
    size = len(orjson.dumps(msg))
    return size if message_uuid(msg) else size + UUID_FIELD_BYTES


def size_over(msg: Message, raw_size: int, limit: int) -> int | None:
    """``msg``'s relay size when it is over ``limit``, else None. The agent's line (compact or
    padded JSON) bounds the compact form in practice, so only lines near the limit are
    serialised again; a message that cannot be serialised is left to the transport to refuse."""
    if raw_size + UUID_FIELD_BYTES <= limit:
        return None
    try:
        size = relay_size(msg)
    except TypeError:
        return None
    return size if size > limit else None


def human(size: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def too_large(size: int, limit: int) -> str:
    """Why a message is not relayed, completing "the request …" / "the response …"."""
    return f"is {human(size)}, too large to relay to remote clients (the limit is {human(limit)})"


def _tool_name(msg: Message) -> str | None:
    if m.control_subtype(msg) != m.CAN_USE_TOOL:
        return None
    tool = (m.request_payload(msg) or {}).get("tool_name")
    return tool if isinstance(tool, str) and tool else "tool"


def describe(msg: Message) -> str:
    """A few words for logs and activities: "Write permission request", "assistant message"."""
    if m.is_control_request(msg):
        tool = _tool_name(msg)
        return f"{tool} permission request" if tool else f"{m.control_subtype(msg) or 'control'} request"
    return f"{msg.get('type')} message"


def refusal(msg: Message, why: str, *, too_big: bool = False) -> Message | None:
    """The host's own answer to a control_request nobody else can answer (None without a
    ``request_id``): the shapes a client would send (docs/protocol.md §14.4). ``too_big``: the
    request was too large, so a deny tells the model what would work."""
    request_id = m.request_id_of(msg)
    if request_id is None:
        return None
    tool = _tool_name(msg)
    if tool is not None:  # the model reads the message as the tool's result
        hint = " A smaller input (for example, a file written in parts) would fit." if too_big else ""
        deny = m.PermissionDeny(f"The {tool} call was denied without asking: the permission request {why}.{hint}")
        return m.control_success(request_id, deny.to_json())
    return m.control_error(request_id, f"The {m.control_subtype(msg) or 'control'} request {why}.")


def replacement(msg: Message, size: int, limit: int) -> Message | None:
    """What to relay instead of an oversized message other than a control_request, or None."""
    if m.is_ephemeral(msg) or m.is_control_request(msg):
        return None
    if m.is_control_response(msg):
        request_id = m.response_request_id(msg)
        if request_id is None:
            return None
        reply = m.control_error(request_id, f"The response {too_large(size, limit)}.")
        return {**reply, "uuid": msg["uuid"]} if message_uuid(msg) else reply
    return shortened(msg, size, limit)


def shortened(msg: Message, size: int, limit: int) -> Message | None:
    """``msg`` with long strings and lists cut until it fits ``limit``; None when nothing fits."""
    for chars, items in _CUTS:
        try:
            copy: Message = _cut(msg, chars, items)
            copy[OVERSIZE_FIELD] = {"bytes": size, "limit": limit}
            if relay_size(copy) <= limit:
                return copy
        except (TypeError, RecursionError):
            return None
    return None


def _cut(value: Any, chars: int, items: int) -> Any:
    if isinstance(value, str):
        if len(value) <= chars:
            return value
        return f"{value[:chars]}… [{len(value) - chars} more characters not relayed: too large]"
    if isinstance(value, list):
        return [_cut(v, chars, items) for v in value[:items]]
    if isinstance(value, dict):
        return {k: _cut(v, chars, items) for k, v in value.items()}
    return value
