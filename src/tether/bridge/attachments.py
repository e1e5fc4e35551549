"""Downloading a prompt's web-composer attachments for the agent (docs/protocol.md §7.6, §3.7;
docs/protocol.md §7.6).

:class:`AttachmentFetcher` is the thin I/O half of :mod:`tether.protocol.attachments`: for a
user message with ``file_attachments`` it downloads every file at once
(``GET {server}/api/oauth/files/{file_uuid}/content``, 30 s each), stores it under
``<cwd>/.tether/attachments/<session>/`` and returns the message with ``@"path"`` references
in front of its last text block. A file that cannot be had (non-200, too large, no answer in
time, a disk error) is skipped and reported, never fatal: the prompt goes on without it.

One piece serves every place a prompt reaches an agent: the standalone bridge's session host
and ``tether agent --sdk-url`` download with the session's worker token; the REPL bridge core
(the ``tether`` REPL, ``tether claude``) with the person's login, read fresh per prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import httpx

from tether import __version__
from tether.errors import TetherError
from tether.protocol import attachments as pa
from tether.protocol.attachments import Skipped, skipped_warning
from tether.protocol.replay_buffer import message_uuid

log = logging.getLogger("tether.bridge.attachments")

DOWNLOAD_TIMEOUT: Final = 30.0  # docs/protocol.md §3.7
MAX_FILE_BYTES: Final = 64 << 20  # well above the server's upload limit (20 MiB by default): a bound, not a policy
_ERROR_BODY_BYTES: Final = 4096

TokenSource = Callable[[], Awaitable[str]]
"""A credential read when a prompt's files are fetched (a login that refreshes itself)."""


@dataclass(frozen=True)
class Resolved:
    message: dict[str, Any]
    """The message to give the agent: references in place of ``file_attachments``."""
    stored: tuple[str, ...]
    """The paths the references name."""
    skipped: tuple[Skipped, ...]

    def warning(self, session_id: str) -> dict[str, Any] | None:
        """The ``system/warning`` event naming what was skipped and why (None: nothing was)."""
        if not self.skipped:
            return None
        return skipped_warning(self.skipped, prompt_uuid=message_uuid(self.message), uuid=str(uuidlib.uuid4()),
                               session_id=session_id)


class AttachmentFetcher:
    """Resolves the attachments of one session's prompts (owned by its :class:`SessionHost`, or
    made per prompt by the REPL bridge core)."""

    def __init__(self, base_url: str, token: str | TokenSource, cwd: str, session_id: str, *,
                 timeout: float = DOWNLOAD_TIMEOUT, max_bytes: int = MAX_FILE_BYTES,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.cwd = cwd
        self.folder = pa.session_folder(session_id)
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._token = token
        self._transport = transport

    def set_token(self, token: str | TokenSource) -> None:
        """The session's fresh worker token (re-dispatch): used from the next download on."""
        self._token = token

    async def resolve(self, message: Mapping[str, Any]) -> Resolved:
        found, skipped = pa.attachments_of(message)
        results: list[str | Skipped] = []
        if found:
            try:
                token = self._token if isinstance(self._token, str) else await self._token()
            except TetherError as exc:
                why = f"there is no credential to download it with ({exc.message})"
                results = [Skipped(a.file_name, a.file_uuid, why) for a in found]
            else:
                async with httpx.AsyncClient(timeout=self.timeout, transport=self._transport,
                                             headers={"user-agent": f"tether/{__version__}"}) as client:
                    async with asyncio.TaskGroup() as tg:
                        tasks = [tg.create_task(self._fetch(client, a, token)) for a in found]
                results = [t.result() for t in tasks]
        stored = [r for r in results if isinstance(r, str)]
        skipped += [r for r in results if isinstance(r, Skipped)]
        return Resolved(pa.with_references(message, stored), tuple(stored), tuple(skipped))

    async def _fetch(self, client: httpx.AsyncClient, item: pa.Attachment, token: str) -> str | Skipped:
        data = await self._download(client, item, token)
        if isinstance(data, Skipped):
            return data
        try:
            return await asyncio.to_thread(self._store, item, data)
        except OSError as exc:
            return Skipped(item.file_name, item.file_uuid, f"it could not be saved: {exc.strerror or exc}")

    async def _download(self, client: httpx.AsyncClient, item: pa.Attachment, token: str) -> bytes | Skipped:
        url = f"{self.base_url}/api/oauth/files/{quote(item.file_uuid, safe='')}/content"

        def skip(reason: str) -> Skipped:
            return Skipped(item.file_name, item.file_uuid, reason)

        try:
            async with asyncio.timeout(self.timeout):
                async with client.stream("GET", url, headers={"authorization": f"Bearer {token}"}) as resp:
                    body = bytearray()
                    cap = self.max_bytes if resp.status_code == 200 else _ERROR_BODY_BYTES
                    async for chunk in resp.aiter_bytes():
                        body += chunk
                        if len(body) > cap:
                            if resp.status_code == 200:
                                return skip(f"it is larger than {self.max_bytes} bytes")
                            break
                    if resp.status_code != 200:
                        return skip(f"the server answered {resp.status_code}{_error_detail(bytes(body))}")
                    return bytes(body)
        except TimeoutError:
            return skip(f"the download took longer than {self.timeout:g} s")
        except httpx.HTTPError as exc:
            return skip(f"the download failed: {exc or type(exc).__name__}")

    def _store(self, item: pa.Attachment, data: bytes) -> str:
        """Write the file (atomically) and return the path its reference names. Blocking."""
        relative = os.path.join(self.folder, item.local_name)
        target = os.path.join(self.cwd, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        _ignore_in_git(os.path.join(self.cwd, *pa.ATTACHMENTS_DIR))
        tmp = f"{target}.part-{os.getpid()}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return pa.reference_path(self.cwd, relative)


def _ignore_in_git(folder: str) -> None:
    """Keep downloaded attachments out of ``git status`` of the project they land in."""
    path = os.path.join(folder, ".gitignore")
    if not os.path.exists(path):
        with contextlib.suppress(OSError), open(path, "w") as fh:
            fh.write("# files attached to prompts from the web client (tether)\n*\n")


def _error_detail(body: bytes) -> str:
    """`` (<error.message>)`` from the one JSON error shape, when the body is one."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return ""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return f" ({message})" if isinstance(message, str) and message else ""
