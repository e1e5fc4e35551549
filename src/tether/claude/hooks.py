"""The hooks ``tether claude`` gives the TUI (through ``--settings``), so it learns what the
transcript does not say (docs/protocol.md §14.7):

* ``SessionStart``: the session the TUI is writing (its uuid and transcript file): the one it was
  started with, the one ``--continue`` or the ``--resume`` picker chose, a new one after ``/clear``;
* ``PermissionRequest``: a permission dialog is open at the terminal (clients show "waiting at the
  terminal").

Each hook runs a tiny Python one-liner that appends the hook's JSON input as one line to a file in
a private directory; nothing is answered, so the TUI behaves exactly as without it. The person's own
``--settings`` (a file or a JSON string) is merged in: their hooks run as before, next to these.
"""

from __future__ import annotations

import json
import pathlib
import shlex
import sys
from typing import Any, Final

HOOKED_EVENTS: Final = ("SessionStart", "PermissionRequest")
_APPEND: Final = ("import os,sys;d=sys.stdin.buffer.read().strip().replace(b'\\n',b' ');"
                  "f=os.open(sys.argv[1],os.O_WRONLY|os.O_APPEND|os.O_CREAT,0o600);os.write(f,d+b'\\n')")


class SettingsError(ValueError):
    """The person's ``--settings`` could not be read."""


def hook_command(events_file: pathlib.Path) -> str:
    # -I -S: no site packages, no environment: starts in ~20 ms
    return shlex.join([sys.executable, "-I", "-S", "-c", _APPEND, str(events_file)])


def load_settings(value: str | None) -> dict[str, Any]:
    """The person's ``--settings``: a JSON object, or the path of a file holding one."""
    if value is None:
        return {}
    text = value
    if not value.lstrip().startswith("{"):
        try:
            text = pathlib.Path(value).expanduser().read_text()
        except OSError as exc:
            raise SettingsError(f"--settings {value}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SettingsError(f"--settings {value}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SettingsError(f"--settings {value}: a JSON object is needed")
    return data


def merged_settings(own: dict[str, Any], events_file: pathlib.Path) -> dict[str, Any]:
    """``own`` with Tether's hooks added to theirs."""
    out = dict(own)
    hooks = dict(out.get("hooks") or {}) if isinstance(out.get("hooks"), dict) else {}
    entry = {"type": "command", "command": hook_command(events_file), "timeout": 10}
    for event in HOOKED_EVENTS:
        groups = list(hooks.get(event) or []) if isinstance(hooks.get(event), list) else []
        group: dict[str, Any] = {"hooks": [entry]}
        if event == "PermissionRequest":
            group["matcher"] = "*"
        groups.append(group)
        hooks[event] = groups
    out["hooks"] = hooks
    return out


def write_settings(directory: pathlib.Path, own: str | None) -> tuple[pathlib.Path, pathlib.Path]:
    """The settings file to pass with ``--settings`` and the file the hooks append to, both in
    ``directory`` (private: the settings may hold the person's secrets)."""
    events = directory / "hooks.jsonl"
    events.touch(mode=0o600)
    settings = directory / "settings.json"
    settings.write_text(json.dumps(merged_settings(load_settings(own), events)))
    settings.chmod(0o600)
    return settings, events
