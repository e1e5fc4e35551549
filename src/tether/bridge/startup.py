"""How ``tether remote-control`` starts (docs/protocol.md §11.1).

Before the bridge exists: :func:`preflight` asks the server who we are and how it wants bridges
to behave, and turns every way that can go wrong into a :class:`StartupError` whose message says
what to do next; :func:`git_info` collects the branch and remote of the directory (best effort).

The bridge's first step (:func:`start_bridge`): register the machine, resume or create the
directory's session, write the crash-recovery pointer, record the directory claim. A server that
cannot be reached meanwhile (restarting, 5xx) is retried with the poll loop's connection budget
(:class:`~tether.bridge.reconnecting.Reconnecting`); only a refusal (401/403/404/410) or the
budget running out ends the start.
"""

from __future__ import annotations

import asyncio
import logging
import math
import pathlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from tether import __version__
from tether.bridge import pointer as pointers
from tether.bridge.context import BridgeContext
from tether.bridge.reconnecting import Reconnecting
from tether.bridge.status import connect_url, session_url
from tether.client.api import ApiClient, BridgeConfig, repository_context
from tether.errors import ApiError, ApiUnavailable, BridgeFatalError, NotLoggedIn, ProtocolError, TetherError
from tether.protocol import versions
from tether.protocol.api_status import refused_login
from tether.protocol.ids import id_body, is_valid_id, to_compat_session_id
from tether.protocol.server_url import is_plaintext_remote

__all__ = ["ARCHIVE_WORDS", "GitInfo", "Preflight", "StartupError", "StartupStopped", "git_info", "preflight",
           "start_bridge", "version_ok"]

log = logging.getLogger("tether.bridge.startup")

T = TypeVar("T")


class StartupError(TetherError):
    """The bridge cannot start; the message says why and what to do."""

    status = 400
    error_type = "startup_error"


class StartupStopped(StartupError):
    """A stop (Ctrl-C, SIGTERM) was asked for while the start waited to retry the server."""

    error_type = "startup_stopped"


@dataclass(frozen=True)
class GitInfo:
    root: pathlib.Path | None
    branch: str | None
    remote_url: str | None

    @property
    def is_repo(self) -> bool:
        return self.root is not None


async def _git(directory: pathlib.Path, *args: str) -> str | None:
    try:
        proc = await asyncio.create_subprocess_exec(
            "git", *args, cwd=directory, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    except OSError:
        return None
    try:
        async with asyncio.timeout(10):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    text = out.decode(errors="replace").strip()
    return text if proc.returncode == 0 and text else None


async def git_info(directory: pathlib.Path) -> GitInfo:
    root = await _git(directory, "rev-parse", "--show-toplevel")
    if root is None:
        return GitInfo(None, None, None)
    branch = await _git(directory, "rev-parse", "--abbrev-ref", "HEAD")
    remote = await _git(directory, "remote", "get-url", "origin")
    return GitInfo(pathlib.Path(root), None if branch == "HEAD" else branch, _public_remote(remote))


def _public_remote(url: str | None) -> str | None:
    """The remote URL without credentials (``https://user:token@host/…`` → ``https://host/…``)."""
    if not url:
        return None
    return re.sub(r"^(https?://)[^/@]+@", r"\1", url)


def version_ok(minimum: object, current: str = __version__) -> bool:
    return versions.version_ok(minimum, current)


@dataclass(frozen=True)
class Preflight:
    me: dict[str, Any]
    config: BridgeConfig


async def preflight(api: ApiClient) -> Preflight:
    """Logged in, server reachable, Remote Control allowed, version new enough."""
    url = api.server
    if is_plaintext_remote(url):
        raise StartupError(f"Refusing plain http:// to a remote server ({url}): the bridge's tokens would travel "
                           "in clear text. Use https://, or run the server on this machine.")
    try:
        me = await api.me()
        config = await api.bridge_config()
    except NotLoggedIn as exc:
        raise StartupError(exc.message) from None
    except ApiUnavailable as exc:
        raise StartupError(f"Cannot reach {url} ({exc.reason}). Is the server running? Start one with "
                           "`tether server` (or `tether up`), or pass --server URL.") from None
    except BridgeFatalError as exc:
        if exc.status == 401:
            creds = api.credentials
            raise StartupError(refused_login(url, from_env=creds is not None and creds.source == "env")) from None
        raise StartupError(exc.message) from None
    except (ApiError, ProtocolError) as exc:
        raise StartupError(f"{url} answered strangely: {exc.message}") from None
    policy = me.get("policy") if isinstance(me.get("policy"), dict) else {}
    if isinstance(policy, dict) and policy.get("allow_remote_control") is False:
        raise StartupError("Remote Control is turned off by your organisation's policy. An owner can turn it on "
                           "in the web settings or with `tether admin policy --allow-remote-control`.")
    if me.get("role") == "viewer":
        raise StartupError("Your role is viewer: viewers cannot run a bridge. Ask an owner for the member role.")
    minimum = config.raw.get("min_version")
    if not version_ok(minimum):
        raise StartupError(f"{url} needs tether {minimum} or newer for Remote Control; this is {__version__}. "
                           "Upgrade tether and try again.")
    return Preflight(me, config)


# ---- the bridge's start (register, the directory's session, pointer, claim) ----------------------

ARCHIVE_WORDS: Final = {
    "user": " (archived by a person)", "bridge_stopped": " (its bridge was stopped)",
    "bridge_failed": " (its bridge stopped after an error)", "session_ended": " (its agent exited)",
    "session_timeout": " (it ran past --session-timeout)",
    "replaced": " (a new bridge in its directory started a fresh session)",
}
"""Why a session was archived, in the words that follow "is archived"."""


async def start_bridge(ctx: BridgeContext, retry: Reconnecting) -> None:
    """Re-attach a resumed session's environment (``--continue`` / ``--session-id``), register
    (E1), ``bridge/reconnect`` the resumed session (E7) or create one in the directory (S1), write
    the crash-recovery pointer and record the directory claim. Raises :class:`StartupError`
    (:class:`StartupStopped` when a stop was asked for while it waited to retry)."""
    o = ctx.options
    resume_env: str | None = None
    if o.resume_session_id is not None:
        resume_env = await _resumable_environment(ctx, retry, o.resume_session_id)
    elif o.create_initial_session:
        await _replace_previous(ctx)
    else:
        pointers.clear_pointer(o.directory, o.home)  # a stale pointer of an earlier run
    reattached = await _register(ctx, retry, resume_env)
    if o.resume_session_id is not None:
        if reattached:
            await _reconnect_resumed(ctx, retry, o.resume_session_id)
        else:
            ctx.sink.event("warning", f"Could not re-attach environment {resume_env} (it expired); "
                           "starting a fresh session instead.")
            await _create_initial_session(ctx)
    elif o.create_initial_session:
        await _create_initial_session(ctx)
    if ctx.initial_session_id is not None:
        _write_pointer(ctx)
    if o.claim is not None:
        o.claim.record(environment_id=ctx.environment_id, session_id=ctx.initial_session_id, server=ctx.server)
    ctx.set_state("ready")


async def _register(ctx: BridgeContext, retry: Reconnecting, resume_env: str | None) -> bool:
    """E1; True when ``resume_env`` was re-attached."""
    o = ctx.options
    try:
        reg = await _retrying(ctx, retry, "Registering this machine", lambda: ctx.api.register_environment(
            machine_name=o.machine_name, directory=str(o.directory), branch=o.branch,
            git_repo_url=o.git_repo_url, max_sessions=ctx.max_sessions, worker_type=o.agent.worker_type,
            environment_id=resume_env, kind=o.environment_kind))
    except BridgeFatalError as exc:
        if exc.status == 404:
            raise StartupError("Remote Control environments are not available on this server.") from None
        raise StartupError(f"Registering this machine failed: {exc.message}") from None
    ctx.environment_id, ctx.environment_secret = reg.environment_id, reg.environment_secret
    ctx.sink.event("registered", f"Registered {o.machine_name} as {reg.environment_id} ({_mode_words(ctx)}).",
                   environment_id=reg.environment_id, max_sessions=ctx.max_sessions, spawn_mode=ctx.spawn_mode,
                   url=connect_url(ctx.server, reg.environment_id), reattached=reg.reattached)
    return reg.reattached


async def _replace_previous(ctx: BridgeContext) -> None:
    """A pointer left here by an earlier bridge (stopped with Ctrl-C, or crashed) names a
    session nobody resumed. A fresh session is about to take its place: archive the old one
    as ``replaced`` first, so that the server records the new one as its successor (a pointer
    of another server's session, or one already archived, changes nothing)."""
    o = ctx.options
    found = pointers.read_pointer(o.directory, o.home, ttl=math.inf)
    pointers.clear_pointer(o.directory, o.home)
    if found is None:
        return
    sid = to_compat_session_id(found.pointer.session_id)
    try:
        archived_now = await ctx.api.archive_session(sid, reason="replaced")
    except TetherError as exc:
        log.info("the previous session %s of this directory was not archived: %s", sid, exc.message)
        return
    if archived_now:
        ctx.sink.event("session_replaced", f"Archived session {sid}, which the last bridge here left open; "
                       f"the new session continues it (`{o.resume_command}` would have resumed it).",
                       session_id=sid)


async def _retrying(ctx: BridgeContext, retry: Reconnecting, doing: str, call: Callable[[], Awaitable[T]]) -> T:
    """``call()`` until it gets through, on the poll loop's connection budget: a server that cannot
    be reached or answers 5xx / 429 / another non-fatal error is retried (with a ``start_retry``
    event and the live display's countdown); a :class:`BridgeFatalError` passes through at once.
    Raises :class:`StartupError` when the budget runs out, :class:`StartupStopped` on a stop."""
    while True:
        try:
            result = await call()
        except BridgeFatalError:
            raise
        except ApiUnavailable as exc:
            decision = await retry.wait("connection", exc.message, None, event="start_retry", doing=doing)
            message = exc.message
        except (ApiError, ProtocolError) as exc:
            decision = await retry.wait("general", exc.message, getattr(exc, "retry_after", None),
                                        event="start_retry", doing=doing)
            message = exc.message
        else:
            retry.succeeded()
            return result
        if decision.delay is None:
            resume = (f" The session is kept: run `{ctx.options.resume_command}` again once the server is back."
                      if ctx.options.resume_session_id is not None else "")
            raise StartupError(f"{doing} failed; gave up reaching the server after {decision.elapsed:.0f} s: "
                               f"{message.rstrip('.')}.{resume}")
        if ctx.shutdown.is_set():
            raise StartupStopped(f"Stopped ({ctx.shutdown_reason}) before the bridge was up: {doing.lower()} "
                                 "had not got through yet.")


def _mode_words(ctx: BridgeContext) -> str:
    if ctx.options.workspaces is not None:
        return f"capacity {ctx.max_sessions}; each session in its own work directory"
    if ctx.spawn_mode == "session":
        return "single session; exits when it ends"
    where = "an isolated worktree" if ctx.spawn_mode == "worktree" else "the current directory"
    return f"capacity {ctx.max_sessions}; new sessions in {where}"


async def _resumable_environment(ctx: BridgeContext, retry: Reconnecting, session_id: str) -> str:
    """The environment ``--continue`` re-attaches: the one the (not archived) session is bound to."""
    try:
        session = await _retrying(ctx, retry, f"Looking up session {session_id}",
                                  lambda: ctx.api.get_session(session_id))
    except BridgeFatalError as exc:
        if exc.status == 404:
            raise StartupError(f"Session {session_id} was not found; it cannot be resumed.") from None
        raise StartupError(f"Cannot resume {session_id}: {exc.message}") from None
    status = session.get("session_status") or session.get("status")
    if status == "archived":
        successor = session.get("successor_session_id")
        after = f" It continues in {successor}." if isinstance(successor, str) and successor else ""
        why = ARCHIVE_WORDS.get(str(session.get("archive_reason")), "")
        raise StartupError(f"Session {session_id} is archived{why}; it cannot be resumed.{after} "
                           "Run this again without --continue for a new session.")
    env = session.get("environment_id")
    if not is_valid_id(env):
        raise StartupError(f"Session {session_id} is not bound to an environment; it cannot be resumed here.")
    assert isinstance(env, str)
    return env


async def _reconnect_resumed(ctx: BridgeContext, retry: Reconnecting, session_id: str) -> None:
    env = ctx.environment_id
    assert env is not None
    try:
        await _retrying(ctx, retry, f"Resuming session {session_id}",
                        lambda: ctx.api.reconnect_session(env, session_id))
    except BridgeFatalError as exc:
        raise StartupError(f"Cannot resume {session_id}: {exc.message}") from None
    ctx.initial_session_id = to_compat_session_id(session_id)
    ctx.to_archive[id_body(session_id)] = ctx.initial_session_id
    ctx.sink.event("session_resumed", f"Resuming session {ctx.initial_session_id}.",
                   session_id=ctx.initial_session_id, url=session_url(ctx.server, session_id))


async def _create_initial_session(ctx: BridgeContext) -> None:
    """S1 in the directory; a failure is a warning, not fatal (docs/protocol.md §11.1 step 14)."""
    o = ctx.options
    try:
        session = await ctx.api.create_session(environment_id=ctx.environment_id, title=o.name,
                                               permission_mode=o.permission_mode,
                                               session_context=repository_context(o.git_repo_url, o.branch))
    except (TetherError, ValueError) as exc:
        msg = exc.message if isinstance(exc, TetherError) else str(exc)
        ctx.sink.event("warning", f"Could not create a session in {o.directory}: {msg}")
        return
    sid = str(session["id"])
    ctx.initial_session_id = sid
    ctx.to_archive[id_body(sid)] = sid
    ctx.sink.event("session_created", f"Created session {sid} in {o.directory}.", session_id=sid,
                   url=session_url(ctx.server, sid))


def _write_pointer(ctx: BridgeContext) -> None:
    assert ctx.initial_session_id is not None and ctx.environment_id is not None
    try:
        pointers.write_pointer(ctx.options.directory, pointers.BridgePointer(
            ctx.initial_session_id, ctx.environment_id, "standalone"), ctx.options.home)
        ctx.pointer_written = True
    except OSError as exc:
        ctx.sink.event("warning", f"Could not write the crash-recovery pointer: {exc}")
