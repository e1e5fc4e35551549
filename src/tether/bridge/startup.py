"""Startup checks of ``tether remote-control`` and their messages (reference §5.2 steps 1–10).

:func:`preflight` asks the server who we are and how it wants bridges to behave, and turns
every way that can go wrong into a :class:`StartupError` whose message says what to do
next. :func:`git_info` collects the branch and remote of the directory (best effort).
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import re
from dataclasses import dataclass
from typing import Any

from tether import __version__
from tether.client.api import ApiClient, BridgeConfig
from tether.errors import ApiError, ApiUnavailable, BridgeFatalError, NotLoggedIn, ProtocolError, TetherError
from tether.protocol import versions
from tether.protocol.server_url import is_plaintext_remote

log = logging.getLogger("tether.bridge.startup")


class StartupError(TetherError):
    """The bridge cannot start; the message says why and what to do."""

    status = 400
    error_type = "startup_error"


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
            raise StartupError(f"The login for {url} is no longer valid ({exc.message}). "
                               "Run `tether login` again.") from None
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
