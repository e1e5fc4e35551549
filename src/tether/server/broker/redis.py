"""The broker across server instances: the in-process broker, plus a Redis stream between instances.

Every instance delivers what it publishes to its own subscriptions at once, exactly as the
in-process broker does (the direct socket writes stay), and appends it to one Redis stream
(``<prefix>:bus``, ``XADD … MAXLEN ~``): one entry per batch of notices, numbered per publisher. One
reader task per instance follows the stream (``XREAD BLOCK``), decodes each entry once and hands its
notices to the local subscriptions — never one decode per subscriber.

Why a stream and not pub/sub: a stream keeps what was published while a reader's connection
blips, so it resumes where it stood instead of sending every follower back to the database at once;
its entries are numbered, so a reader that fell behind the trimmed end, or a publisher whose send
failed, shows up as a gap (:class:`~tether.protocol.bus_order.PublisherGaps`). The broker only
carries notices of committed events; the log is the truth. Whatever goes missing becomes an
overflow for the subscriptions concerned: their :class:`~tether.server.reader.LogReader` re-reads
the log. The notices of each session are taken in order (:class:`~tether.protocol.bus_order.BusOrder`)
so that a worker stream never takes a later inbound event before an earlier one.

Without Redis (not reachable yet, or lost) the instance follows the database instead: every
``poll_s`` each log reader re-reads its log and each long poll looks again, until the stream can be
read again. Revocations, session closings and signing-key changes made meanwhile are sent when Redis
is back.
``ServerClosing`` stays local by design: it is one instance's shutdown.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tether.protocol.bus_order import BusOrder, PublisherGaps, Verdict
from tether.server.broker.items import WORK_QUEUED, SessionClosed, Topic
from tether.server.broker.memory import Broker
from tether.server.broker.wire import (
    KEYS_CHANGED,
    BadEntry,
    Control,
    EventNotice,
    KeyClosed,
    KeysChanged,
    Received,
    RoleFell,
    decode,
    encode,
)
from tether.server.metrics import Metrics
from tether.server.store.records import StoredEvent

log = logging.getLogger("tether.server.broker")

BLOCK_MS = 500  # one XREAD waits this long for entries (and shutdown for the reader)
READ_COUNT = 512  # entries taken per XREAD
MAX_BATCH = 512  # notices per entry
MAX_OUTBOX = 50_000  # notices waiting for a send; past it they are dropped (receivers see a gap)
MAX_UNSENT_CONTROLS = 1000  # revocations / closings kept for a send that failed
LEARN_ENTRIES = 1000  # entries read back at start to learn where each publisher stands
BUS_ERRORS = (RedisError, OSError, TimeoutError)
MAXLEN = 100_000  # entries the stream keeps (approximately)


class RedisBroker(Broker):
    def __init__(self, redis: Redis, *, queue_size: int = 4096, prefix: str = "tether", maxlen: int = MAXLEN,
                 poll_s: float = 1.0, metrics: Metrics | None = None) -> None:
        super().__init__(queue_size)
        if poll_s <= 0 or maxlen < 1:
            raise ValueError("bus poll interval and stream length must be positive")
        self.redis = redis
        self.stream = f"{prefix}:bus"
        self.maxlen = maxlen
        self.poll_s = poll_s
        self.metrics = metrics or Metrics()
        self.publisher = uuid.uuid4().hex  # a new one per process: its entries number from 1
        self.order = BusOrder()
        self.gaps = PublisherGaps()
        self.on_control: Callable[[Control], object] | None = None  # server/streams.py OpenStreams.apply
        self.on_keys_changed: Callable[[], object] | None = None  # auth/service.py Auth.keys_changed
        self.live = False  # following the stream (False: following the database every poll_s)
        self._outbox: list[Any] = []
        self._unsent: collections.deque[Any] = collections.deque(maxlen=MAX_UNSENT_CONTROLS)
        self._numbered = 0  # entries this publisher numbered (sent or failed)
        self._last: tuple[StoredEvent, EventNotice, Verdict | None] | None = None
        self._due = asyncio.Event()
        self._polling = asyncio.Event()
        self._polling.set()
        self._stop = asyncio.Event()
        self._lenient_until: tuple[int, int] | None = None  # see _start_reading
        self.metrics.gauge("bus_live", 0)

    # ---- publishing (synchronous: called right after a commit) ---------------------------
    def publish(self, topic: Topic[Any], item: Any) -> int:
        name = topic.name
        if isinstance(item, StoredEvent):
            return self._publish_event(name, item)
        self._queue((name, item))
        if isinstance(item, SessionClosed):
            return self._end(name, item)
        return super().publish(topic, item)

    def send_control(self, control: Control) -> None:
        """A revocation for the other instances (server/streams.py applies it here itself)."""
        self._queue(control)

    def announce_keys_changed(self) -> None:
        """The signing keys changed here: the other instances re-read them."""
        self._queue(KEYS_CHANGED)

    def _publish_event(self, name: str, ev: StoredEvent) -> int:
        body = name[2:]
        last = self._last
        if name[0] == "i" and last is not None and last[0] is ev:  # the worker half of the same event
            last[1].inbound = True
            self._last = None
            return self._to_workers(body, ev, last[2])
        notice = EventNotice(body, ev)
        self._queue(notice)
        if ev.ephemeral:
            return self._local("s:" + body, ev)
        if name[0] == "i":  # (the hub always publishes the subscribers' half first)
            notice.inbound = True
            verdict = self._to_subscribers(body, ev)
            return self._to_workers(body, ev, verdict)
        self._last = (ev, notice, self._to_subscribers(body, ev))
        return 1

    def _queue(self, item: Any) -> None:
        if len(self._outbox) >= MAX_OUTBOX:
            self._shed()
        self._outbox.append(item)
        self._due.set()

    def _shed(self) -> None:
        """The stream cannot take what is published: drop the notices (a skipped number tells the
        other instances to re-read), keep the revocations and closings for later."""
        self._unsent.extend(item for item in self._outbox if _must_arrive(item))
        self._outbox.clear()
        self._numbered += 1
        self.metrics.inc("bus_shed_total")

    # ---- delivery to this instance's subscriptions --------------------------------------
    def _to_subscribers(self, body: str, ev: StoredEvent) -> Verdict | None:
        clients, workers = self._topics.get("s:" + body), self._topics.get("i:" + body)
        if not clients and not workers:
            self.order.forget(body)
            return None
        verdict = self.order.notice(body, ev.seq)
        if verdict == "drop":
            return verdict
        for sub in tuple(clients or ()):
            sub._offer(ev)
        if verdict == "reread":
            for sub in tuple(workers or ()):
                sub.resync()
        return verdict

    def _to_workers(self, body: str, ev: StoredEvent, verdict: Verdict | None) -> int:
        if verdict != "deliver":
            return 0
        return self._local("i:" + body, ev)

    def _local(self, name: str, item: Any) -> int:
        subs = self._topics.get(name)
        if not subs:
            return 0
        for sub in tuple(subs):
            sub._offer(item)
        return len(subs)

    def _end(self, name: str, item: SessionClosed) -> int:
        """Queued even for an overflowed subscription: the log does not record it."""
        subs = self._topics.get(name, ())
        for sub in tuple(subs):
            sub.interrupt(item)
        return len(subs)

    def _wake_work(self, name: str) -> None:
        for sub in tuple(self._topics.get(name, ())):
            if sub.queue.empty():  # one wake-up is as good as many (and never overflows a poll)
                sub._offer(WORK_QUEUED)

    def reread_all(self) -> None:
        """Every log reader here re-reads its log and every long poll looks again."""
        self.order.reset()
        for name, subs in tuple(self._topics.items()):
            if name[0] == "w":
                self._wake_work(name)
            else:
                for sub in tuple(subs):
                    sub.resync()
        self.metrics.inc("bus_rereads_total")

    def _apply(self, notices: list[Received]) -> None:
        for notice in notices:
            kind, target, value = notice.kind, notice.target, notice.value
            if kind == "e":
                assert isinstance(value, StoredEvent)
                if value.ephemeral:
                    self._local("s:" + target, value)
                else:
                    verdict = self._to_subscribers(target, value)
                    if notice.inbound:
                        self._to_workers(target, value, verdict)
            elif kind == "l":
                self._local("s:" + target, value)
            elif kind == "c":
                assert isinstance(value, SessionClosed)
                self._end("i:" + target, value)
            elif kind == "w":
                self._wake_work("w:" + target)
            elif kind == "s":
                if self.on_keys_changed is not None:
                    self.on_keys_changed()
            elif self.on_control is not None and isinstance(value, KeyClosed | RoleFell):
                self.on_control(value)

    # ---- background tasks ---------------------------------------------------------------
    async def run(self) -> None:
        """The reader, sender and poller until :meth:`stop`. They are stopped, never cancelled:
        a redis-py command cancelled in flight can leave its connection pool waiting forever
        (seen with a blocked XREAD), so each loop ends by itself (within one ``BLOCK_MS``)."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._read_loop(), name="bus-reader")
            tg.create_task(self._send_loop(), name="bus-sender")
            tg.create_task(self._poll_loop(), name="bus-poller")

    def stop(self) -> None:
        self._stop.set()
        self._due.set()
        self._polling.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _send_loop(self) -> None:
        while not self._stop.is_set():
            if self._unsent:  # retry the revocations of a failed send even if nothing new comes
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._due.wait(), self.poll_s)
            else:
                await self._due.wait()
            self._due.clear()
            if not self._stop.is_set():  # (at shutdown ScaleOut.close flushes, with a deadline)
                await self.flush()

    async def flush(self) -> None:
        """Send everything queued now (at shutdown, after ``run`` was cancelled)."""
        while self._outbox or self._unsent:
            batch = [*self._unsent, *self._outbox[:MAX_BATCH]]
            self._unsent.clear()
            del self._outbox[:MAX_BATCH]
            if not await self._send(batch):
                return

    async def _send(self, batch: list[Any]) -> bool:
        self._numbered += 1
        try:
            await self.redis.xadd(self.stream, {"p": self.publisher, "n": self._numbered, "d": encode(batch)},
                                  maxlen=self.maxlen, approximate=True)
        except BUS_ERRORS as exc:
            self._unsent.extend(item for item in batch if _must_arrive(item))
            if self._outbox:  # stale by the next try: drop them too (the gap makes readers re-read)
                self._shed()
            self.metrics.inc("bus_send_failures_total")
            log.debug("bus send failed: %s", exc)
            return False
        self.metrics.inc("bus_entries_sent_total")
        return True

    async def _read_loop(self) -> None:
        last_id: bytes | str | None = None
        while not self._stop.is_set():
            try:
                if not self.live:
                    last_id = await self._start_reading(last_id)
                    self._set_live(True)
                assert last_id is not None
                reply: Any = await self.redis.xread({self.stream: last_id}, count=READ_COUNT, block=BLOCK_MS)
            except BUS_ERRORS as exc:
                if self.live:
                    log.warning("lost Redis (%s): following the database every %.1f s until it is back",
                                exc, self.poll_s)
                    self._set_live(False)
                await self._pause(min(self.poll_s, 1.0))  # then try again
                continue
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    last_id = entry_id
                    self._read_entry(entry_id, fields)

    async def _start_reading(self, previous: bytes | str | None) -> bytes | str:
        """Where to read the stream from, and everything here re-reads the log once.

        - where this reader stood, if the stream still holds it (a blip: nothing was lost);
        - at the first start: the stream's end (what came before is in the log), having learnt
          where each publisher stands from the newest entries;
        - after losing its place (Redis restarted, or the trimmed end passed it): everything the
          stream holds — revocations and closings sent meanwhile are not in the log. A publisher
          first met in those entries is taken at its number (its earlier entries are gone)."""
        if previous is not None and await self.redis.xrange(self.stream, previous, previous):
            return previous
        now = time.monotonic()
        self.gaps.forget_all()
        start: bytes = b"0-0"
        if previous is None:
            newest: Any = await self.redis.xrevrange(self.stream, "+", "-", count=LEARN_ENTRIES)
            for _entry_id, fields in reversed(newest):
                publisher = fields.get(b"p", b"").decode()
                if publisher:
                    self.gaps.expect(publisher, int(fields.get(b"n", 0)), now)
            start = newest[0][0] if newest else b"0-0"
        else:
            last: Any = await self.redis.xrevrange(self.stream, "+", "-", count=1)
            self._lenient_until = _entry_key(last[0][0]) if last else None
            log.info("following the Redis stream %s again (everything re-read from the log)", self.stream)
        self.reread_all()  # (after fixing the start: an entry after it is read, one before it is in the log)
        return start

    def _read_entry(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            publisher, number = fields[b"p"].decode(), int(fields[b"n"])
            if publisher == self.publisher:
                return  # delivered here when it was published
            lenient = self._lenient_until is not None and _entry_key(entry_id) <= self._lenient_until
            if lenient and not self.gaps.knows(publisher):
                self.gaps.expect(publisher, number, time.monotonic())
            elif not self.gaps.entry(publisher, number, time.monotonic()):
                log.info("notices from instance %s went missing: re-reading", publisher[:8])
                self.reread_all()
            self._apply(decode(fields[b"d"]))
        except (KeyError, ValueError, BadEntry) as exc:
            self.metrics.inc("bus_bad_entries_total")
            log.warning("skipped an entry on %s that is not a Tether notice: %s", self.stream, exc)
        self.metrics.inc("bus_entries_read_total")

    async def _poll_loop(self) -> None:
        """While the stream cannot be followed: every ``poll_s``, everything re-reads the database."""
        while True:
            await self._polling.wait()
            if self._stop.is_set():
                return
            self.reread_all()
            self.metrics.inc("bus_polls_total")
            await self._pause(self.poll_s)

    def _set_live(self, live: bool) -> None:
        self.live = live
        self.metrics.gauge("bus_live", 1 if live else 0)
        if live:
            self._polling.clear()
        else:
            self._polling.set()


def _entry_key(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id (``<ms>-<seq>``) as something that compares."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _must_arrive(item: Any) -> bool:
    """Notices that the log does not record: revocations and closings are sent again, later."""
    return (isinstance(item, KeyClosed | RoleFell | KeysChanged)
            or (isinstance(item, tuple) and isinstance(item[1], SessionClosed)))


async def send_once(redis: Redis, prefix: str, notices: list[Any]) -> bool:
    """One entry on the bus from a process that does not follow it (`tether admin`): a publisher of
    its own, numbered 1, so that no reader takes it for a gap. False when Redis did not take it."""
    fields: Any = {"p": uuid.uuid4().hex, "n": 1, "d": encode(notices)}
    try:
        await redis.xadd(f"{prefix}:bus", fields, maxlen=MAXLEN, approximate=True)
    except BUS_ERRORS as exc:
        log.warning("could not reach Redis: %s", exc)
        return False
    return True
