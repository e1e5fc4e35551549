"""The in-process REPL bridge core shared by both generations (docs/protocol.md §12.2–§12.10).

:class:`ReplBridgeCore` carries one conversation of a front end to one server session over
one transport at a time. The generations (:mod:`~tether.bridge.repl.env_based` v1,
:mod:`~tether.bridge.repl.env_less` v2) decide how a session and its transports come to be;
this module does what they share:

* **writes**: the front end's messages, permission questions and turn results go to the current
  transport, or queue behind the :class:`~tether.protocol.flush_gate.FlushGate` while there is
  none (the gate is active whenever no transport is connected and flushed);
* **flush**: when a transport connects it first gets what its predecessor had not delivered, then
  the history and the queued messages (:func:`~tether.protocol.repl_bridge.plan_flush`), then the
  state is ``connected``; nothing is sent twice (the posted ring), nothing lost;
* **inbound**: prompts, permission answers and control requests from clients, routed by the
  :class:`~tether.protocol.repl_bridge.InboundFilter` (echoes and re-deliveries dropped); a
  prompt's web-composer attachments are downloaded (with the person's login) into
  ``<directory>/.tether/attachments/<session>/`` and named as ``@"path"`` references before the
  front end gets it, in line, as the standalone bridge's session host does (docs/protocol.md §7.6);
* **permissions**: the terminal/remote race (:class:`~tether.protocol.permission_race.PermissionRace`);
* **titles**: :class:`~tether.protocol.titles.ReplTitles`, pushed with ``PATCH`` (derived ones as
  ``explicit: false``, so a title a person chose on the web is kept, and adopted here).

:meth:`ReplBridgeCore.run` owns every task of the bridge in one task group: start (raises
:class:`InitFailed`), the generation's loops, the transport, then the ordered teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import uuid as uuidlib
from collections.abc import Callable, Coroutine, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from tether.bridge.aio import guarded as guarded_loop
from tether.bridge.attachments import AttachmentFetcher
from tether.bridge.repl.frontend import BridgeInfo, FrontEnd, Message, ReplBridgeConfig, ReplBridgeOptions
from tether.bridge.status import connect_url, session_url
from tether.client.api import ApiClient
from tether.client.hybrid import boot_clock
from tether.client.transport import SessionTransport, TransportClosed, TransportError, TransportState
from tether.client.v2 import V2Transport
from tether.errors import TetherError
from tether.protocol import messages as m
from tether.protocol.bridge_state import BridgeState, BridgeStatus
from tether.protocol.flush_gate import FlushGate
from tether.protocol.permission_race import PermissionRace
from tether.protocol.permissions import AlreadyResolved
from tether.protocol.repl_bridge import (
    TERMINAL_SUBTYPES,
    InboundFilter,
    InboundKind,
    is_eligible,
    message_uuid,
    plan_control_request,
    plan_flush,
    to_sdk_message,
    turn_result,
)
from tether.protocol.repl_config import CoreKind
from tether.protocol.titles import ReplTitles, TitleUpdate

log = logging.getLogger("tether.bridge.repl")

_SLUG_WORDS = ("amber", "brisk", "cedar", "dune", "ember", "fjord", "grove", "harbor", "iris", "juniper", "kestrel",
               "lumen", "meadow", "nova", "orchid", "pine", "quartz", "river", "sage", "tundra", "umber", "vale",
               "willow", "zephyr")


class InitFailed(TetherError):
    """The bridge could not start; the message is the footer's detail."""

    error_type = "repl_bridge_init_failed"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Sent:
    """``uid in sent``: already in this session's log (posted by us, or a client's)."""

    def __init__(self, inbound: InboundFilter) -> None:
        self._inbound = inbound

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, str) and self._inbound.already_sent(uid)


class ReplBridgeCore:
    kind: CoreKind

    def __init__(self, api: ApiClient, front: FrontEnd, options: ReplBridgeOptions, config: ReplBridgeConfig,
                 *, history_cap: int | None = None, dedup_capacity: int = 2000,
                 clock: Callable[[], float] = boot_clock, rnd: random.Random | None = None) -> None:
        self.api = api
        self.front = front
        self.options = options
        self.config = config
        self.history_cap = options.history_cap if history_cap is None else history_cap
        self._clock = clock
        self._rnd = rnd or random.Random()
        self.status = BridgeStatus(auto_disable_after=config.auto_disable_after_s)
        self.gate: FlushGate[Message] = FlushGate(on_overflow="drop_oldest")
        self.gate.start()  # no transport yet: everything queues
        self.filter = InboundFilter(dedup_capacity)
        self.race = PermissionRace()
        words = [self._rnd.choice(_SLUG_WORDS) for _ in range(2)]
        self.titles = ReplTitles.start(explicit=options.name, renamed=options.renamed,
                                       messages=list(front.transcript()), slug_words=words)
        self.session_id: str | None = None
        self.environment_id: str | None = None
        self._transport: SessionTransport | None = None
        self._flushed: SessionTransport | None = None  # the transport whose flush is done
        self._carried: list[Message] = []  # what a replaced transport had not delivered
        self._sequence: int | None = None  # the SSE resume point carried across v2 transports
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._title_lock = asyncio.Lock()
        self._pushed_title: tuple[str | None, bool] | None = None  # what the server has (title, explicit)
        self._stop = asyncio.Event()
        self.failure: str | None = None
        self.writes = 0

    # ---- views ----------------------------------------------------------------------------------

    @property
    def mirror(self) -> bool:
        return self.options.mirror

    @property
    def transport(self) -> SessionTransport | None:
        return self._transport

    def info(self) -> BridgeInfo:
        sid = self.session_id
        return BridgeInfo(core=self.kind, session_id=sid, session_url=session_url(self.api.server, sid) if sid else None,
                          connect_url=connect_url(self.api.server, self.environment_id) if self.environment_id
                          else None, environment_id=self.environment_id, title=self.titles.title,
                          title_explicit=self.titles.explicit, mirror=self.mirror)

    def _set_state(self, state: BridgeState, detail: str | None = None) -> None:
        if self.status.update(state, detail, self._clock()):
            log.info("bridge state %s%s", state, f" ({detail})" if detail else "")
            self._notify()

    def _notify(self) -> None:
        try:
            self.front.bridge_changed(self.status, self.info())
        except Exception:
            log.exception("the front end failed to show the bridge state")

    # ---- what the front end calls ------------------------------------------------------------------

    def write_messages(self, messages: Iterable[Mapping[str, Any]]) -> None:
        """New messages of the conversation (prompts typed here, the agent's output)."""
        for msg in messages:
            if msg.get("type") == m.USER and not msg.get("isReplay"):
                self._observe_title(msg)
            uid = message_uuid(msg)
            if not is_eligible(msg) or uid is None or self.filter.already_sent(uid):
                continue
            self._send(dict(msg))

    def ask_permission(self, request: Mapping[str, Any]) -> bool:
        """The agent asks for permission: the question goes to every client too (not in mirror
        mode). False when it was not sent (mirror mode, or a malformed request)."""
        if self.mirror:
            return False
        try:
            self.race.open(request, now_iso())
        except m.MessageError as exc:
            log.warning("not sharing a malformed permission request: %s", exc)
            return False
        self._send(dict(request))
        return True

    def answer_permission(self, request_id: str, decision: m.PermissionDecision) -> bool:
        """The person at the terminal answered; False when a client had answered first. A question
        that was never shared (mirror mode, or asked before remote control was on) is just answered."""
        if self.race.get(request_id) is None and not self.race.settled(request_id):
            return True
        try:
            out = self.race.answer_locally(request_id, decision, now_iso())
        except AlreadyResolved:
            return False
        for msg in out:
            self._send(msg)
        return True

    def withdraw_permission(self, request_id: str) -> None:
        """The agent settled a question itself (e.g. after an interrupt): clients drop it."""
        msg = self.race.withdraw(request_id, now_iso())
        if msg is not None:
            self._send(msg)

    def relay(self, message: Mapping[str, Any]) -> None:
        """An agent's output as it is (``tether claude``'s headless run, driven for remote clients:
        stream events, ``system`` messages, its own results): to the transport, or behind the gate.
        Conversation messages are remembered as sent, so a mirror never sends them again; a stream
        event is not queued while the gate holds writes (it is ephemeral)."""
        msg = dict(message)
        uid = message_uuid(msg)
        if is_eligible(msg) and uid is not None and self.filter.already_sent(uid):
            return
        if m.is_ephemeral(msg) and self.gate.active:
            return
        self._send(msg)

    def send_result(self, agent_result: Mapping[str, Any] | None = None) -> None:
        """A turn ended (``sendResult``): clients stop showing it as running."""
        self._send(turn_result(self.session_id or "", str(uuidlib.uuid4()), agent_result))

    def rename(self, title: str) -> None:
        """``/rename``: a title a person chose, never replaced by a derived one."""
        self.titles.rename(title)
        self._notify()
        self._spawn(self._push_title(), "title")

    def stop(self) -> None:
        """Turn remote control off: :meth:`run` tears down in order and returns."""
        self._stop.set()

    # ---- writing ---------------------------------------------------------------------------------

    def _send(self, msg: Message) -> None:
        """A conversation or control message: to the transport, or behind the gate."""
        if self.gate.enqueue(msg):
            if self.gate.dropped:
                log.warning("the flush gate is full; %d oldest message(s) dropped", self.gate.dropped)
            return
        transport = self._transport
        if transport is None:  # the gate is always active without a transport; keep it so
            self.gate.start()
            self.gate.enqueue(msg)
            return
        self._write(transport, msg)

    def _write(self, transport: SessionTransport, msg: Message) -> bool:
        wire = to_sdk_message(msg, self.session_id or "") if is_eligible(msg) else {
            **msg, "session_id": self.session_id or ""}
        try:
            transport.write(wire)
        except TransportError as exc:
            log.warning("could not queue a %s: %s", msg.get("type"), exc)
            return False
        self.writes += 1
        uid = message_uuid(msg)
        if uid is not None and is_eligible(msg):
            self.filter.sent(uid)
        if isinstance(transport, V2Transport) and msg.get("type") == m.USER and not _is_tool_result(msg):
            transport.report_state("running")  # v2 leaves worker status to the worker (docs/protocol.md §12.3 item 9)
        return True

    def _flush(self, transport: SessionTransport) -> None:
        """First writes on a transport that just connected (docs/protocol.md §12.4)."""
        carried, self._carried = self._carried, []
        for msg in carried:  # the server deduplicates by uuid: a re-send is safe
            with contextlib.suppress(TransportError):
                transport.write(msg)
        plan = plan_flush(self.front.transcript(), self.gate.end(), cap=self.history_cap, sent=_Sent(self.filter))
        for planned in plan:
            self._write(transport, dict(planned))
        self._flushed = transport
        log.info("flushed %d message(s) (%d carried over)", len(plan), len(carried))

    # ---- inbound ---------------------------------------------------------------------------------

    async def _pump(self, transport: SessionTransport) -> None:
        async for msg in transport.incoming():
            try:
                route = self.filter.route(msg)
                if route == "prompt":
                    await self._on_prompt(transport, msg)
                else:
                    self._on_inbound(transport, msg, route)
            except Exception:
                log.exception("handling an inbound %s failed", msg.get("type"))

    async def _on_prompt(self, transport: SessionTransport, msg: Message) -> None:
        """A client's prompt, to the front end; its attachments first (in line: what follows it
        waits, so prompts and controls keep their order; bounded by the 30 s download timeout)."""
        if isinstance(transport, V2Transport) and message_uuid(msg):
            transport.ack_delivery(str(msg["uuid"]), "processing")
        self._observe_title(msg)  # the text as the person wrote it, without the references
        if "file_attachments" in msg:
            msg = await self._resolve_attachments(msg)
        self.front.deliver_prompt(dict(msg))

    async def _resolve_attachments(self, msg: Message) -> Message:
        sid = self.session_id or ""
        fetcher = AttachmentFetcher(self.api.server, self.api.access_token, str(self.options.directory), sid)
        resolved = await fetcher.resolve(msg)
        warning = resolved.warning(sid)
        if warning is not None:
            log.warning("%s", warning["message"])
            self._send(warning)
            self.front.bridge_notice(warning["message"])
        return resolved.message

    def _on_inbound(self, transport: SessionTransport, msg: Message, route: InboundKind) -> None:
        if route == "control_request":
            self._on_control_request(transport, msg)
        elif route == "permission_response":
            answer = self.race.answer_remotely(dict(m.normalize_control_keys(msg)), now_iso())
            if answer.outcome == "won" and answer.request_id is not None and answer.decision is not None:
                self.front.permission_settled(answer.request_id, answer.decision)
            elif answer.outcome == "invalid":
                log.warning("ignoring a permission answer: %s", answer.error)
        elif route in ("echo", "redelivery"):
            log.debug("dropped an inbound %s (%s)", msg.get("type"), route)

    def _on_control_request(self, transport: SessionTransport, msg: Message) -> None:
        plan = plan_control_request(msg, outbound_only=self.mirror, pid=os.getpid())
        if plan.action == "ignore" or plan.request_id is None:
            return
        reply = plan.reply
        if plan.action == "delegate":
            error: str | None = None
            if plan.subtype == m.INTERRUPT:
                self.front.interrupt()
            elif plan.subtype == m.SET_MODEL:
                model = plan.request.get("model")
                error = self.front.set_model(model if isinstance(model, str) else None)
            elif plan.subtype in TERMINAL_SUBTYPES:
                error = self.front.terminal_request(plan.subtype, plan.request)
            elif plan.subtype == m.SET_PERMISSION_MODE:
                mode = plan.request.get("mode")
                error = (self.front.set_permission_mode(mode) if isinstance(mode, str)
                         else "set_permission_mode needs a 'mode'")
            reply = m.control_error(plan.request_id, error) if error else m.control_success(plan.request_id)
        if reply is not None:
            with contextlib.suppress(TransportError):
                transport.write({**reply, "session_id": self.session_id or ""})

    # ---- titles ----------------------------------------------------------------------------------

    def _observe_title(self, msg: Mapping[str, Any]) -> None:
        update = self.titles.observe(msg)
        if update is None:
            return
        self._notify()
        if update.step == "placeholder":
            self._spawn(self._push_title(), "title")
        else:
            self._spawn(self._regenerate(update), "title")

    async def _regenerate(self, update: TitleUpdate) -> None:
        title: str | None = None
        try:
            async with asyncio.timeout(self.config.title_timeout_s):
                title = await self.front.generate_title(list(self.titles.texts))
        except TimeoutError:
            log.info("the agent's model did not name the session in time; using the summary")
        except Exception as exc:
            log.info("the agent's model could not name the session (%r); using the summary", exc)
        if self.titles.generated(title or update.title):
            self._notify()
            await self._push_title()

    async def _push_title(self) -> None:
        """Bring the server's title up to date with :attr:`titles`: one PATCH at a time, always
        the title as it is *now* (a placeholder sent late never overwrites a newer title)."""
        async with self._title_lock:
            title, explicit = self.titles.title, self.titles.explicit
            if self.session_id is None or title is None or (title, explicit) == self._pushed_title:
                return  # no session yet: pushed once it exists
            try:
                session = await self.api.update_session_title(self.session_id, title, explicit=explicit)
            except (TetherError, ValueError) as exc:
                log.warning("could not update the session title: %s", exc)
                return
            self._pushed_title = (title, explicit)
            server_title = session.get("title")
            if not explicit and isinstance(server_title, str) and server_title and server_title != title:
                self.titles.rename(server_title)  # a person named it elsewhere (the web): that title wins
                self._pushed_title = (server_title, True)
                self._notify()

    async def _push_initial_title(self) -> None:
        """After the session exists, before it is announced: a derived initial title (an explicit
        one went with its creation)."""
        if self.titles.explicit:
            self._pushed_title = (self.titles.title, True)
            return
        await self._push_title()

    # ---- tasks -----------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str, *, guarded: bool = True) -> None:
        """A background task of this bridge (cancelled at the end of :meth:`run`)."""
        if self._tg is None:
            coro.close()
            return
        work = guarded_loop(coro, name, self._fail, log) if guarded else coro
        task = self._tg.create_task(work, name=f"repl-bridge-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fail(self, detail: str) -> None:
        """Fatal: state ``failed`` and the ordered teardown."""
        self.failure = detail
        self._set_state("failed", detail)
        self._stop.set()

    async def run(self) -> None:
        """Start, serve until :meth:`stop` or a failure, then tear down. Raises :class:`InitFailed`."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                try:
                    await self._start()
                except InitFailed as exc:
                    self.failure = exc.message
                    self._set_state("failed", exc.message)
                    raise
                for name, loop in self._loops():
                    self._spawn(loop, name)
                self._spawn(self._watch_transport(), "watch")
                await self._stop.wait()
                for task in list(self._tasks):  # the loops stop first, then the teardown runs
                    if task.get_name() != "repl-bridge-transport":
                        task.cancel()
                await self._teardown()
                for task in list(self._tasks):
                    task.cancel()
        finally:
            self._tg = None

    # ---- transports ------------------------------------------------------------------------------

    def _install(self, transport: SessionTransport) -> None:
        """Serve ``transport`` from now on (the caller has dropped the previous one)."""
        self._transport = transport
        self._flushed = None
        self._spawn(self._serve(transport), "transport", guarded=False)

    async def _drop_transport(self, grace: float = 0.0) -> None:
        """Stop using the current transport: what it did not deliver is carried to the next one."""
        transport, self._transport, self._flushed = self._transport, None, None
        self.gate.start()
        if transport is None:
            return
        if isinstance(transport, V2Transport):
            self._sequence = transport.high_water
        await transport.close(grace)
        self._carried = transport.undelivered() + self._carried

    async def _serve(self, transport: SessionTransport) -> None:
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(transport.run(), name="repl-bridge-transport-run")
            tg.create_task(self._pump(transport), name="repl-bridge-pump")
            while not run.done() and self._transport is transport:
                if await transport.wait_connected(1.0):
                    break
            if self._transport is transport and transport.state is TransportState.CONNECTED:
                self._flush(transport)
                self._set_state("connected")
            info = await run
        if self._transport is transport:  # it stopped by itself: lost for good
            self._transport, self._flushed = None, None
            self.gate.start()
            if isinstance(transport, V2Transport):
                self._sequence = transport.high_water
            self._carried = transport.undelivered() + self._carried
            self._spawn(self._transport_lost(info), "reconnect")

    async def _watch_transport(self) -> None:
        """The footer follows the transport: ``reconnecting`` while its socket is away."""
        while True:
            await asyncio.sleep(self.config.status_tick_s)
            transport = self._transport
            if transport is None or self._flushed is not transport or self.status.state == "failed":
                continue
            if transport.state is TransportState.CONNECTED:
                self._set_state("connected")
            elif transport.state is TransportState.RECONNECTING:
                self._set_state("reconnecting", "connection lost, reconnecting")

    # ---- what a generation provides --------------------------------------------------------------

    async def _start(self) -> None:
        raise NotImplementedError

    def _loops(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        return []

    async def _transport_lost(self, info: TransportClosed) -> None:
        raise NotImplementedError

    async def _teardown(self) -> None:
        raise NotImplementedError

    async def _close_with_result(self) -> None:
        """Teardown's first writes: a last ``result`` (clients stop their "working" state), sent
        before the session is archived (an archived session takes no more events)."""
        transport = self._transport
        if transport is not None and self._flushed is transport:
            self._write(transport, turn_result(self.session_id or "", str(uuidlib.uuid4())))
            await transport.flush(self.config.teardown_archive_timeout_s)

    async def _archive(self) -> None:
        if self.session_id is None:
            return
        try:
            async with asyncio.timeout(self.config.teardown_archive_timeout_s):
                await self.api.archive_session(self.session_id)
        except (TimeoutError, TetherError, ValueError) as exc:
            log.warning("could not archive %s: %s", self.session_id, exc)


def _is_tool_result(msg: Mapping[str, Any]) -> bool:
    inner = msg.get("message")
    content = inner.get("content") if isinstance(inner, Mapping) else None
    return isinstance(content, list) and any(isinstance(b, Mapping) and b.get("type") == "tool_result"
                                             for b in content)

