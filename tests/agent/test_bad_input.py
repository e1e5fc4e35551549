"""Bad stdin: a clear message on stderr, a non-zero exit, no traceback, nothing acknowledged lost."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.agent.harness import control, is_type, user
from tether.agent.main import choose_backend
from tether.cli.main import app

SCENARIO = "reply\ntext hello\n"
ONE_MIB = 1 << 20


@pytest.mark.parametrize(("line", "expected"), [
    (b"{not json\n", "stdin line 2: line is not valid JSON"),
    (b"[1, 2]\n", "stdin line 2: message must be a JSON object, got array"),
    (b'{"type": "user", "message": "hi"}\n', "stdin line 2: a user message needs 'message'"),
    (b'{"type": "control_request", "request": {"subtype": "interrupt"}}\n', "stdin line 2: control_request has no request_id"),
    (b"\xff\xfe\n", "stdin line 2: line is not valid UTF-8"),
    (b'{"type": "user", "x": "' + b"a" * ONE_MIB + b'"}\n', "stdin line 2 is longer than the 1048576-byte limit"),
])
def test_bad_line_stops_the_input_but_keeps_what_came_before(spawn_agent: Any, line: bytes, expected: str) -> None:
    proc = spawn_agent(scenario=SCENARIO)
    proc.send_raw(json.dumps(user("first", "u1")).encode() + b"\n" + line
                  + json.dumps(user("after the bad line", "u2")).encode() + b"\n")
    # the prompt read before the bad line was acknowledged and is processed to its result
    echo = proc.expect(lambda m: m.get("isReplay") is True)
    assert echo["uuid"] == "u1"
    assert proc.result()["result"] == "hello"
    code = proc.wait_exit()
    assert code == 1
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not [m for m in proc.messages if m.get("uuid") == "u2"]
    assert proc.bad_lines == []


def test_blank_lines_known_output_types_crlf_and_no_final_newline(spawn_agent: Any) -> None:
    proc = spawn_agent(scenario=SCENARIO)
    proc.send_raw(b"\n   \n" + json.dumps({"type": "assistant", "message": {}}).encode() + b"\r\n"
                  + b'{"type": "teleport"}\n')
    proc.send(control("initialize", "i1"))
    assert proc.expect(is_type("control_response"))["response"]["subtype"] == "success"
    proc.send_raw(json.dumps(user("hi")).encode() + b"\r\n")
    assert proc.result()["subtype"] == "success"
    proc.send_raw(json.dumps(user("no newline at the end")).encode())
    proc.close_stdin()
    assert proc.result()["result"] == "hello"
    assert proc.wait_exit() == 0
    assert "ignoring a 'assistant' message" in proc.stderr and "Traceback" not in proc.stderr
    # an unknown type is skipped like the stock CLI does (forward compatibility), not fatal
    assert "ignoring a message of unknown type 'teleport'" in proc.stderr


@pytest.mark.parametrize(("args", "expected"), [
    (["-p", "--input-format", "stream-json", "--output-format", "stream-json"], "requires --verbose"),
    (["--verbose", "--input-format", "text"], "--input-format text is not supported"),
    (["--verbose", "--permission-mode", "yolo"], "--permission-mode must be one of"),
    (["--verbose", "--backend", "scripted", "--scenario", "/nonexistent/scenario.txt"], "cannot read the scenario"),
    (["--verbose", "--allowedTools", "Bash(unclosed"], "not a permission rule"),
    (["--verbose", "--backend", "gpt"], "--backend must be one of"),
])
def test_bad_flags(args: list[str], expected: str, capfd: pytest.CaptureFixture[str]) -> None:
    """Flag errors end before any I/O, so they run in-process."""
    result = CliRunner().invoke(app, ["agent", *args])
    assert result.exit_code == 2
    err = result.stderr + capfd.readouterr().err
    assert expected in err and "Traceback" not in err


def test_bad_scenario_file(tmp_path: pathlib.Path, capfd: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "s.txt"
    scenario.write_text("reply\nwiggle 3\n")
    result = CliRunner().invoke(app, ["agent", "--verbose", "--scenario", str(scenario)])
    assert result.exit_code == 2
    assert "line 2: unknown directive 'wiggle'" in result.stderr + capfd.readouterr().err


def test_default_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    name, notice = choose_backend(None, None)
    assert name == "scripted" and notice is not None and "scripted model backend" in notice
    assert choose_backend(None, "s.txt") == ("scripted", None)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    assert choose_backend(None, None) == ("anthropic", None)
    assert choose_backend("scripted", None) == ("scripted", None)


