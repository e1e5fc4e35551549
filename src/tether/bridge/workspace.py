"""Per-session work directories of a runner (``tether runner``, docs/protocol.md §11.9).

Each session of a runner gets ``<data dir>/sessions/<id>/`` with ``work/`` (the checkout of the work
secret's ``sources``, the agent's working directory), ``home/`` (the agent's ``HOME``), ``tmp/`` and,
when the secret carries one, ``mcp.json``. :meth:`Workspaces.prepare` builds it and says how to start
the agent there (environment, extra arguments, the bubblewrap wrapper, the resource limits applied in
the child before it runs); :meth:`Workspaces.remove` deletes it when the session ends or the runner
stops. Every decision is in :mod:`tether.protocol.runner_policy`; this module does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pathlib
import resource
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from tether.bridge.agent_process import CREDENTIAL_ENV
from tether.errors import TetherError
from tether.protocol.runner_policy import (
    CloneSource,
    Limits,
    RunnerPolicyError,
    agent_arguments,
    agent_environment,
    auth_entries,
    bwrap_argv,
    check_clone_url,
    checkout_dir,
    clone_argv,
    git_env,
    is_inside,
    mcp_arguments,
    parse_sources,
    rlimits,
    session_dir,
)
from tether.protocol.work_secret import WorkSecret

log = logging.getLogger("tether.bridge.workspace")

CLONE_TIMEOUT_S: Final = 300.0
_STDERR_CHARS: Final = 600


class WorkspaceError(TetherError):
    """The session's directory could not be prepared (a refused source, a failed clone)."""

    status = 500
    error_type = "workspace_error"


@dataclass(frozen=True)
class RunnerSettings:
    root: pathlib.Path
    """The runner's data directory (absolute, resolved); sessions live in ``root/sessions``."""
    limits: Limits = field(default_factory=Limits)
    bwrap: str | None = None
    """The bubblewrap executable, or None for no sandbox."""
    local_roots: tuple[str, ...] = ()
    """Resolved directories whose repositories may be cloned by path (``--allow-local``)."""
    hide: tuple[str, ...] = ()
    """Directories the sandboxed agent must not see (the runner's own data, the server's)."""
    git: str = "git"
    clone_timeout_s: float = CLONE_TIMEOUT_S


@dataclass
class Workspace:
    session_id: str
    path: pathlib.Path
    cwd: pathlib.Path
    env: dict[str, str]
    args: list[str]
    warnings: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


class Workspaces:
    def __init__(self, settings: RunnerSettings, agent_kind: str) -> None:
        self.settings = settings
        self.agent_kind = agent_kind
        self.sessions_root = settings.root / "sessions"
        self._rlimits = rlimits(settings.limits, [n for n in dir(resource) if n.startswith("RLIMIT_")])

    @property
    def sandboxed(self) -> bool:
        return self.settings.bwrap is not None

    def wipe_stale(self) -> list[pathlib.Path]:
        """Remove session directories an earlier run left behind (it crashed or was killed)."""
        removed = []
        if self.sessions_root.is_dir():
            for child in self.sessions_root.iterdir():
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
        return removed

    async def prepare(self, session_id: str, secret: WorkSecret) -> Workspace:
        try:
            path = pathlib.Path(session_dir(str(self.settings.root), session_id))
            sources = self._resolve_local(parse_sources(secret.sources, local_roots=self.settings.local_roots))
        except RunnerPolicyError as exc:
            raise WorkspaceError(f"the runner refused the session's sources: {exc}", status=400) from None
        cwd_s, clones = checkout_dir(str(path), sources)
        cwd = pathlib.Path(cwd_s)
        ws = Workspace(session_id, path, cwd, {}, [], sources=[s.url for s in sources])
        try:
            await asyncio.to_thread(_lay_out, path, cwd, len(clones) == 1)
            auth_env, git_token, warnings = auth_entries(secret.auth)
            for source, dest in clones:
                await self._clone(source, pathlib.Path(dest), git_token)
            env, env_warnings = agent_environment(secret.extra.get("environment_variables"))
            args, arg_warnings = agent_arguments(secret.extra.get("claude_code_args"))
            mcp = secret.extra.get("mcp_config")
            mcp_args, mcp_warning = mcp_arguments(mcp, self.agent_kind, str(path / "mcp.json"))
            if mcp_args:
                await asyncio.to_thread(_write_private, path / "mcp.json", json.dumps(mcp))
        except BaseException:
            await self.remove(ws)
            raise
        ws.env = {**env, **auth_env, "HOME": str(path / "home"), "TMPDIR": str(path / "tmp")}
        ws.args = [*args, *mcp_args]
        ws.warnings = [*warnings, *env_warnings, *arg_warnings, *([mcp_warning] if mcp_warning else [])]
        return ws

    def _resolve_local(self, sources: list[CloneSource]) -> list[CloneSource]:
        """Local paths are checked again after symlinks are resolved (a link must not lead out)."""
        out = []
        for s in sources:
            if s.local:
                real = check_clone_url(os.path.realpath(s.url), local_roots=self.settings.local_roots)
                s = CloneSource(real.url, s.revision, True, s.token)
            out.append(s)
        return out

    async def _clone(self, source: CloneSource, dest: pathlib.Path, token: str | None) -> None:
        env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV}
        env.update(git_env(source, token))
        proc = await asyncio.create_subprocess_exec(
            *clone_argv(self.settings.git, source, str(dest)), env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        try:
            async with asyncio.timeout(self.settings.clone_timeout_s):
                _, err = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
            raise WorkspaceError(f"cloning {source.url} took longer than {self.settings.clone_timeout_s:g} s") \
                from None
        if proc.returncode != 0:
            text = err.decode("utf-8", "replace").strip()[-_STDERR_CHARS:]
            raise WorkspaceError(f"cloning {source.url} failed: {text or f'git exited with {proc.returncode}'}")
        log.info("cloned %s into %s", source.url, dest)

    async def remove(self, ws: Workspace) -> None:
        """Delete the session's directory (only ever one inside ``root/sessions``)."""
        if not is_inside(str(self.sessions_root), str(ws.path)) or ws.path == self.sessions_root:
            raise WorkspaceError(f"refusing to remove {ws.path}: it is not a session directory of this runner")
        await asyncio.to_thread(shutil.rmtree, ws.path, True)
        if ws.path.exists():
            raise WorkspaceError(f"could not remove {ws.path}")

    # -- how the agent starts there ---------------------------------------------------------------

    def wrapper(self, ws: Workspace) -> Callable[[list[str]], list[str]] | None:
        """The bubblewrap wrapper for this session's agent (None without a sandbox)."""
        bwrap = self.settings.bwrap
        if bwrap is None:
            return None
        hide = tuple(p for p in self.settings.hide if os.path.isdir(p))

        def wrap(argv: list[str]) -> list[str]:
            return bwrap_argv(bwrap, argv, writable=[str(ws.path)], cwd=str(ws.cwd), hide=hide)

        return wrap

    def preexec(self) -> Callable[[], None] | None:
        """Set the resource limits in the agent's process (inherited by everything it starts)."""
        pairs = [(getattr(resource, name), value) for name, value in self._rlimits]
        if not pairs:
            return None

        def apply() -> None:
            for res, value in pairs:
                soft, hard = resource.getrlimit(res)
                cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
                resource.setrlimit(res, (cap, cap))

        return apply


def find_bwrap(mode: str, which: Callable[[str], str | None] = shutil.which) -> tuple[str | None, str]:
    """``--sandbox auto|on|off`` → (bwrap path or None, a line saying what was decided)."""
    found = which("bwrap")
    if mode == "off":
        return None, "sandbox: off (--sandbox off)"
    if found:
        return found, f"sandbox: bubblewrap ({found})"
    if mode == "on":
        raise WorkspaceError("--sandbox on needs bubblewrap (`bwrap`), which is not on PATH. Install it "
                             "(Debian: apt-get install bubblewrap) or use --sandbox auto.")
    return None, "sandbox: off (bubblewrap not installed; sessions are only separated by directory and limits)"


def _lay_out(path: pathlib.Path, cwd: pathlib.Path, clone_into_cwd: bool) -> None:
    """A fresh session directory (a stale one of an earlier start of this session goes first)."""
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
    for sub in ("home", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    if not clone_into_cwd:  # git creates the working directory itself when it clones into it
        cwd.mkdir(parents=True, exist_ok=True)


def _write_private(path: pathlib.Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def resolved_dirs(paths: Sequence[str | os.PathLike[str]]) -> tuple[str, ...]:
    return tuple(os.path.realpath(p) for p in paths)
