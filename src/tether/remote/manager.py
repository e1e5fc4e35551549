"""RemoteSessionManager: one attached session — history, the live stream, prompts, permission
answers and interrupts (docs/protocol.md §13, §4.6–§4.7).

It owns a :class:`~tether.remote.sessions_ws.SessionsWebSocket` and an
:class:`~tether.client.api.ApiClient`, turns every inbound frame into display items with the
pure adapter (:mod:`tether.protocol.sdk_adapter`) and hands them to a :class:`View`. Rules:

* **History first, then live, with no gap and no repeat**: the newest page of
  ``GET /v1/sessions/{id}/events?anchor_to_latest=true``, then the socket opened with
  ``from_sequence_num`` = the last event of that page; every reconnect resumes from the
  highest sequence number seen, and a :class:`SequenceTracker` drops anything seen twice.
  :meth:`load_older` pages back with ``before_id``.
* **Prompts** go through ``POST /v1/sessions/{id}/events`` with a client-chosen ``uuid``,
  recorded before the POST so that the live echo is recognised and not shown twice.
* **Permissions**: first answer anywhere wins (the server decides); a question disappears
  when the log shows it answered or withdrawn, or when our late answer is refused with
  ``already_resolved``.
* **Viewer** (``viewer=True``): no prompts, no answers, no interrupts (a :class:`ReadOnly`
  error), no watchdog, and the socket reconnects forever. The server enforces the same for
  viewer-role credentials.
"""

from __future__ import annotations

import asyncio
import time
import uuid as uuidlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tether.client.api import ApiClient
from tether.errors import PermissionDenied
from tether.protocol.messages import INTERRUPT, control_request, user_message
from tether.protocol.remote_permissions import PendingPermissions, allow_frame, deny_frame
from tether.protocol.sdk_adapter import (
    HISTORY,
    ConvertMode,
    Item,
    PermissionPrompt,
    PromptCancelled,
    PromptResolved,
    SendControl,
    ServerError,
    SessionState,
    TurnEnded,
    UserText,
    convert,
    is_permission_request,
    log_sequence,
)
from tether.protocol.sequence import SequenceTracker
from tether.protocol.subscribe_policy import ResponseWatchdog, Stop, stop_message
from tether.protocol.uuid_ring import BoundedUUIDSet
from tether.remote.sessions_ws import Connected, Ended, Frame, Reconnecting, SessionsWebSocket

OWN_UUID_RING = 50  # docs/protocol.md §7.5: the remote client's ring of prompt uuids it posted
HISTORY_PAGE = 100


class ReadOnly(PermissionDenied):
    """The client watches only (``--viewer``, or a viewer-role login)."""


@dataclass(frozen=True)
class Connection:
    """The socket's state changed: ``connected``, ``reconnecting`` or ``ended``."""

    state: str
    text: str
    level: str = "dim"


@dataclass(frozen=True)
class PermissionSettled:
    """An open question went away: ``allow``, ``deny``, ``error``, ``cancelled`` or ``elsewhere``."""

    prompt: PermissionPrompt
    outcome: str
    message: str | None = None


@dataclass(frozen=True)
class HistoryMark:
    """Where a page of history starts or ends in the output."""

    text: str


ViewItem = Item | Connection | PermissionSettled | HistoryMark


class View(Protocol):
    def show(self, item: ViewItem) -> None: ...


class RemoteSessionManager:
    def __init__(self, api: ApiClient, session: Mapping[str, Any], view: View, *, viewer: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.session_id = str(session["id"])
        self.title: str = str(session.get("title") or "")
        self.status: str = str(session.get("session_status") or "idle")
        self.view = view
        self.viewer = viewer
        self._clock = clock
        self.tracker = SequenceTracker()
        self.permissions: PendingPermissions[PermissionPrompt] = PendingPermissions()
        self.own_uuids = BoundedUUIDSet(OWN_UUID_RING)
        self.watchdog = ResponseWatchdog(enabled=not viewer)
        self.first_id: str | None = None
        self.has_more = False
        self._auto_answered: set[str] = set()  # answered "unsupported"; the server's refusal is expected
        self.unsupported_answered: list[str] = []
        self.stop: Stop | None = None
        self.ws = SessionsWebSocket(api.server, self.session_id, api.access_token, viewer=viewer,
                                    resume_from=lambda: self.tracker.high_water, org_uuid=api.org_uuid)

    @property
    def connected(self) -> bool:
        return self.ws.connected

    @property
    def refusals_expected(self) -> int:
        """Our "unsupported" answers the server has not refused yet (it answers those requests itself)."""
        return len(self._auto_answered)

    # ---- history ----------------------------------------------------------------------------
    async def load_history(self, limit: int = HISTORY_PAGE) -> int:
        """Show the newest page of the transcript; return how many events it held."""
        page = await self.api.list_events(self.session_id, limit=limit)
        frames = [f for f in page.get("data") or [] if isinstance(f, dict)]
        seqs = [s for s in (log_sequence(f) for f in frames) if s is not None]
        if seqs:
            self.tracker = SequenceTracker(min(seqs) - 1)
            for seq in sorted(seqs):
                self.tracker.observe(seq)
        self._page_state(page)
        if self.has_more:
            self.view.show(HistoryMark("earlier events: /older"))
        self._show_history(frames)
        return len(frames)

    async def load_older(self, limit: int = HISTORY_PAGE) -> int:
        """Show the page before the oldest one shown (0 when there is none)."""
        if not self.has_more or self.first_id is None:
            self.view.show(HistoryMark("no earlier events"))
            return 0
        page = await self.api.list_events(self.session_id, limit=limit, before_id=self.first_id)
        frames = [f for f in page.get("data") or [] if isinstance(f, dict)]
        self._page_state(page)
        seqs = [s for s in (log_sequence(f) for f in frames) if s is not None]
        span = f" #{min(seqs)}–#{max(seqs)}" if seqs else ""
        self.view.show(HistoryMark(f"earlier events{span}"))
        self._show_history(frames)
        self.view.show(HistoryMark("end of earlier events" + ("; more: /older" if self.has_more else "")))
        return len(frames)

    def _page_state(self, page: Mapping[str, Any]) -> None:
        self.has_more = page.get("has_more") is True
        first = page.get("first_id")
        self.first_id = first if isinstance(first, str) else None

    # ---- the live stream --------------------------------------------------------------------
    async def run(self) -> Stop:
        """Follow the session until the socket stops (detach, 4003, give-up); return why."""
        async with asyncio.TaskGroup() as tg:
            socket = tg.create_task(self.ws.run(), name=f"subscribe-{self.session_id}")
            watchdog = tg.create_task(self._watch(), name="response-watchdog")
            try:
                while True:
                    event = await self.ws.events.get()
                    if isinstance(event, Frame):
                        await self._on_frame(event.data)
                    elif isinstance(event, Connected):
                        self._on_connected(event)
                    elif isinstance(event, Reconnecting):
                        self.view.show(Connection("reconnecting", f"Connection lost ({_code(event.code)}); "
                                                  f"reconnecting in {event.delay:g} s (attempt {event.attempt})…",
                                                  "warning"))
                    elif isinstance(event, Ended):
                        self.stop = event.stop
                        break
            finally:
                watchdog.cancel()
            await socket
        assert self.stop is not None
        level = "dim" if self.stop.reason == "stopped" else "error"
        self.view.show(Connection("ended", stop_message(self.stop), level))
        return self.stop

    async def detach(self) -> None:
        await self.ws.close()

    def reconnect(self) -> None:
        self.ws.reconnect()

    def _on_connected(self, event: Connected) -> None:
        if event.attempt == 1:
            self.view.show(Connection("connected", "Connected; live."))
        else:
            self.view.show(Connection("connected", f"Reconnected; resumed after #{event.resumed_from}.", "info"))

    async def _watch(self) -> None:
        if not self.watchdog.enabled:
            return
        while True:
            await asyncio.sleep(1.0)  # a timer tick: the rule itself is ResponseWatchdog's
            if self.watchdog.check(self._clock()):
                self.view.show(Connection("reconnecting", "Remote session may be unresponsive. "
                                          "Attempting to reconnect…", "warning"))
                self.ws.reconnect()

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        self.watchdog.received()
        seq = log_sequence(frame)
        if seq is not None and self.tracker.observe(seq) == "duplicate" and not is_permission_request(frame):
            return  # pending permission requests come again on every connect; the rest never twice
        for item in convert(frame, ConvertMode(own_uuids=self.own_uuids)):
            await self._apply(item)

    async def _apply(self, item: Item) -> None:
        if isinstance(item, PermissionPrompt):
            if self.permissions.add(item):
                self.view.show(item)
        elif isinstance(item, PromptResolved):
            settled = self.permissions.resolve(item.request_id)
            if settled is not None:
                self.view.show(PermissionSettled(settled, item.behavior, item.message))
        elif isinstance(item, PromptCancelled):
            withdrawn = self.permissions.cancel(item.request_id, item.tool_use_id)
            if withdrawn is not None:
                self.view.show(PermissionSettled(withdrawn, "cancelled"))
        elif isinstance(item, SendControl):
            await self._answer_unsupported(item)
        elif isinstance(item, ServerError):
            self._on_error(item)
        else:
            if isinstance(item, SessionState):
                self.status = item.status or self.status
                self.title = item.title if item.title is not None else self.title
            elif isinstance(item, TurnEnded):
                self.status = "idle"
            self.view.show(item)

    async def _answer_unsupported(self, item: SendControl) -> None:
        if self.viewer:
            return  # a viewer writes nothing; the server answers such requests for the worker anyway
        rid = item.frame["response"]["request_id"]
        self._auto_answered.add(rid)
        if await self.ws.send(item.frame):
            self.unsupported_answered.append(rid)

    def _on_error(self, item: ServerError) -> None:
        rid = item.request_id
        if rid is not None and rid in self._auto_answered:
            self._auto_answered.discard(rid)  # the server had already answered it for the worker
            return
        if rid is not None and rid in self.permissions and item.error_type in ("already_resolved", "not_found_error"):
            prompt = self.permissions.resolve(rid)
            if prompt is not None:
                self.view.show(PermissionSettled(prompt, "elsewhere", "already answered elsewhere"))
            return
        self.view.show(item)

    def _show_history(self, frames: list[dict[str, Any]]) -> None:
        """A page of the transcript. Its questions are not asked again (the socket sends the ones
        still open when it connects); their answers are shown as they were given."""
        asked: PendingPermissions[PermissionPrompt] = PendingPermissions()
        for frame in frames:
            for item in convert(frame, HISTORY):
                if isinstance(item, PermissionPrompt):
                    asked.add(item)
                elif isinstance(item, PromptResolved | PromptCancelled):
                    prompt = (asked.resolve(item.request_id) if isinstance(item, PromptResolved)
                              else asked.cancel(item.request_id, item.tool_use_id))
                    if prompt is not None:
                        outcome = item.behavior if isinstance(item, PromptResolved) else "cancelled"
                        message = item.message if isinstance(item, PromptResolved) else None
                        self.view.show(PermissionSettled(prompt, outcome, message))
                elif not isinstance(item, SendControl):
                    self.view.show(item)

    # ---- what the person does ---------------------------------------------------------------
    def _require_writer(self, what: str) -> None:
        if self.viewer:
            raise ReadOnly(f"Watching only (viewer): {what} is not possible here.")

    async def send_prompt(self, text: str) -> str:
        """Send a prompt; returns its uuid. The prompt is shown at once (its echo is not)."""
        self._require_writer("sending prompts")
        msg_uuid = str(uuidlib.uuid4())
        self.own_uuids.add(msg_uuid)
        self.view.show(UserText(text, msg_uuid))
        await self.api.send_events(self.session_id, [user_message(text, msg_uuid, self.session_id)])
        self.watchdog.sent(self._clock())
        return msg_uuid

    async def answer(self, allow: bool, request_id: str | None = None, message: str | None = None) -> bool:
        """Answer a permission question (the oldest open one by default); False when none is
        open or the socket is down (nothing was sent)."""
        self._require_writer("answering permission requests")
        prompt = self.permissions.get(request_id) if request_id else self.permissions.current()
        if prompt is None:
            return False
        frame = allow_frame(prompt.request_id, prompt.input) if allow else deny_frame(prompt.request_id,
                                                                                      message or "")
        sent = await self.ws.send(frame)
        if sent:
            self.watchdog.sent(self._clock())
        return sent

    async def interrupt(self) -> bool:
        """Ask the agent to stop the current turn; False when the socket is down."""
        self._require_writer("interrupting")
        sent = await self.ws.send(control_request(INTERRUPT, str(uuidlib.uuid4())))
        if sent:
            self.watchdog.sent(self._clock())
        return sent


def _code(code: int | None) -> str:
    return "no close frame" if code is None else f"close {code}"

