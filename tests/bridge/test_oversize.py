"""Agent output over the server's event limit: the helpers, and the session host's outbound pump
fed by a scripted agent handle (the end-to-end case with a real agent and server is in
test_session_host.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from tether.bridge import oversize
from tether.bridge.agent_process import AgentSpec
from tether.bridge.session_host import HostConfig, SessionHost
from tether.client.transport import TransportError
from tether.protocol.line_splitter import Oversize, Piece

pytestmark = pytest.mark.anyio

LIMIT = 1000


def line(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode()


def ask(rid: str, subtype: str = "can_use_tool", pad: int = 3000, **fields: Any) -> dict[str, Any]:
    return {"type": "control_request", "request_id": rid,
            "request": {"subtype": subtype, "tool_name": "Write", "input": {"content": "x" * pad}, **fields}}


class ScriptedAgent:
    """An agent handle whose stdout is a fixed list of pieces; records what it is sent."""

    killed_by_host = False
    pid = 4242
    returncode = None
    stderr_tail: tuple[str, ...] = ()

    def __init__(self, pieces: list[Piece]) -> None:
        self.pieces = pieces
        self.sent: list[dict[str, Any]] = []

    async def send(self, message: Mapping[str, Any]) -> bool:
        self.sent.append(dict(message))
        return True

    async def stdout_lines(self) -> AsyncIterator[Piece]:
        for piece in self.pieces:
            yield piece


class RecordingTransport:
    def __init__(self, refuse: str | None = None) -> None:
        self.written: list[dict[str, Any]] = []
        self.refuse = refuse

    def write(self, message: dict[str, Any]) -> None:
        if message.get("request_id") == self.refuse:
            raise TransportError("the queue is full")
        self.written.append(message)


async def pump(pieces: list[Piece], refuse: str | None = None) -> tuple[SessionHost, ScriptedAgent, RecordingTransport]:
    agent, transport = ScriptedAgent(pieces), RecordingTransport(refuse)
    host = SessionHost("session_x", transport, AgentSpec(["agent"], cwd="/w"),  # type: ignore[arg-type]
                       HostConfig(max_line_bytes=LIMIT, max_parse_bytes=10 * LIMIT), process=agent)  # type: ignore[arg-type]
    await host._pump_outbound()
    return host, agent, transport


def test_relay_size_counts_the_uuid_the_transport_adds() -> None:
    msg = {"type": "control_request", "request_id": "r", "request": {"subtype": "x", "pad": "p" * 900}}
    raw = len(line(msg))
    assert oversize.relay_size(msg) == raw + oversize.UUID_FIELD_BYTES
    assert oversize.size_over(msg, raw, raw) == raw + oversize.UUID_FIELD_BYTES  # fits as a line, not as an event
    assert oversize.size_over(msg, raw, raw + oversize.UUID_FIELD_BYTES) is None
    padded = json.dumps(msg, indent=2).encode()  # padding the server never sees
    assert oversize.size_over(msg, len(padded), raw + oversize.UUID_FIELD_BYTES) is None


def test_shortened_copies_keep_ids_and_fit() -> None:
    msg = {"type": "assistant", "uuid": "u1", "message": {"id": "msg_1", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "Write", "input": {"content": "y" * 50_000}}]}}
    copy = oversize.replacement(msg, 50_100, LIMIT)
    assert copy is not None and oversize.relay_size(copy) <= LIMIT
    block = copy["message"]["content"][0]
    assert (copy["uuid"], block["id"], block["name"]) == ("u1", "toolu_1", "Write")
    assert block["input"]["content"].startswith("y" * 256) and block["input"]["content"].endswith("too large]")
    assert copy["tether_oversize"] == {"bytes": 50_100, "limit": LIMIT}
    assert oversize.replacement({"type": "stream_event", "event": {"pad": "z" * 5000}}, 5000, LIMIT) is None
    many_keys = {"type": "system", "uuid": "u2", "keys": {f"k{i}": i for i in range(500)}}
    assert oversize.replacement(many_keys, 5000, LIMIT) is None  # nothing it cuts makes it fit


async def test_the_host_answers_or_shortens_what_it_cannot_relay() -> None:
    big_reply = {"type": "control_response", "uuid": "u3",
                 "response": {"subtype": "success", "request_id": "client-1", "response": {"pad": "r" * 3000}}}
    pieces: list[Piece] = [
        line({"type": "assistant", "uuid": "u1", "message": {"content": [{"type": "text", "text": "hi"}]}}),
        line(ask("perm-1")),
        line(ask("mcp-1", subtype="mcp_message")),
        line(big_reply),
        line({"type": "stream_event", "uuid": "u4", "event": {"pad": "s" * 3000}}),
        line(ask("perm-2", pad=10)),  # small, but the transport refuses it
        line({"type": "result", "subtype": "success", "uuid": "u5", "result": "t" * 3000}),
        Oversize(50 * LIMIT),
    ]
    host, agent, transport = await pump(pieces, refuse="perm-2")
    assert [(a["response"]["request_id"], a["response"]["subtype"]) for a in agent.sent] == [
        ("perm-1", "success"), ("mcp-1", "error"), ("perm-2", "success")]
    deny = agent.sent[0]["response"]["response"]
    assert deny["behavior"] == "deny" and deny["message"].startswith("The Write call was denied without asking")
    assert "too large to relay to remote clients" in deny["message"]
    assert "would fit" in deny["message"] and "would fit" not in agent.sent[2]["response"]["response"]["message"]
    assert agent.sent[1]["response"]["error"].startswith("The mcp_message request is 3.1 KiB, too large to relay")
    assert "the queue is full" in agent.sent[2]["response"]["response"]["message"]
    assert [(w["type"], w.get("uuid")) for w in transport.written] == [
        ("assistant", "u1"), ("control_response", "u3"), ("result", "u5")]
    assert transport.written[1]["response"]["subtype"] == "error"
    assert transport.written[1]["response"]["request_id"] == "client-1"
    assert transport.written[2]["result"].endswith("too large]")
    assert all(oversize.relay_size(w) <= LIMIT for w in transport.written)
    stats = host.stats
    assert (stats.oversize_lines, stats.answered_for_agent, stats.shortened_lines, stats.write_failures) == (
        6, 3, 2, 1)
    assert host.state == "idle" and host.tracker.pending_permissions == ()
    assert "Too large to relay: Write permission request (3.1 KiB)" in [a.summary for a in host.activities]
    assert "Too large to read: agent output (48.8 KiB)" in [a.summary for a in host.activities]
