"""The fault schedule: network faults on both hops of every world on one timeline, process faults
(server SIGKILL + restart, bridge SIGKILL + ``--continue``, a laptop sleep longer than the lease,
a v2 epoch takeover, worker tokens expiring mid-turn) on another. Every choice comes from one
seeded RNG, so a seed replays the same schedule (the timing of real processes still varies)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from tests.support.cut_proxy import Direction, Fault

from bench.chaoslib.world import World

FIRST_ROUND = ("server SIGKILL + restart", "v2 epoch takeover", "bridge SIGKILL + --continue",
               "worker token expiry mid-turn", "laptop sleep > lease")  # popped from the end: reversed
FIRST_ROUND_GRACE_S = 120.0  # how long past its deadline a run waits for its first round of process faults
NET_KINDS = ("reset", "close", "half_close", "stall")
NET_WEIGHTS = (3, 2, 1, 2)


def random_fault(rnd: random.Random) -> Fault:
    kind = rnd.choices(NET_KINDS, NET_WEIGHTS)[0]
    direction: Direction = rnd.choice(("up", "down"))
    after = None if rnd.random() < 0.4 else rnd.randrange(0, 4000)
    if kind == "stall":
        return Fault("stall", direction, after, rnd.uniform(0.5, 6.0),
                     rnd.choices(("resume", "reset", "close"), (6, 2, 1))[0])
    return Fault(kind, direction, after)  # type: ignore[arg-type]


class Schedule:
    def __init__(self, worlds: Sequence[World], rnd: random.Random, faults: Counter[str],
                 log: Callable[[str], None], *, net_rate: float, process_every: float, lease_ttl_s: float,
                 token_ttl_s: float, only: Sequence[str] = ()) -> None:
        self.worlds = worlds
        self.rnd = rnd
        self.faults = faults
        self.log = log
        self.net_rate = net_rate
        self.process_every = process_every
        self.lease_ttl_s = lease_ttl_s
        self.token_ttl_s = token_ttl_s
        self.tasks: set[asyncio.Task[Any]] = set()
        self.only = tuple(only)  # process-fault labels must contain one of these (none: every kind)
        self.first_round = {label for label, _, _ in self._process_menu()}  # kinds not yet injected

    def going(self, deadline: float, target: int | None) -> bool:
        """Faults go on until the deadline or the target, and in any case until the first round of
        process faults is in (a busy machine slows the processes down, not the schedule's promise
        that a run sees every kind it asked for) — for at most ``FIRST_ROUND_GRACE_S`` more."""
        now = asyncio.get_running_loop().time()
        if now < deadline and (target is None or sum(self.faults.values()) < target):
            return True
        return bool(self.first_round) and now < deadline + FIRST_ROUND_GRACE_S

    def count(self, label: str) -> None:
        self.faults[label] += 1

    async def run(self, stop: asyncio.Event, deadline: float, target: int | None) -> None:
        net = asyncio.ensure_future(self._network(stop))
        proc = asyncio.ensure_future(self._processes(stop))
        while self.going(deadline, target):
            with contextlib.suppress(TimeoutError):  # the schedule's own clock tick
                await asyncio.wait_for(stop.wait(), 0.25)
        stop.set()
        await asyncio.gather(net, proc)
        if self.tasks:  # process faults under way finish (a restart completes) before the quiet phase
            await asyncio.gather(*self.tasks)

    async def _network(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.rnd.expovariate(self.net_rate))  # the next fault's random time
            world = self.rnd.choice(self.worlds)
            proxy = self.rnd.choice((world.bridge_proxy, world.client_proxy))
            proxy.inject(random_fault(self.rnd), self.rnd)  # counted by the proxy when it fires

    def _process_menu(self) -> list[tuple[str, World, Any]]:
        menu: list[tuple[str, World, Any]] = []
        for w in self.worlds:
            tag = f"({w.name})"
            menu.append((f"server SIGKILL + restart {tag}", w, w.kill_server))
            for slot in w.slots:
                menu.append((f"bridge SIGKILL + --continue {tag}", w, lambda w=w, s=slot: w.kill_bridge(s)))
            for worker in w.code_workers:
                menu.append((f"v2 epoch takeover {tag}", w, lambda w=w, c=worker: w.takeover(c)))
            menu.append((f"worker token expiry mid-turn {tag}", w, lambda w=w: self._expire_tokens(w)))
            if w.slots:
                menu.append((f"laptop sleep > lease {tag}", w,
                             lambda w=w: w.sleep_bridge(self.rnd.choice(w.slots), self.lease_ttl_s + 5)))
        return [entry for entry in menu if not self.only or any(o in entry[0] for o in self.only)]

    async def _expire_tokens(self, world: World) -> None:
        world.block_token_refresh(self.token_ttl_s + 5)  # the proxy refuses E7 until then

    async def _processes(self, stop: asyncio.Event) -> None:
        """Every kind in turn, one at a time per world: the first round in a fixed order (a short
        run still sees each kind), later rounds in a seeded shuffle."""
        queue = sorted(self._process_menu(), key=lambda entry: -FIRST_ROUND.index(entry[0].split(" (")[0]))
        while not stop.is_set():
            await asyncio.sleep(self.rnd.uniform(0.5, 1.5) * self.process_every)  # the next fault's random time
            if stop.is_set():
                return
            if not queue:
                queue = self._process_menu()
                self.rnd.shuffle(queue)
                # popped from the end: the long laptop sleeps come last in a round
                queue.sort(key=lambda entry: not entry[0].startswith("laptop sleep"))
            ready = [i for i, (_, w, _) in enumerate(queue) if not w.process_lock.locked()]
            if not ready:
                continue  # both worlds are busy with a process fault: try again at the next tick
            label, world, action = queue.pop(ready[-1])  # the next in line whose world is free
            task = asyncio.ensure_future(self._run_process_fault(label, world, action))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run_process_fault(self, label: str, world: World, action: Any) -> None:
        async with world.process_lock:
            self.count(label)
            self.first_round.discard(label)
            self.log(f"fault: {label}")
            try:
                await action()
            except Exception as exc:
                world.problems[f"{label} failed: {type(exc).__name__}: {str(exc)[:200]}"] += 1
                self.log(f"fault {label} failed: {exc!r}")
