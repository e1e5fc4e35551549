"""Per-project bridge preferences: the spawn mode chosen with ``w`` (docs/protocol.md §11.1 step 6, §11.7).

Stored next to the crash-recovery pointer: ``$TETHER_HOME/projects/<sanitised dir>/bridge-settings.json``
holding ``{"spawnMode": "same-dir" | "worktree"}``. Unreadable content is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
from typing import Final

from tether.bridge.pointer import sanitise_path
from tether.client.credentials import tether_home
from tether.protocol.bridge_policy import SpawnMode

SETTINGS_FILE: Final = "bridge-settings.json"


def settings_path(directory: pathlib.Path | str, home: pathlib.Path | None = None) -> pathlib.Path:
    return (home or tether_home()) / "projects" / sanitise_path(os.path.realpath(directory)) / SETTINGS_FILE


def load_spawn_mode(directory: pathlib.Path | str, home: pathlib.Path | None = None) -> SpawnMode | None:
    try:
        data = json.loads(settings_path(directory, home).read_text())
    except (OSError, ValueError):
        return None
    mode = data.get("spawnMode") if isinstance(data, dict) else None
    if mode == "same-dir":
        return "same-dir"
    if mode == "worktree":
        return "worktree"
    return None


def save_spawn_mode(directory: pathlib.Path | str, mode: SpawnMode, home: pathlib.Path | None = None) -> None:
    path = settings_path(directory, home)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(json.dumps({"spawnMode": mode}))
