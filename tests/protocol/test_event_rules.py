from __future__ import annotations

from typing import Any

import pytest

from tether.protocol import messages as m
from tether.protocol.event_rules import (
    MIRROR_TAG,
    check_client_control,
    check_client_event,
    check_envelope,
    clients_may_drive,
)
from tether.protocol.repl_bridge import MIRROR_TAG as REPL_MIRROR_TAG


@pytest.mark.parametrize(("obj", "error"), [
    ([], "must be a JSON object"),
    ({"uuid": "u"}, "needs a string 'type'"),
    ({"type": ""}, "needs a string 'type'"),
    ({"type": 3}, "needs a string 'type'"),
    ({"type": "x", "uuid": 4}, "'uuid' must be a string"),
])
def test_the_envelope(obj: Any, error: str) -> None:
    with pytest.raises(m.MessageError, match=error):
        check_envelope(obj)


def test_an_envelope_is_returned_as_it_is() -> None:
    event = {"type": "anything", "uuid": "u", "extra": [1]}
    assert check_envelope(event) is event


def prompt(**fields: Any) -> dict[str, Any]:
    return {"type": "user", "message": {"role": "user", "content": "hi"}, **fields}


@pytest.mark.parametrize("event", [
    prompt(),
    {"type": "user", "message": {"content": [{"type": "text", "text": "hi"}]}},
    prompt(file_attachments=[{"file_uuid": "f", "file_name": "a.png"}]),
    {"type": "control_request", "request_id": "r", "request": {"subtype": "interrupt"}},
    {"type": "control_request", "request_id": "r", "request": {"subtype": "tether_take_over"}},
    {"type": "control_response", "response": {"subtype": "success", "request_id": "r"}},
])
def test_what_a_client_may_send(event: dict[str, Any]) -> None:
    check_client_event(event)


@pytest.mark.parametrize(("event", "error"), [
    ({"type": "user"}, "needs 'message'"),
    ({"type": "user", "message": {"role": "assistant", "content": "x"}}, "needs 'message'"),
    ({"type": "user", "message": {"content": 3}}, "'message.content' must be"),
    ({"type": "user", "message": {"content": ["text"]}}, "'message.content' must be"),
    (prompt(file_attachments={"file_uuid": "f"}), "'file_attachments' must be"),
    (prompt(file_attachments=[{"file_name": "x"}]), "'file_attachments' must be"),
    ({"type": "control_request", "request_id": "r", "request": {"subtype": "can_use_tool"}}, "subtype must be"),
    ({"type": "control_request", "request_id": "r", "request": "interrupt"}, "subtype must be"),
    ({"type": "control_request", "request": {"subtype": "interrupt"}}, "non-empty string 'request_id'"),
    ({"type": "control_request", "request_id": "", "request": {"subtype": "interrupt"}}, "'request_id'"),
    ({"type": "assistant"}, "Clients may send 'user' and 'control_request' events, not 'assistant'"),
])
def test_what_a_client_may_not_send(event: dict[str, Any], error: str) -> None:
    with pytest.raises(m.MessageError, match=error):
        check_client_event(event)


def test_one_list_of_client_control_subtypes() -> None:
    for subtype in sorted(m.CLIENT_CONTROL_SUBTYPES):
        assert check_client_control({"subtype": subtype}) == subtype
    assert {"interrupt", "set_model", "set_permission_mode", "set_max_thinking_tokens", "end_session",
            "tether_take_over", "tether_return_to_terminal"} == m.CLIENT_CONTROL_SUBTYPES
    with pytest.raises(m.MessageError, match="initialize"):
        check_client_control({"subtype": "initialize"})
    with pytest.raises(m.MessageError):
        check_client_control(None)


def test_a_mirror_session_is_driven_by_its_terminal_only() -> None:
    assert clients_may_drive(None) and clients_may_drive([]) and clients_may_drive(["x"])
    assert not clients_may_drive(["x", MIRROR_TAG])
    assert REPL_MIRROR_TAG == MIRROR_TAG == "ccr-mirror"
