"""The soak's clients, all through the client hop's fault-injecting proxy.

Per session: two subscribers (two phones) that resume with ``from_sequence_num`` after every cut,
record what each connection delivered, and answer every permission prompt they see (first writer
wins; the loser gets ``already_resolved``); and one prompter that posts prompts with its own uuids
(retrying the same uuid until it gets a 2xx: that is an acknowledged prompt) and waits for each
turn's ``result`` before the next prompt (:mod:`bench.chaoslib.turns`: the turn that ran *that* prompt).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import connect

from bench.chaoslib import turns

TETHER_FRAMES = frozenset({"delivery_update", "session_update", "keep_alive", "error"})


@dataclass
class Connection:
    """What one subscribe connection delivered: stored events as (sequence_num, uuid) in order."""
    from_seq: int
    events: list[tuple[int, str]] = field(default_factory=list)
    preamble: int = 0  # pending permission requests re-sent at connect (sequence_num ≤ from_seq)


@dataclass
class SessionTrack:
    """What the clients know of one session (shared by its subscribers and its prompter)."""
    sid: str
    acked_prompts: dict[str, int] = field(default_factory=dict)  # uuid → index
    texts: dict[str, str] = field(default_factory=dict)  # uuid → the prompt's text (set before it is posted)
    markers: dict[int, str | None] = field(default_factory=dict)  # turns started and results (turns.py)
    resolved: set[str] = field(default_factory=set)  # permission request ids answered or cancelled
    asked: set[str] = field(default_factory=set)  # permission request ids seen
    hold_answers: bool = False  # the user does not answer for now (the laptop sleeps)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    archived: bool = False

    def answered(self, prompt_uuid: str) -> bool:
        """The agent ran this prompt to the end of a turn (:func:`bench.chaoslib.turns.answered`)."""
        text = self.texts.get(prompt_uuid)
        return text is not None and turns.answered(self.markers, text)

    def unanswered(self) -> list[str]:
        return [u for u in self.acked_prompts if not self.answered(u)]

    def open_requests(self) -> set[str]:
        return self.asked - self.resolved


class Subscriber:
    def __init__(self, name: str, ws_base: str, token: str, track: SessionTrack, rnd: random.Random,
                 notes: Counter[str]) -> None:
        self.name = name
        self.url = f"{ws_base}/v1/sessions/ws/{track.sid}/subscribe"
        self.token = token
        self.track = track
        self.rnd = rnd
        self.notes = notes
        self.last_seq = 0
        self.connections: list[Connection] = []

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with connect(f"{self.url}?from_sequence_num={self.last_seq}", open_timeout=10,
                                   additional_headers={"Authorization": f"Bearer {self.token}"},
                                   max_size=8 << 20, ping_interval=5, ping_timeout=10) as ws:
                    conn = Connection(self.last_seq)
                    self.connections.append(conn)
                    await self._read(ws, conn, stop)
            except (OSError, websockets.WebSocketException, TimeoutError) as exc:
                self.notes[f"subscribe dropped: {type(exc).__name__}"] += 1
            if not stop.is_set():
                await asyncio.sleep(self.rnd.uniform(0.05, 0.5))  # a reconnect delay

    async def _read(self, ws: Any, conn: Connection, stop: asyncio.Event) -> None:
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                recv = asyncio.ensure_future(ws.recv())
                await asyncio.wait({recv, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not recv.done():
                    recv.cancel()
                    await ws.close()
                    return
                frame = json.loads(recv.result())
                await self._frame(ws, conn, frame)
        finally:
            stopper.cancel()

    async def _frame(self, ws: Any, conn: Connection, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        seq = frame.get("sequence_num")
        if kind in TETHER_FRAMES or frame.get("ephemeral") or not isinstance(seq, int):
            if kind == "error":
                self.notes[f"error frame: {(frame.get('error') or {}).get('type')}"] += 1
            if kind == "session_update" and frame.get("status") == "archived":
                self.track.archived = True
            return
        if kind == "control_request" and seq <= conn.from_seq:
            conn.preamble += 1  # a pending permission request re-sent at connect
        else:
            conn.events.append((seq, str(frame.get("uuid"))))
            self.last_seq = max(self.last_seq, seq)
            self._observe(frame, seq)
        if kind == "control_request" and (frame.get("request") or {}).get("subtype") == "can_use_tool":
            rid = frame.get("request_id")
            if isinstance(rid, str):
                self.track.asked.add(rid)
                self.track.changed.set()
            if not self.track.hold_answers:
                await self._answer(ws, frame)

    def _observe(self, frame: dict[str, Any], seq: int) -> None:
        track = self.track
        kind = frame.get("type")
        is_marker, named = turns.marker(frame)
        if is_marker:
            track.markers[seq] = named
        elif kind in ("control_response", "control_cancel_request"):
            rid = frame.get("request_id") or (frame.get("response") or {}).get("request_id")
            if isinstance(rid, str):
                track.resolved.add(rid)
        track.changed.set()

    async def _answer(self, ws: Any, request: dict[str, Any]) -> None:
        rid = request.get("request_id")
        if not isinstance(rid, str) or rid in self.track.resolved:
            return
        await asyncio.sleep(self.rnd.uniform(0.0, 0.3))  # the user's think time
        answer = {"type": "control_response", "response": {
            "subtype": "success", "request_id": rid,
            "response": {"behavior": "allow", "updatedInput": request["request"].get("input", {})}}}
        with contextlib.suppress(websockets.WebSocketException, OSError):
            await ws.send(json.dumps(answer))
            self.notes["permission answers sent"] += 1


class Prompter:
    def __init__(self, http: httpx.AsyncClient, track: SessionTrack, rnd: random.Random, notes: Counter[str],
                 problems: Counter[str], turn_timeout: float) -> None:
        self.http = http
        self.track = track
        self.rnd = rnd
        self.notes = notes
        self.problems = problems
        self.turn_timeout = turn_timeout

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set() and not self.track.archived:
            n += 1
            uid, text = str(uuid.uuid4()), turns.prompt_text(n, self.track.sid)
            msg = {"type": "user", "uuid": uid, "session_id": "", "parent_tool_use_id": None,
                   "message": {"role": "user", "content": text}}
            self.track.texts[uid] = text  # its turn may start before the POST returns
            if not await self._post(msg, stop):
                return
            self.track.acked_prompts[uid] = n
            if stop.is_set():  # its POST was under way when the prompts stopped (the quiet phase waits)
                self.notes["prompts acknowledged after the prompts stopped"] += 1
            elif not await self.wait_answered(uid, self.turn_timeout, stop) and not stop.is_set():
                self.notes["turns slower than the turn timeout"] += 1
            if not stop.is_set():
                await asyncio.sleep(self.rnd.uniform(0.0, 0.5))  # the user's think time

    async def _post(self, msg: dict[str, Any], stop: asyncio.Event) -> bool:
        """Post until a 2xx (the same uuid: the server deduplicates); False when stopped first."""
        path = f"/v1/sessions/{self.track.sid}/events"
        while not stop.is_set():
            try:
                r = await self.http.post(path, json={"events": [msg]})
            except httpx.HTTPError as exc:
                self.notes[f"prompt POST failed: {type(exc).__name__}"] += 1
            else:
                if r.status_code < 300:
                    return True
                if r.status_code == 409:
                    self.problems[f"prompt refused: {r.text[:120]}"] += 1
                    self.track.archived = True
                    return False
                self.notes[f"prompt POST answered {r.status_code}"] += 1
            await asyncio.sleep(self.rnd.uniform(0.1, 0.5))  # a retry delay
        return False

    async def wait_answered(self, prompt_uuid: str, timeout: float, stop: asyncio.Event | None = None) -> bool:
        """Wait for a ``result`` after the prompt (a condition wait with a timeout)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self.track.answered(prompt_uuid):
                    if stop is not None and stop.is_set():
                        return False
                    self.track.changed.clear()
                    waiter = asyncio.ensure_future(self.track.changed.wait())
                    waits = {waiter} if stop is None else {waiter, asyncio.ensure_future(stop.wait())}
                    try:
                        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for w in waits:
                            w.cancel()
                return True
        return self.track.answered(prompt_uuid)
