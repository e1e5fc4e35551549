"""Who drives a ``tether claude`` session: the TUI at the terminal, or a headless run for remote
clients (docs/protocol.md §14.7). Pure: events in, actions out.

States::

    local ──(a client prompt / take over)──▶ handing_off ──(TUI ended, host started)──▶ remote
      ▲                                                                                   │
      └──────(headless run ended, TUI restarted)── handing_back ◀──(a key / return)──────┘

* **local**: the TUI runs; the transcript is mirrored. A client prompt (or "Take over") starts a
  hand-off; it waits while a turn runs at the terminal (the person there is working), then the
  TUI is ended.
* **handing_off**: prompts queue. Once the TUI has ended, the headless run starts (``claude -p
  --resume``), and the queued prompts go to it in order.
* **remote**: prompts go straight to the headless run. A key at the terminal (or "Return to
  terminal") hands back.
* **handing_back**: the running turn is waited for (or interrupted, on request); prompts that
  arrive meanwhile still go to the headless run while it takes input; once it is idle its input
  ends, it finishes and exits, and the TUI restarts with ``--resume``. Prompts that arrive after
  that queue for the next hand-off.

The adapter reports what happened (``tui_exited``, ``host_started``, ``turn`` …) and carries out
the returned actions in order. :meth:`HandOff.status` is what clients are shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "LOCAL_DETAIL",
    "REMOTE_DETAIL",
    "Action",
    "Deliver",
    "Dropped",
    "EndAgentInput",
    "EndTui",
    "Exit",
    "HandOff",
    "InterruptAgent",
    "InterruptTui",
    "Message",
    "Mode",
    "StartHost",
    "StartTui",
    "TerminalStatus",
]

Mode = Literal["local", "handing_off", "remote", "handing_back", "ended"]
Message = dict[str, Any]


@dataclass(frozen=True)
class EndTui:
    """End the TUI cleanly (it was told to; its exit is not the end of ``tether claude``)."""


@dataclass(frozen=True)
class StartHost:
    """The TUI is gone: read the transcript to its end, then start the headless run."""


@dataclass(frozen=True)
class Deliver:
    """Give a client prompt to the headless run."""

    message: Message


@dataclass(frozen=True)
class InterruptAgent:
    """Stop the headless run's current turn."""


@dataclass(frozen=True)
class EndAgentInput:
    """End the headless run's input: it finishes and exits."""


@dataclass(frozen=True)
class StartTui:
    """The headless run is gone: read the transcript to its end, then start the TUI (``--resume``)."""


@dataclass(frozen=True)
class InterruptTui:
    """Stop the turn running at the terminal (the TUI's Esc)."""


@dataclass(frozen=True)
class Exit:
    """``tether claude`` ends (the TUI ended by itself)."""

    code: int


@dataclass(frozen=True)
class Dropped:
    """Prompts that could not be run (the headless run failed): clients are told."""

    messages: tuple[Message, ...]
    reason: str


Action = EndTui | StartHost | Deliver | InterruptAgent | EndAgentInput | StartTui | InterruptTui | Exit | Dropped

LOCAL_DETAIL: Final = "At the terminal"
REMOTE_DETAIL: Final = "Remote · press any key at the terminal to take it back"


@dataclass(frozen=True)
class TerminalStatus:
    """What clients are shown (``system/tether_terminal``, docs/protocol.md §15)."""

    state: Mode
    detail: str
    waiting_tool: str | None = None
    """A permission dialog is open at the terminal (local): for this tool."""
    queued: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "detail": self.detail, "waiting_at_terminal": self.waiting_tool,
                "queued_prompts": self.queued}


@dataclass
class HandOff:
    mode: Mode = "local"
    local_turn: bool = False
    """A turn runs at the terminal (a prompt was typed; no turn end yet)."""
    remote_turn: bool = False
    """The headless run is working: a prompt given to it was not echoed yet, or its turn has not
    ended with a ``result``."""
    awaiting: set[str] = field(default_factory=set)
    turn_open: bool = False
    waiting_tool: str | None = None
    queued: list[Message] = field(default_factory=list)
    return_requested: bool = False
    interrupt_requested: bool = False
    input_ended: bool = False
    tui_running: bool = True

    # ---- what clients and the terminal ask for --------------------------------------------------------

    def client_prompt(self, message: Message) -> list[Action]:
        if self.mode == "remote" or (self.mode == "handing_back" and not self.input_ended):
            return [self._deliver(message)]
        if self.mode == "ended":
            return [Dropped((message,), "the session has ended at the terminal")]
        self.queued.append(message)
        if self.mode == "local":
            return self._start_hand_off()
        return []

    def take_over(self) -> tuple[list[Action], str | None]:
        """"Take over" from a client: the actions, or an error for the client."""
        if self.mode == "local":
            return self._start_hand_off(), None
        if self.mode == "handing_off":
            return [], None
        if self.mode == "handing_back":
            return [], "The session is returning to the terminal; send a prompt to take it over again."
        if self.mode == "ended":
            return [], "The session has ended at the terminal."
        return [], None  # already remote

    def return_to_terminal(self, *, interrupt: bool = False) -> tuple[list[Action], str | None]:
        """A key at the terminal, or "Return to terminal" from a client."""
        if self.mode in ("local", "ended"):
            return [], None if self.mode == "local" else "The session has ended at the terminal."
        self.return_requested = True
        self.interrupt_requested = self.interrupt_requested or interrupt
        if self.mode == "handing_off":
            return [], None  # once the headless run has started and taken the queued prompts
        self.mode = "handing_back"
        return self._hand_back_step(), None

    def interrupt(self) -> list[Action]:
        """A client's Stop: the turn at the terminal (Esc) or the headless run's."""
        if self.mode in ("local", "handing_off") and self.local_turn and self.tui_running:
            return [InterruptTui()]
        if self.mode in ("remote", "handing_back") and not self.input_ended:
            return [InterruptAgent()]
        return []

    # ---- what happened --------------------------------------------------------------------------------

    def local_turn_changed(self, running: bool) -> list[Action]:
        self.local_turn = running
        if not running:
            self.waiting_tool = None
        if not running and self.mode == "handing_off" and self.tui_running:
            return [EndTui()]
        return []

    def permission_at_terminal(self, tool: str | None) -> None:
        """A permission dialog opened at the terminal (None: it was answered)."""
        self.waiting_tool = tool if self.mode in ("local", "handing_off") else None

    def tui_exited(self, code: int) -> list[Action]:
        self.tui_running = False
        self.local_turn = False
        self.waiting_tool = None
        if self.mode == "handing_off":
            return [StartHost()]
        self.mode = "ended"
        dropped = self._drop("the session has ended at the terminal")
        return [*dropped, Exit(code)]

    def host_started(self) -> list[Action]:
        if self.mode != "handing_off":
            return []
        self.mode = "remote"
        self.input_ended = False
        self.awaiting.clear()
        self.turn_open = self.remote_turn = False
        prompts, self.queued = self.queued, []
        actions: list[Action] = [self._deliver(p) for p in prompts]
        if self.return_requested:
            self.mode = "handing_back"
            actions += self._hand_back_step()
        return actions

    def agent_output(self, message: Message) -> list[Action]:
        """A message of the headless run: its echo of a prompt or its ``system/init`` opens a turn,
        a ``result`` closes it; it works while a turn is open or a prompt given to it is not echoed."""
        kind = message.get("type")
        if kind == "user" and message.get("isReplay"):
            self.awaiting.discard(str(message.get("uuid")))
            self.turn_open = True
        elif kind == "system" and message.get("subtype") == "init":
            self.turn_open = True
        elif kind == "result":
            self.turn_open = False
        running = self.turn_open or bool(self.awaiting)
        if running == self.remote_turn:
            return []
        self.remote_turn = running
        if self.mode == "handing_back" and not running:
            return self._hand_back_step()
        return []

    def host_exited(self, *, failed: str | None = None) -> list[Action]:
        """The headless run ended (asked to, or by itself); ``failed``: why it did not start or crashed."""
        actions: list[Action] = []
        if failed is not None:
            actions += self._drop(failed)
        if self.mode == "ended":
            return actions
        self.mode = "local"
        self.remote_turn = self.turn_open = False
        self.awaiting.clear()
        self.return_requested = self.interrupt_requested = self.input_ended = False
        self.tui_running = True
        actions.append(StartTui())
        if self.queued:  # prompts that came after the headless run stopped taking input
            actions += self._start_hand_off()
        return actions

    def shutdown(self) -> None:
        self.mode = "ended"

    # ---- views ------------------------------------------------------------------------------------------

    def status(self) -> TerminalStatus:
        queued = len(self.queued)
        if self.mode == "local":
            detail = LOCAL_DETAIL if self.waiting_tool is None else \
                f"Waiting at the terminal: {self.waiting_tool} needs permission"
            return TerminalStatus("local", detail, self.waiting_tool)
        if self.mode == "handing_off":
            if self.local_turn and self.tui_running:
                detail = "Handing over after the turn running at the terminal"
                if self.waiting_tool is not None:
                    detail += f" (waiting at the terminal: {self.waiting_tool} needs permission)"
            else:
                detail = "Handing over from the terminal…"
            return TerminalStatus("handing_off", detail, self.waiting_tool, queued)
        if self.mode == "remote":
            return TerminalStatus("remote", REMOTE_DETAIL, None, queued)
        if self.mode == "handing_back":
            detail = "Returning to the terminal after the current turn…" if self.remote_turn and not \
                self.input_ended else "Returning to the terminal…"
            return TerminalStatus("handing_back", detail, None, queued)
        return TerminalStatus("ended", "The session has ended at the terminal", None, queued)

    # ---- steps ------------------------------------------------------------------------------------------

    def _start_hand_off(self) -> list[Action]:
        self.mode = "handing_off"
        if self.local_turn or not self.tui_running:
            return []  # after the turn at the terminal (local_turn_changed), or the TUI is already gone
        return [EndTui()]

    def _hand_back_step(self) -> list[Action]:
        if self.input_ended:
            return []
        if self.remote_turn:
            if self.interrupt_requested:
                self.interrupt_requested = False
                return [InterruptAgent()]
            return []
        self.input_ended = True
        return [EndAgentInput()]

    def _deliver(self, message: Message) -> Deliver:
        uid = message.get("uuid")
        if isinstance(uid, str):
            self.awaiting.add(uid)
        self.remote_turn = True
        return Deliver(message)

    def _drop(self, reason: str) -> list[Action]:
        prompts, self.queued = self.queued, []
        return [Dropped(tuple(prompts), reason)] if prompts else []
