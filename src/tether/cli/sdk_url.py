"""``tether agent --sdk-url URL``: the reference child contract (docs/protocol.md §5).

A session host and the agent loop in one process: the host owns the transport and talks to
:class:`~tether.agent.inprocess.InProcessAgent` through in-memory queues instead of pipes.

* credential: ``CLAUDE_CODE_SESSION_ACCESS_TOKEN`` (required);
* transport: v2 (SSE + ``CCRClient``) when ``CLAUDE_CODE_USE_CCR_V2`` is truthy, with the epoch
  from ``CLAUDE_CODE_WORKER_EPOCH`` and the URL ``https://…/v1/code/sessions/cse_…`` or the
  session-ingress form ``wss://…/v1/session_ingress/ws/<id>`` (turned into ``https://…``);
  otherwise v1 (``HybridTransport``) for a ``ws(s)://…/session_ingress/ws/<id>`` URL;
* stdin: only ``update_environment_variables`` lines carrying a fresh
  ``CLAUDE_CODE_SESSION_ACCESS_TOKEN`` are read (token rotation by a bridge); the session's
  input comes from the server;
* exit: when the transport closes for good (1; e.g. 4090 when a newer worker took over) or on
  SIGTERM/SIGINT (0 after a clean stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from tether.agent.backends.base import ModelBackend
from tether.agent.inprocess import InProcessAgent
from tether.agent.main import VERSION, UsageError, choose_backend, make_backend
from tether.agent.options import AgentOptions
from tether.agent.stdio import Line, read_frames, stderr_line
from tether.bridge.agent_process import AgentSpec
from tether.bridge.attachments import AttachmentFetcher
from tether.bridge.session_host import SessionHost
from tether.client.hybrid import HybridTransport
from tether.client.transport import SessionTransport
from tether.client.v2 import V2Transport
from tether.protocol.ccr import api_base_of_session_url, session_id_of_url, session_url_from_sdk_url
from tether.protocol.epochs import EpochInvalid, parse_epoch
from tether.protocol.ids import is_valid_id, to_compat_session_id
from tether.protocol.messages import UPDATE_ENVIRONMENT_VARIABLES, MessageError, parse_line

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
_TRUTHY: Final = frozenset({"1", "true", "yes", "on"})


class SdkUrlError(Exception):
    """The URL or the environment cannot make a worker; the message goes to stderr, exit 1."""


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUTHY


def ingress_target(sdk_url: str) -> tuple[str, str]:
    """``(base URL, session id)`` of a v1 session-ingress ``--sdk-url``
    (``wss://host/prefix/v1/session_ingress/ws/<id>`` → ``https://host/prefix``)."""
    parts = urlsplit(sdk_url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise SdkUrlError(f"Unsupported protocol in --sdk-url {sdk_url!r}: without CLAUDE_CODE_USE_CCR_V2 "
                          "it must be a ws:// or wss:// session-ingress URL")
    path = parts.path.rstrip("/")
    head, sep, sid = path.rpartition("/session_ingress/ws/")
    if not sep or not is_valid_id(sid):
        raise SdkUrlError(f"--sdk-url {sdk_url!r} is not a …/session_ingress/ws/<session id> URL")
    for version in ("/v1", "/v2"):
        head = head.removesuffix(version) if head.endswith(version) else head
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}{head}", sid


def run_sdk_url(opts: AgentOptions, backend_name: str | None, scenario_path: str | None, sdk_url: str,
                env: Mapping[str, str] | None = None) -> int:
    """Connect to the session at ``sdk_url`` by itself and serve it until the transport closes."""
    env = os.environ if env is None else env
    level = logging.DEBUG if env.get("TETHER_DEBUG") else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr, format="tether agent: %(name)s: %(message)s")
    try:
        token = env.get("CLAUDE_CODE_SESSION_ACCESS_TOKEN", "")
        if not token:
            raise SdkUrlError("SDKStartup: worker registration failed (no_auth_headers), exiting")
        name, notice = choose_backend(backend_name, scenario_path)
        backend = make_backend(name, scenario_path, opts.model)
        transport, session_id, base_url = _transport(sdk_url, token, env)
    except (SdkUrlError, UsageError) as exc:
        stderr_line(f"error: {exc}")
        return EXIT_FAILED
    if notice:
        stderr_line(notice)
    fetcher = AttachmentFetcher(base_url, token, opts.cwd, to_compat_session_id(session_id))
    return asyncio.run(_serve(opts, backend, transport, session_id, fetcher))


def _transport(sdk_url: str, token: str, env: Mapping[str, str]) -> tuple[SessionTransport, str, str]:
    """The transport, the session id and the server's base URL (attachments are downloaded there)."""
    if truthy(env.get("CLAUDE_CODE_USE_CCR_V2")):
        raw = env.get("CLAUDE_CODE_WORKER_EPOCH", "")
        if not raw:
            raise SdkUrlError("SDKStartup: worker registration failed (missing_epoch), exiting")
        try:
            epoch = parse_epoch(raw)
            session_url = session_url_from_sdk_url(sdk_url)
        except (EpochInvalid, ValueError) as exc:
            raise SdkUrlError(str(exc)) from None
        return (V2Transport(session_url, token, epoch=epoch), session_id_of_url(session_url),
                api_base_of_session_url(session_url))
    base, sid = ingress_target(sdk_url)
    return HybridTransport(base, sid, token), sid, base


async def _serve(opts: AgentOptions, backend: ModelBackend, transport: SessionTransport, session_id: str,
                 attachments: AttachmentFetcher) -> int:
    agent = InProcessAgent(opts, backend, VERSION)
    host = SessionHost(session_id, transport, AgentSpec(command=(), cwd=opts.cwd), process=agent,
                       attachments=attachments)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    for signum in signals:
        loop.add_signal_handler(signum, host.stop)
    tokens = asyncio.ensure_future(_read_token_updates(host))
    try:
        outcome = await host.run()
    finally:
        tokens.cancel()
        for signum in signals:
            loop.remove_signal_handler(signum)
    closed = outcome.transport
    if closed is not None and closed.reason in ("permanent", "gave_up"):
        stderr_line(f"the session transport closed for good (code {closed.code}): {closed.detail}")
        return EXIT_FAILED
    if outcome.status == "interrupted":
        return EXIT_OK
    return outcome.exit_code if outcome.exit_code is not None else EXIT_FAILED


async def _read_token_updates(host: SessionHost) -> None:
    """Apply ``update_environment_variables`` lines on stdin to the transport's token (only when
    stdin is a pipe or socket: a terminal or ``/dev/null`` carries no token updates)."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return
    with contextlib.suppress(OSError, ValueError):
        async for frame in read_frames(sys.stdin.buffer, 1 << 20):
            if not isinstance(frame, Line) or not frame.data.strip():
                continue
            try:
                msg = parse_line(frame.data)
            except MessageError:
                continue
            variables = msg.get("variables")
            if msg["type"] == UPDATE_ENVIRONMENT_VARIABLES and isinstance(variables, dict):
                token = variables.get("CLAUDE_CODE_SESSION_ACCESS_TOKEN")
                if isinstance(token, str) and token:
                    host.set_token(token)
