"""What the server accepts into a session's log, before anything is stored (docs/protocol.md §4.3,
§4.6, §4.7). Pure: each check returns or raises :class:`~tether.protocol.messages.MessageError` with
the sentence a client is shown (the server answers it as 400 ``invalid_request_error``).

* every event: a JSON object with a non-empty string ``type`` and, if it has one, a string ``uuid``
  (:func:`check_envelope`);
* a client may send prompts (``user``), the control requests of
  :data:`~tether.protocol.messages.CLIENT_CONTROL_SUBTYPES` and permission answers, well formed
  (:func:`check_client_event`): a malformed prompt would be refused by the agent after the server
  acknowledged it, so it is refused here instead;
* a mirror session (tagged ``ccr-mirror``) is outbound only: clients watch it, never drive it
  (:func:`clients_may_drive`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from tether.protocol import messages as m

__all__ = [
    "MIRROR_TAG",
    "check_client_control",
    "check_client_event",
    "check_envelope",
    "clients_may_drive",
]

MIRROR_TAG: Final = "ccr-mirror"


def check_envelope(obj: object) -> dict[str, Any]:
    """``obj`` as an event (not copied), or :class:`MessageError`."""
    if not isinstance(obj, dict):
        raise m.MessageError("Each event must be a JSON object.")
    kind = obj.get("type")
    if not isinstance(kind, str) or not kind:
        raise m.MessageError("Each event needs a string 'type'.")
    if "uuid" in obj and not isinstance(obj["uuid"], str):
        raise m.MessageError("An event's 'uuid' must be a string.")
    return obj


def check_client_event(obj: Mapping[str, Any]) -> None:
    """What a client may send a worker: prompts, a few control requests and permission answers."""
    kind = obj.get("type")
    if kind == m.USER:
        _check_prompt(obj)
    elif kind == m.CONTROL_REQUEST:
        check_client_control(obj.get("request"))
        if not isinstance(obj.get("request_id"), str) or not obj["request_id"]:
            raise m.MessageError("A control_request needs a non-empty string 'request_id'.")
    elif kind != m.CONTROL_RESPONSE:
        raise m.MessageError(f"Clients may send 'user' and 'control_request' events, not {kind!r}.")


def check_client_control(request: object) -> str:
    """The subtype of a client's control ``request``, if clients may send it."""
    subtype = request.get("subtype") if isinstance(request, Mapping) else None
    if not isinstance(subtype, str) or subtype not in m.CLIENT_CONTROL_SUBTYPES:
        allowed = ", ".join(sorted(m.CLIENT_CONTROL_SUBTYPES))
        raise m.MessageError(f"control_request.request.subtype must be one of {allowed} (got {subtype!r}).")
    return subtype


def _check_prompt(obj: Mapping[str, Any]) -> None:
    message = obj.get("message")
    if not isinstance(message, Mapping) or message.get("role", "user") != "user":
        raise m.MessageError("A user event needs 'message': {'role': 'user', 'content': …}.")
    content = message.get("content")
    if not isinstance(content, str | list) or (isinstance(content, list)
                                                and not all(isinstance(b, dict) for b in content)):
        raise m.MessageError("'message.content' must be a string or a list of content blocks.")
    attachments = obj.get("file_attachments")
    if attachments is not None and not (isinstance(attachments, list) and all(
            isinstance(a, dict) and isinstance(a.get("file_uuid"), str) for a in attachments)):
        raise m.MessageError("'file_attachments' must be a list of {file_uuid, file_name}.")


def clients_may_drive(tags: Iterable[str] | None) -> bool:
    """False for a mirror session: its clients watch, the terminal it runs in drives it."""
    return MIRROR_TAG not in (tags or ())
