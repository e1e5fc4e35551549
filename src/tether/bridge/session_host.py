"""The session host: one session's transport, its agent process and the pump between them
(docs/protocol.md §5, docs/flows.md §1–§5).

Inbound (server → agent): the server's ``initialize`` is answered here (the agent's own
capabilities when the host initialised it, else the REPL bridge's minimal reply); user
messages and control messages are deduplicated by ``uuid`` and written to the agent's
stdin; a prompt's web-composer attachments are downloaded first and named in the prompt as
``@"path"`` references (:mod:`tether.bridge.attachments`); ``keep_alive`` and
``update_environment_variables`` never reach the agent (the agent never sees the session
token). Outbound (agent → server): every stdout line is parsed and written to the transport;
bad lines (not JSON, not an object with a ``type``) are logged and counted, never fatal. A
message over the server's event limit is not relayed as is (:mod:`tether.bridge.oversize`): a
``control_request`` is answered here (``can_use_tool`` denied, others an error) so the agent
never waits for an answer nobody can give, and other messages go up shortened where a copy
fits. Lines over a larger cap are skipped unread (bounded memory).

Along the way the host keeps a :class:`~tether.protocol.session_tracker.SessionTracker`
(state, activities, title) and the agent's last stderr lines.

:meth:`SessionHost.run` holds every task in one task group and returns a
:class:`SessionOutcome` when the session ends: the agent exited (completed / failed /
interrupted by a signal), :meth:`SessionHost.stop` was called (interrupted), or the
transport closed for good. Shutdown order, each step with a deadline: stop reading the
transport → end the agent (EOF, then SIGTERM, then SIGKILL) → forward its last output →
close the transport (3 s flush) → cancel what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid as uuidlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from tether.bridge import oversize
from tether.bridge.agent_process import AgentProcess, AgentSpec
from tether.bridge.attachments import AttachmentFetcher
from tether.client.transport import Message, SessionTransport, TransportClosed, TransportError
from tether.protocol import messages as m
from tether.protocol.ccr import CLOSE_SESSION_GONE
from tether.protocol.line_splitter import Oversize, Piece
from tether.protocol.replay_buffer import message_uuid
from tether.protocol.session_tracker import Activity, SessionState, SessionTracker
from tether.protocol.uuid_ring import BoundedUUIDSet

log = logging.getLogger("tether.bridge.host")

OutcomeStatus = Literal["completed", "failed", "interrupted"]
FORWARDED_INBOUND: Final = frozenset({m.USER, m.CONTROL_REQUEST, m.CONTROL_RESPONSE, m.CONTROL_CANCEL_REQUEST})


@dataclass(frozen=True)
class HostConfig:
    initialize_agent: bool = True  # send the agent an initialize at start (its reply answers the server's)
    agent_init_timeout: float = 10.0
    max_line_bytes: int = 1 << 20  # the server's event limit (docs/protocol.md §4.8): larger output is not relayed as is
    max_parse_bytes: int = 64 << 20  # larger agent lines are skipped unread; smaller ones are read to be answered
    dedup_capacity: int = 2000
    stdin_capacity: int = 1000
    eof_grace: float = 10.0  # transport gone: time the agent gets to exit after end of input
    term_grace: float = 10.0  # SIGTERM → SIGKILL
    output_drain: float = 5.0  # reading the agent's last output after it exited
    close_grace: float = 3.0  # transport flush on close


@dataclass(frozen=True)
class SessionOutcome:
    status: OutcomeStatus
    exit_code: int | None
    error: str | None = None
    transport: TransportClosed | None = None


@dataclass
class HostStats:
    inbound: int = 0
    forwarded_to_agent: int = 0
    duplicates_dropped: int = 0
    ignored_inbound: int = 0
    initialize_answered: int = 0
    outbound: int = 0
    bad_lines: int = 0
    oversize_lines: int = 0  # over the event limit (answered, shortened or dropped) or over max_parse_bytes
    shortened_lines: int = 0  # oversized messages relayed as a shortened copy or an error reply
    answered_for_agent: int = 0  # agent control_requests the host answered: they could not be relayed
    write_failures: int = 0
    rejected_inbound: int = 0  # malformed inbound messages kept from the agent
    attachments_stored: int = 0  # web-composer files downloaded for the agent
    attachments_skipped: int = 0  # ... and those it did not get (a warning event says why)


_GONE_CODES: Final = frozenset({CLOSE_SESSION_GONE, 404, 410})
"""Permanent transport closes that mean the session is archived or its work ended on the server."""


def exit_status(returncode: int | None, *, stopped_by_host: bool) -> OutcomeStatus:
    """docs/protocol.md §5: SIGTERM/SIGINT → interrupted, 0 → completed, else failed; a stop the
    host asked for is an interruption whatever the agent's status."""
    if stopped_by_host:
        return "interrupted"
    if returncode == 0:
        return "completed"
    if returncode is not None and returncode < 0 and -returncode in (signal.SIGTERM, signal.SIGINT):
        return "interrupted"
    return "failed"


def inbound_problem(msg: Message) -> str | None:
    """Why an agent would refuse ``msg`` on its stdin (and end its session: the stock CLI and
    ``tether agent`` treat unreadable input as fatal), or None. The server stores what clients
    post without checking these shapes, so the host checks them before forwarding."""
    kind = msg.get("type")
    if kind == m.USER:
        inner = msg.get("message")
        if not isinstance(inner, dict) or inner.get("role", "user") != "user":
            return "a user message needs 'message' with role 'user'"
        if not isinstance(inner.get("content"), str | list):
            return "a user message's content must be a string or a list"
        uuid = msg.get("uuid")
        if uuid is not None and (not isinstance(uuid, str) or not uuid):
            return "'uuid' must be a non-empty string"
    elif kind in (m.CONTROL_REQUEST, m.CONTROL_CANCEL_REQUEST) and m.request_id_of(msg) is None:
        return f"a {kind} needs a request_id"
    elif kind == m.CONTROL_REQUEST and not isinstance(msg.get("request"), dict):
        return "a control_request needs a 'request' object"
    return None


def initialize_reply(capabilities: dict[str, Any] | None, pid: int) -> dict[str, Any]:
    """The ``initialize`` success payload: the agent's when known, else the REPL bridge's (docs/protocol.md §7.3)."""
    caps = capabilities or {}
    return {
        "commands": caps.get("commands", []),
        "agents": caps.get("agents", []),
        "output_style": caps.get("output_style", "normal"),
        "available_output_styles": caps.get("available_output_styles", ["normal"]),
        "models": caps.get("models", []),
        "account": caps.get("account", {}),
        "pid": pid,
    }


class AgentHandle(Protocol):
    """What the host drives: an :class:`AgentProcess`, or an agent loop running in this process
    (``tether agent --sdk-url``, :class:`tether.agent.inprocess.InProcessAgent`)."""

    killed_by_host: bool

    @property
    def pid(self) -> int | None: ...
    @property
    def returncode(self) -> int | None: ...
    @property
    def stderr_tail(self) -> Sequence[str]: ...
    async def start(self) -> None: ...
    async def send(self, message: Mapping[str, Any]) -> bool: ...
    def end_input(self) -> None: ...
    async def write_loop(self) -> None: ...
    async def stderr_loop(self) -> None: ...
    def stdout_lines(self) -> AsyncIterator[Piece]: ...
    async def wait(self, timeout: float | None = None) -> int | None: ...
    async def terminate(self, grace: float) -> int | None: ...


class SessionHost:
    def __init__(
        self,
        session_id: str,
        transport: SessionTransport,
        agent: AgentSpec,
        config: HostConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        process: AgentHandle | None = None,
        attachments: AttachmentFetcher | None = None,
    ) -> None:
        self.session_id = session_id
        self._transport = transport
        self._cfg = config or HostConfig()
        self._clock = clock
        self._agent: AgentHandle = process if process is not None else AgentProcess(
            agent, max_line_bytes=self._cfg.max_parse_bytes, stdin_capacity=self._cfg.stdin_capacity)
        self._tracker = SessionTracker(cwd=agent.cwd)
        self._attachments = attachments
        self._seen = BoundedUUIDSet(self._cfg.dedup_capacity)
        self._stop = asyncio.Event()
        self._started = asyncio.Event()
        self._agent_caps: dict[str, Any] | None = None
        self._agent_caps_ready = asyncio.Event()
        self._init_request_id: str | None = None
        self._outcome: SessionOutcome | None = None
        self._stop_notice: str | None = None
        self.stats = HostStats()

    # -- views -------------------------------------------------------------------------

    @property
    def transport(self) -> SessionTransport:
        return self._transport

    @property
    def state(self) -> SessionState:
        return self._tracker.state

    @property
    def activities(self) -> tuple[Activity, ...]:
        return self._tracker.activities

    @property
    def title(self) -> str | None:
        return self._tracker.title

    @property
    def tracker(self) -> SessionTracker:
        return self._tracker

    @property
    def stderr_tail(self) -> tuple[str, ...]:
        return tuple(self._agent.stderr_tail)

    @property
    def pid(self) -> int | None:
        return self._agent.pid

    @property
    def agent_capabilities(self) -> dict[str, Any] | None:
        return self._agent_caps

    @property
    def outcome(self) -> SessionOutcome | None:
        return self._outcome

    # -- control -----------------------------------------------------------------------

    def set_token(self, token: str) -> None:
        """A fresh session token (re-dispatched work): for the transport and attachment downloads
        (the agent never sees it)."""
        self._transport.set_token(token)
        if self._attachments is not None:
            self._attachments.set_token(token)

    def stop(self, notice: str | None = None) -> None:
        """End the session: the agent is stopped (SIGTERM, then SIGKILL), the outcome is ``interrupted``.
        ``notice`` (e.g. a limit was reached) goes to the session as an error ``result`` once the
        agent's own last output has gone up, so whoever watches sees why the turn ended."""
        if notice is not None and self._stop_notice is None and not self._stop.is_set():
            self._stop_notice = notice
        self._stop.set()

    def end_input(self) -> None:
        """End the agent's input: it finishes what it was given and exits (``tether claude`` hands
        the session back to the terminal this way); the session then ends as the agent's exit says."""
        self._agent.end_input()

    async def wait_started(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._started.wait()
        return self._started.is_set()

    # -- run ---------------------------------------------------------------------------

    async def run(self) -> SessionOutcome:
        try:
            await self._agent.start()
        except OSError as exc:
            log.error("session %s: cannot start the agent: %s", self.session_id, exc)
            await self._transport.close(0)
            self._outcome = SessionOutcome("failed", None, f"cannot start the agent: {exc}")
            return self._outcome
        try:
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(self._agent.write_loop(), name="agent-stdin")
                stderr = tg.create_task(self._agent.stderr_loop(), name="agent-stderr")
                pump_out = tg.create_task(self._pump_outbound(), name="agent-to-server")
                await self._initialize_agent(pump_out)
                transport = tg.create_task(self._transport.run(), name="transport")
                pump_in = tg.create_task(self._pump_inbound(), name="server-to-agent")
                exited = tg.create_task(self._agent.wait(), name="agent-exit")
                stopped = tg.create_task(self._stop.wait(), name="stop")
                self._started.set()
                await asyncio.wait({exited, stopped, transport}, return_when=asyncio.FIRST_COMPLETED)
                self._outcome = await self._shutdown(pump_in, pump_out, transport)
                # 5. whatever is left (a grandchild may hold stderr open) is cancelled
                for task in (writer, stderr, pump_out, pump_in, exited, stopped, transport):
                    task.cancel()
        finally:
            if self._agent.returncode is None:  # cancelled from outside: never leave the agent behind
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._agent.terminate(self._cfg.term_grace))
        assert self._outcome is not None
        log.info("session %s ended: %s (exit %s)", self.session_id, self._outcome.status, self._outcome.exit_code)
        return self._outcome

    async def _shutdown(self, pump_in: asyncio.Task[None], pump_out: asyncio.Task[None],
                        transport: asyncio.Task[TransportClosed]) -> SessionOutcome:
        cfg = self._cfg
        stopped_by_host = self._stop.is_set()
        # 1. nothing more reaches the agent
        pump_in.cancel()
        # 2. the agent ends: by itself, at end of input, or by signal
        ended_by_archive = False
        if self._agent.returncode is None:
            if stopped_by_host:
                await self._agent.terminate(cfg.term_grace)
            else:  # the transport closed for good
                ended_by_archive = self._session_gone()
                if ended_by_archive:  # archived (or deleted) on the server: an ordinary end, not a fault
                    log.info("session %s: the session is gone on the server (%s); ending the agent's input",
                             self.session_id, self._transport.closed_info)
                else:
                    log.warning("session %s: the transport closed for good (%s); ending the agent's input",
                                self.session_id, self._transport.closed_info)
                self._agent.end_input()
                if await self._agent.wait(cfg.eof_grace) is None:
                    await self._agent.terminate(cfg.term_grace)
        code = self._agent.returncode
        # 3. its last output goes up
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(cfg.output_drain):
                await asyncio.shield(pump_out)
        if self._stop_notice is not None and not transport.done():
            self._write({"type": "result", "subtype": "error_during_execution", "is_error": True,
                         "errors": [self._stop_notice], "result": self._stop_notice, "duration_ms": 0,
                         "num_turns": 0, "session_id": "", "uuid": str(uuidlib.uuid4())})
        # 4. the transport flushes and closes
        if not transport.done():
            await self._transport.close(cfg.close_grace)
        status = exit_status(code, stopped_by_host=stopped_by_host or self._agent.killed_by_host)
        if status == "failed" and ended_by_archive:
            # its input ended because the session was archived, and it exits with its last turn's
            # status (1 after a stopped turn, as the stock CLI): an interruption, not a failure
            status = "interrupted"
        error = None
        if status == "failed":
            error = self._agent.stderr_tail[-1] if self._agent.stderr_tail else f"the agent exited with status {code}"
        return SessionOutcome(status, code, error, self._transport.closed_info)

    def _session_gone(self) -> bool:
        """The transport stopped because the session is archived or gone: close 4001 (the v1 socket's
        close, or the v2 client's stop on 409 ``already_archived`` / 404s / 410), or the v2 event
        stream refused with 404 / 410 (docs/protocol.md §8.5), whichever the archive reached first."""
        closed = self._transport.closed_info
        return closed is not None and closed.reason == "permanent" and closed.code in _GONE_CODES

    # -- agent initialisation ------------------------------------------------------------

    async def _initialize_agent(self, pump_out: asyncio.Task[None]) -> None:
        """Ask the agent for its capabilities; stop waiting when it answers, exits, is stopped or times out."""
        if not self._cfg.initialize_agent:
            return
        self._init_request_id = f"tether-host-{uuidlib.uuid4()}"
        await self._agent.send(m.control_request(m.INITIALIZE, self._init_request_id))
        ready = asyncio.ensure_future(self._agent_caps_ready.wait())
        stopped = asyncio.ensure_future(self._stop.wait())
        waiters: set[asyncio.Future[Any]] = {ready, stopped, pump_out}
        try:
            await asyncio.wait(waiters, timeout=self._cfg.agent_init_timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            stopped.cancel()
        if self._agent_caps is None:
            log.warning("session %s: the agent did not answer initialize within %.0f s",
                        self.session_id, self._cfg.agent_init_timeout)

    # -- inbound -----------------------------------------------------------------------

    async def _pump_inbound(self) -> None:
        async for message in self._transport.incoming():
            await self._handle_inbound(message)

    async def _handle_inbound(self, msg: Message) -> None:
        self.stats.inbound += 1
        kind = msg.get("type")
        if kind == m.CONTROL_REQUEST and m.control_subtype(msg) == m.INITIALIZE:
            self._answer_initialize(msg)
            return
        if kind not in FORWARDED_INBOUND:
            self.stats.ignored_inbound += 1
            if kind != m.KEEP_ALIVE:
                log.info("session %s: not forwarding a %r message to the agent", self.session_id, kind)
            return
        uuid = message_uuid(msg)
        if uuid is not None and not self._seen.add(uuid):
            self.stats.duplicates_dropped += 1
            log.debug("session %s: dropping re-delivered %s %s", self.session_id, kind, uuid)
            return
        if kind == m.CONTROL_CANCEL_REQUEST and await self._settled_elsewhere(msg):
            return
        problem = inbound_problem(msg)
        if problem is not None:  # an agent ends its session on input it cannot read: keep it from the agent
            self.stats.rejected_inbound += 1
            log.warning("session %s: not forwarding a malformed %s message to the agent: %s",
                        self.session_id, kind, problem)
            return
        if kind == m.CONTROL_RESPONSE:
            msg = m.normalize_control_keys(msg)
        elif kind == m.USER and "file_attachments" in msg:
            msg = await self._resolve_attachments(msg)
        self._tracker.observe_inbound(msg, self._clock())
        if await self._agent.send(msg):
            self.stats.forwarded_to_agent += 1
        else:
            log.warning("session %s: the agent takes no more input; dropped a %s", self.session_id, kind)

    async def _resolve_attachments(self, msg: Message) -> Message:
        """Download the prompt's files and point the agent at them (docs/protocol.md §7.1). In line, so
        prompts and controls keep their order; bounded by the 30 s download timeout."""
        if self._attachments is None:
            log.warning("session %s: a prompt carries attachments but this host cannot download them",
                        self.session_id)
            return msg
        resolved = await self._attachments.resolve(msg)
        self.stats.attachments_stored += len(resolved.stored)
        self.stats.attachments_skipped += len(resolved.skipped)
        warning = resolved.warning(self.session_id)
        if warning is not None:
            log.warning("session %s: %s", self.session_id, warning["message"])
            self._write(warning)
        return resolved.message

    async def _settled_elsewhere(self, msg: Message) -> bool:
        """The server settled one of the agent's open permission requests without an answer (its
        lease lapsed while this machine slept, docs/protocol.md §4.6): agents never read an
        inbound cancel, so the agent gets a deny instead of waiting for ever."""
        request_id = m.request_id_of(msg)
        tool = self._tracker.pending_tool(request_id)
        if request_id is None or tool is None:
            return False
        reason = msg.get("reason")
        why = f"expired on the server ({reason})" if isinstance(reason, str) and reason else "was cancelled"
        deny = m.PermissionDeny(f"The {tool or 'tool'} call was not approved: its permission request {why} "
                                "before anyone answered it.")
        reply = m.control_success(request_id, deny.to_json())
        self.stats.answered_for_agent += 1
        log.warning("session %s: the server settled permission request %s (%s); told the agent it was denied",
                    self.session_id, request_id, reason)
        self._tracker.observe_inbound(reply, self._clock())
        if not await self._agent.send(reply):
            log.warning("session %s: the agent takes no more input; dropped the answer", self.session_id)
        return True

    def _answer_initialize(self, msg: Message) -> None:
        request_id = m.request_id_of(msg)
        if request_id is None:
            log.warning("session %s: initialize without a request_id", self.session_id)
            return
        reply = initialize_reply(self._agent_caps, self._agent.pid or os.getpid())
        self.stats.initialize_answered += 1
        self._write(m.control_success(request_id, reply))

    async def _answer_for_agent(self, msg: Message, why: str, *, too_big: bool = False) -> None:
        """Answer an agent's control_request that no client will see (else the agent waits for ever)."""
        reply = oversize.refusal(msg, why, too_big=too_big)
        if reply is None:
            log.warning("session %s: cannot answer a %s without a request_id", self.session_id, oversize.describe(msg))
            return
        self.stats.answered_for_agent += 1
        log.warning("session %s: answered the agent's %s %s here: it %s", self.session_id,
                    oversize.describe(msg), m.request_id_of(msg), why)
        self._tracker.observe_inbound(reply, self._clock())  # settles it, had it been relayed
        if not await self._agent.send(reply):
            log.warning("session %s: the agent takes no more input; dropped the answer", self.session_id)

    # -- outbound ----------------------------------------------------------------------

    async def _pump_outbound(self) -> None:
        cap = self._cfg.max_parse_bytes
        async for piece in self._agent.stdout_lines():
            if isinstance(piece, Oversize) or len(piece) > cap:
                self._skip_unread(piece.size if isinstance(piece, Oversize) else len(piece))
                continue
            if not piece.strip():
                continue
            try:
                msg = m.parse_line(piece, cap)
            except m.MessageError as exc:
                self.stats.bad_lines += 1
                log.warning("session %s: bad output from the agent (%s): %.120r", self.session_id, exc, piece)
                continue
            await self._handle_outbound(msg, len(piece))

    def _skip_unread(self, size: int) -> None:
        self.stats.oversize_lines += 1
        log.warning("session %s: the agent wrote a %d-byte line (read limit %d); skipped unread",
                    self.session_id, size, self._cfg.max_parse_bytes)
        self._tracker.note("error", f"Too large to read: agent output ({oversize.human(size)})", self._clock())

    async def _handle_outbound(self, msg: Message, raw_size: int) -> None:
        if self._take_init_reply(msg) or msg.get("type") == m.KEEP_ALIVE:
            return
        size = oversize.size_over(msg, raw_size, self._cfg.max_line_bytes)
        if size is None:
            await self._relay(msg)
        else:
            await self._oversized(msg, size)

    def _take_init_reply(self, msg: Message) -> bool:
        """The agent's answer to the host's own initialize: its capabilities, kept here."""
        if not m.is_control_response(msg) or self._init_request_id is None \
                or m.response_request_id(msg) != self._init_request_id:
            return False
        inner = m.response_payload(msg) or {}
        caps = inner.get("response")
        self._agent_caps = caps if isinstance(caps, dict) and inner.get("subtype") == "success" else {}
        self._agent_caps_ready.set()
        return True

    async def _relay(self, msg: Message) -> None:
        self.stats.outbound += 1
        if self._tracker.observe_outbound(msg, self._clock()):
            log.debug("session %s: state %s", self.session_id, self._tracker.state)
        error = self._write(msg)
        if error is not None and m.is_control_request(msg):  # no client will see it: answer it here
            await self._answer_for_agent(msg, f"could not be relayed to remote clients ({error})")

    async def _oversized(self, msg: Message, size: int) -> None:
        self.stats.oversize_lines += 1
        limit = self._cfg.max_line_bytes
        what = oversize.describe(msg)
        self._tracker.note("error", f"Too large to relay: {what} ({oversize.human(size)})", self._clock())
        if m.is_control_request(msg):
            await self._answer_for_agent(msg, oversize.too_large(size, limit), too_big=True)
            return
        copy = oversize.replacement(msg, size, limit)
        if copy is None:
            log.warning("session %s: the agent's %s is %d bytes (limit %d); not relayed",
                        self.session_id, what, size, limit)
            return
        self.stats.shortened_lines += 1
        log.warning("session %s: the agent's %s is %d bytes (limit %d); relayed a small replacement",
                    self.session_id, what, size, limit)
        await self._relay(copy)

    def _write(self, msg: Message) -> TransportError | None:
        try:
            self._transport.write(msg)
        except TransportError as exc:
            self.stats.write_failures += 1
            log.warning("session %s: could not queue a %s for the server: %s", self.session_id, msg.get("type"), exc)
            return exc
        return None
