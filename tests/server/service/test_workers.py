"""The pure parts of the worker service: the registry of open v1 worker sockets and W2's body."""

from __future__ import annotations

import pytest

from tether.errors import InvalidRequest
from tether.server.service.workers import (
    Caller,
    WorkerConnection,
    WorkerConnections,
    WorkerState,
    parse_state,
)


def test_the_registry_says_when_a_session_gets_its_first_socket_and_loses_its_last() -> None:
    registry = WorkerConnections()
    a, b, other = WorkerConnection("s1", Caller("t")), WorkerConnection("s1", Caller("t")), WorkerConnection(
        "s2", Caller("t"))
    assert registry.add(a) and not registry.add(b) and registry.add(other)
    a.unconfirmed.append("u1")
    assert {id(c) for c in registry.of("s1")} == {id(a), id(b)}
    assert not registry.remove(a)  # b is still open
    assert not registry.remove(a)  # twice: nothing to forget
    assert registry.remove(b)
    assert list(registry.of("s1")) == [] and list(registry.of("s2")) == [other]


def test_parse_state() -> None:
    assert parse_state({}, 3) == WorkerState(3)
    state = parse_state({"worker_status": "requires_action", "external_metadata": {"k": 1},
                         "requires_action_details": {"tool_name": "Bash"}, "connection_status": "disconnected"}, 4)
    assert state == WorkerState(4, "requires_action", True, {"k": 1}, None)


@pytest.mark.parametrize(("payload", "error"), [
    ({"worker_status": "busy"}, "'worker_status' must be one of idle, running, requires_action"),
    ({"internal_metadata": []}, "'internal_metadata' must be an object"),
    ({"requires_action_details": "x"}, "'requires_action_details' must be an object or null"),
])
def test_parse_state_refuses(payload: dict[str, object], error: str) -> None:
    with pytest.raises(InvalidRequest, match=error):
        parse_state(payload, 1)
