from __future__ import annotations

import pytest

from tether.protocol.tool_activity import display_path, shorten, tool_activity


@pytest.mark.parametrize(("name", "args", "text"), [
    ("Edit", {"file_path": "/repo/src/app.py"}, "Editing src/app.py"),
    ("MultiEdit", {"file_path": "/elsewhere/x.py"}, "Editing /elsewhere/x.py"),
    ("Write", {"file_path": "/repo/README.md"}, "Writing README.md"),
    ("Read", {"file_path": "/repo"}, "Reading ."),
    ("Bash", {"command": "pytest -q\necho done"}, "Running pytest -q"),
    ("Grep", {"pattern": "TODO"}, "Searching for TODO"),
    ("Glob", {"pattern": "**/*.py"}, "Searching for **/*.py"),
    ("LS", {"path": "/repo/src"}, "Listing src"),
    ("WebFetch", {"url": "https://example.com"}, "Fetching https://example.com"),
    ("TodoWrite", {}, "Updating the to-do list"),
    ("Edit", {}, "Using Edit"),
    ("mcp__x__y", {"a": 1}, "Using mcp__x__y"),
    ("", None, "Using a tool"),
])
def test_activity_texts(name: str, args: dict[str, object] | None, text: str) -> None:
    assert tool_activity(name, args, cwd="/repo/") == text


def test_shorten_and_paths() -> None:
    assert shorten("x" * 100, 10) == "x" * 9 + "…"
    assert shorten("   ") == ""
    assert display_path("/repository/a", "/repo") == "/repository/a"
    assert display_path("/repo/a", None) == "/repo/a"
