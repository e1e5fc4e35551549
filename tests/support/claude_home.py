"""A throwaway HOME in which the stock `claude` TUI runs offline against the fake Messages API
(docs/protocol.md §14.7): onboarding done, the test API key approved, the project trusted. Never
used on a person's real ~/.claude.json."""

from __future__ import annotations

import json
import os
import pathlib
import sys
from typing import Any

from tests.support.bridge import claude_bin

API_KEY = "sk-test-tether-claude"


def seed_claude_home(home: pathlib.Path, *projects: pathlib.Path, api_key: str = API_KEY) -> None:
    home.mkdir(parents=True, exist_ok=True)
    config = {"hasCompletedOnboarding": True,
              # the CLI remembers an approved key by its last 20 characters
              "customApiKeyResponses": {"approved": [api_key[-20:]], "rejected": []},
              "projects": {str(p): {"hasTrustDialogAccepted": True} for p in projects}}
    (home / ".claude.json").write_text(json.dumps(config))


def tether_claude_env(*, home: pathlib.Path, tether_home: pathlib.Path, server_url: str, token: str,
                      anthropic_url: str, **extra: str) -> dict[str, str]:
    """The environment of a `tether claude` run in tmux (exactly this, nothing inherited)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TERM": "xterm-256color",
           "LANG": "C.UTF-8", "TETHER_HOME": str(tether_home), "TETHER_SERVER": server_url, "TETHER_TOKEN": token,
           "TETHER_CLAUDE_PATH": str(claude_bin()), "ANTHROPIC_BASE_URL": anthropic_url, "ANTHROPIC_API_KEY": API_KEY,
           "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "PYTHONUNBUFFERED": "1"}
    env.update(extra)
    return env


def tether_claude_argv(*claude_args: str, log_file: pathlib.Path | None = None) -> list[str]:
    argv = [sys.executable, "-m", "tether.cli.main", "claude"]
    if log_file is not None:
        argv += ["--log-file", str(log_file)]
    return [*argv, *claude_args]


def transcript_records(home: pathlib.Path, cwd: pathlib.Path) -> list[dict[str, Any]]:
    """Every record of every transcript of ``cwd`` under ``home`` (file order)."""
    from tether.protocol.claude_transcript import project_slug

    out: list[dict[str, Any]] = []
    for path in sorted((home / ".claude" / "projects" / project_slug(str(cwd))).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out
