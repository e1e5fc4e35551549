"""The opt-in ack log (TETHER_ACK_LOG): what the server acknowledged, recorded by the transports."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
from typing import Any

import pytest
from tests.support.fake_http import FakeHTTP, Reply, Request

from tether.client import acklog
from tether.client.ccr import CCRClient, CCRConfig
from tether.protocol.backoff import Backoff

pytestmark = pytest.mark.anyio


def rows(path: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rows_name_the_session_uuid_type_and_a_response_request_id(tmp_path: pathlib.Path) -> None:
    log = acklog.AckLog(str(tmp_path / "acks.jsonl"))
    log.record("cse_1", [{"type": "assistant", "uuid": "a"},
                         {"type": "control_response", "uuid": "b",
                          "response": {"subtype": "success", "request_id": "req-1"}}])
    log.record("cse_1", [])
    log.record("cse_1", [{"type": "result", "uuid": "c"}])
    assert rows(tmp_path / "acks.jsonl") == [
        {"s": "cse_1", "u": "a", "t": "assistant"},
        {"s": "cse_1", "u": "b", "t": "control_response", "r": "req-1"},
        {"s": "cse_1", "u": "c", "t": "result"},
    ]


def test_off_without_the_variable_and_opened_once_with_it(tmp_path: pathlib.Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(acklog, "_checked", False)
    monkeypatch.setattr(acklog, "_from_env", None)
    monkeypatch.delenv(acklog.ENV_VAR, raising=False)
    assert acklog.from_env() is None
    monkeypatch.setattr(acklog, "_checked", False)
    monkeypatch.setenv(acklog.ENV_VAR, str(tmp_path / "a.jsonl"))
    first = acklog.from_env()
    assert first is not None and acklog.from_env() is first


def test_a_write_failure_turns_the_record_off(tmp_path: pathlib.Path) -> None:
    log = acklog.AckLog(str(tmp_path / "acks.jsonl"))
    assert log._fd is not None
    os.close(log._fd)  # the descriptor goes bad under it
    log.record("s", [{"type": "assistant", "uuid": "a"}])  # logged, not raised
    log.record("s", [{"type": "assistant", "uuid": "b"}])
    assert log._fd is None


async def test_ccr_records_only_stored_events_once_the_server_acknowledged_them(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "acks.jsonl"
    monkeypatch.setattr(acklog, "_checked", False)
    monkeypatch.setattr(acklog, "_from_env", None)
    monkeypatch.setenv(acklog.ENV_VAR, str(path))
    answers = [Reply(500, {})]

    async def handler(req: Request) -> Reply:
        if req.method == "POST" and req.path.endswith("/worker/events"):
            return answers.pop(0) if answers else Reply(200, {})
        if req.method == "GET" and req.path.endswith("/worker"):
            return Reply(200, {"worker": {}})
        return Reply(200, {})

    cfg = CCRConfig(heartbeat_interval=3600.0, retry_backoff=lambda: Backoff(0.01, 0.05), init_state_wait=1.0)
    async with FakeHTTP(handler) as server:
        ccr = CCRClient(f"{server.url}/v1/code/sessions/cse_x", "tok", 1, config=cfg)
        await ccr.initialize()
        task = asyncio.create_task(ccr.run())
        ccr.write_event({"type": "assistant", "uuid": "a1", "message": {"role": "assistant", "content": []}})
        ccr.write_event({"type": "stream_event", "uuid": "s1", "event": {"type": "message_stop"}})
        ccr.write_event({"type": "result", "uuid": "r1", "subtype": "success"})
        assert await ccr.flush(10)
        await ccr.close(1.0)
        await task
    assert [(r["s"], r["u"], r["t"]) for r in rows(path)] == [("cse_x", "a1", "assistant"), ("cse_x", "r1", "result")]
