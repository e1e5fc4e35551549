"""Compare ``tether agent`` output with the stock CLI's recorded transcripts (types and fields, not values).

A recorded stdout line and ours are *the same kind* when their ``type`` / ``subtype``
/ request subtype agree (:func:`kind`). Their *shape* is the set of field paths with
JSON value types (:func:`shape`). Ours must have, with the same value type, every
field that the CLI wrote in every recorded occurrence of that kind in both recorded
CLI versions (2.1.330 and 2.1.197): fields only one version writes are optional.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Recorded with the real CLI (2.1.330, and 2.1.197 under v2.1.197/); tests/fixtures/claude-cli/README.md
FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "claude-cli"

# Containers whose fields are compared one level down.
_NESTED = ("message", "request", "response", "event")


@dataclass
class Record:
    seq: int
    dir: str
    msg: Any


def load(name: str, version_dir: str = "") -> list[Record]:
    path = FIXTURES / version_dir / name
    return [Record(r["seq"], r["dir"], r.get("msg", r.get("raw"))) for r in map(json.loads, path.read_text().splitlines())]


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def kind(msg: dict[str, Any], answered: dict[str, str] | None = None) -> str:
    """``assistant``, ``user/replay``, ``user/tool_result``, ``control_response/initialize``, …"""
    t = msg.get("type")
    if t == "system":
        return f"system/{msg.get('subtype')}"
    if t == "result":
        return f"result/{msg.get('subtype')}"
    if t == "control_request":
        return f"control_request/{msg['request'].get('subtype')}"
    if t == "control_response":
        rid = msg["response"].get("request_id")
        sub = (answered or {}).get(rid, "echo")
        return f"control_response/{sub}/{msg['response'].get('subtype')}"
    if t == "user":
        if msg.get("isReplay"):
            return "user/replay"
        content = msg["message"]["content"]
        if isinstance(content, list) and content and content[0].get("type") == "tool_result":
            return "user/tool_result"
        return "user/text"
    if t == "stream_event":
        return f"stream_event/{msg['event'].get('type')}"
    return str(t)


def shape(msg: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in msg.items():
        out[key] = json_type(value)
        if key in _NESTED and isinstance(value, dict):
            for sub, subvalue in value.items():
                out[f"{key}.{sub}"] = json_type(subvalue)
                if key == "response" and sub == "response" and isinstance(subvalue, dict):
                    for leaf, leafvalue in subvalue.items():
                        out[f"response.response.{leaf}"] = json_type(leafvalue)
    return out


def answered_subtypes(records: Iterable[Record]) -> dict[str, str]:
    """request_id → subtype of every control_request the driver sent."""
    out = {}
    for r in records:
        if r.dir == "stdin" and isinstance(r.msg, dict) and r.msg.get("type") == "control_request":
            out[r.msg["request_id"]] = r.msg["request"]["subtype"]
    return out


def stdout_kinds(records: list[Record]) -> list[str]:
    answered = answered_subtypes(records)
    return [kind(r.msg, answered) for r in records if r.dir == "stdout"]


def common_fields() -> dict[str, dict[str, set[str]]]:
    """kind → field path → the value types seen, for paths present in every recorded occurrence."""
    per_kind: dict[str, list[dict[str, str]]] = {}
    for path in [*FIXTURES.glob("*.jsonl"), *FIXTURES.glob("v*/*.jsonl")]:
        if path.name.startswith(("api_requests", "sdk_url", "print_mode")):
            continue
        records = load(path.name, path.parent.name if path.parent != FIXTURES else "")
        answered = answered_subtypes(records)
        for r in records:
            if r.dir == "stdout":
                per_kind.setdefault(kind(r.msg, answered), []).append(shape(r.msg))
    out: dict[str, dict[str, set[str]]] = {}
    for k, shapes in per_kind.items():
        keys = set.intersection(*(set(s) for s in shapes))
        out[k] = {key: {s[key] for s in shapes} for key in keys}
    return out


def shape_problems(fixture_msg: dict[str, Any], ours: dict[str, Any], k: str,
                   common: dict[str, dict[str, set[str]]]) -> list[str]:
    problems = []
    ours_shape = shape(ours)
    theirs = shape(fixture_msg)
    for path, types in sorted(common.get(k, {}).items()):
        if path not in ours_shape:
            problems.append(f"{k}: missing field {path}")
            continue
        expected = theirs.get(path)
        if expected is not None and ours_shape[path] != expected and ours_shape[path] not in types:
            problems.append(f"{k}: field {path} is {ours_shape[path]}, the CLI wrote {expected}")
    if fixture_msg.get("type") in ("assistant", "user") and isinstance(fixture_msg.get("message"), dict):
        a = [b.get("type") for b in fixture_msg["message"].get("content", []) if isinstance(b, dict)]
        b = [c.get("type") for c in ours["message"].get("content", []) if isinstance(c, dict)]
        if isinstance(fixture_msg["message"].get("content"), list) and a != b:
            problems.append(f"{k}: content block types {b}, the CLI wrote {a}")
    return problems
