"""The v1, env-based REPL bridge core (docs/protocol.md §12.2; ``initBridgeCore``).

Start: (perpetual: read the ``repl`` crash pointer) → register the machine with
``max_sessions: 1`` (E1; re-attaching the pointer's environment) → perpetual and re-attached:
``bridge/reconnect`` the pointer's session (E7) and treat the conversation as already sent; else
create the session (S1) → write the pointer → ``ready``.

Then the **poll loop**: without a transport, poll (E2) every 2 s; a work item for our session is
acknowledged (E3) and gets a transport — v1 (WebSocket + POST, authenticated with the user's
login) or v2 (SSE + CCR) as its secret says — which flushes the history and goes ``connected``.
With a transport ("at capacity") the loop heartbeats the work (E5) until the at-capacity interval
ends; a heartbeat refused (401/403/404/410) drops the transport and asks for a fresh work item
(E7); a sleep that overran by more than a minute (the machine slept) polls at once. Poll errors
back off 2 s → 60 s and give up after 15 minutes; a lost environment (404/410) is re-created at
most three times in a row (:meth:`EnvBasedBridge._do_reconnect`: the same environment and session
if the server still knows them, else a new session that gets the whole history).

Teardown: a last ``result`` → stop the work (force) and archive (1.5 s) → close the transport →
deregister → clear the pointer. Perpetual teardown is local only (the pointer stays, fresh).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from tether.bridge import pointer as pointers
from tether.bridge.aio import wait_event
from tether.bridge.repl.core import InitFailed, ReplBridgeCore
from tether.client.api import BridgeConfig, WorkItem, repository_context
from tether.client.factory import make_transport
from tether.client.hybrid import HybridConfig, HybridTransport
from tether.client.transport import SessionTransport, TransportClosed
from tether.client.v2 import V2Config
from tether.errors import ApiError, ApiUnavailable, BridgeFatalError, ProtocolError, TetherError
from tether.protocol.bridge_policy import heartbeat_interval_s
from tether.protocol.ids import is_valid_id, same_session_id, to_compat_session_id
from tether.protocol.poll_config import PollConfig
from tether.protocol.repl_config import MAX_ENV_RECREATIONS, overslept, repl_poll_backoff
from tether.protocol.work_secret import WorkSecretError, decode_work_secret

log = logging.getLogger("tether.bridge.repl.v1")


@dataclass
class _Work:
    id: str
    token: str


class EnvBasedBridge(ReplBridgeCore):
    kind = "v1"

    def __init__(self, *args: Any, server_config: BridgeConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server_config = server_config
        self._secret: str | None = None
        self._work: _Work | None = None
        self._wake = asyncio.Event()
        self._pointer_written = False
        self._reconnecting = False
        self._settled = asyncio.Event()  # no re-registration in progress
        self._settled.set()

    @property
    def _poll(self) -> PollConfig:
        return self.server_config.poll.config

    # ---- start -----------------------------------------------------------------------------------

    async def _start(self) -> None:
        o = self.options
        prior = None
        if o.perpetual:
            found = pointers.read_pointer(o.directory, o.home)
            prior = found.pointer if found is not None and found.pointer.source == "repl" else None
        try:
            await self._register(prior.environment_id if prior else None)
        except TetherError as exc:
            pointers.clear_pointer(o.directory, o.home)
            raise InitFailed(f"registering this machine failed: {exc.message}") from None
        if prior is not None and self.environment_id == prior.environment_id:
            try:
                await self.api.reconnect_session(self.environment_id, prior.session_id)
                self.session_id = to_compat_session_id(prior.session_id)
                for msg in self.front.transcript():  # reconnect in place: it is all there already
                    uid = msg.get("uuid")
                    if isinstance(uid, str) and uid:
                        self.filter.sent(uid)
                log.info("re-attached session %s", self.session_id)
            except TetherError as exc:
                log.warning("could not re-attach %s (%s); creating a new session", prior.session_id, exc)
        if self.session_id is None:
            try:
                await self._create_session()
            except TetherError as exc:
                await self._deregister()
                raise InitFailed(f"Session creation failed: {exc.message}") from None
        self._write_pointer()
        await self._push_initial_title()
        self._set_state("ready")

    async def _register(self, environment_id: str | None) -> bool:
        """E1; True when the environment we asked for was re-attached."""
        o = self.options
        reg = await self.api.register_environment(
            machine_name=o.machine_name, directory=str(o.directory), branch=o.branch, git_repo_url=o.git_repo_url,
            max_sessions=1, worker_type=o.worker_type, environment_id=environment_id)
        self.environment_id, self._secret = reg.environment_id, reg.environment_secret
        return reg.reattached

    async def _create_session(self) -> None:
        o = self.options
        title = self.titles.title if self.titles.explicit else None
        session = await self.api.create_session(environment_id=self.environment_id, title=title,
                                                permission_mode=o.permission_mode,
                                                session_context=repository_context(o.git_repo_url, o.branch))
        self.session_id = str(session["id"])
        self._notify()

    def _write_pointer(self) -> None:
        assert self.session_id is not None and self.environment_id is not None
        try:
            pointers.write_pointer(self.options.directory, pointers.BridgePointer(
                self.session_id, self.environment_id, "repl"), self.options.home)
            self._pointer_written = True
        except OSError as exc:
            log.warning("could not write the crash-recovery pointer: %s", exc)

    # ---- loops -----------------------------------------------------------------------------------

    def _loops(self) -> list[tuple[str, Any]]:
        loops: list[tuple[str, Any]] = [("poll loop", self._poll_loop()), ("login", self._keep_login_fresh())]
        if self.options.perpetual:
            loops.append(("pointer", pointers.keep_pointer_fresh(self.options.directory, self.options.home,
                                                                 lambda: self._pointer_written)))
        return loops

    async def _keep_login_fresh(self) -> None:
        """The v1 transport authenticates with the user's login: keep it refreshed before expiry."""
        while True:
            await asyncio.sleep(self.config.login_check_s)
            try:
                await self.api.access_token()
            except TetherError as exc:
                log.warning("could not refresh the login: %s", exc)

    async def _poll_loop(self) -> None:
        backoff = repl_poll_backoff(self.config.poll_sleep_threshold_s)
        recreated = 0
        while True:
            self._wake.clear()
            if self._work is not None and await self._at_capacity():
                continue  # woken: the work changed; look again
            started = self._clock()
            env, secret = self.environment_id, self._secret
            try:
                assert env is not None and secret is not None
                work = await self.api.poll_for_work(env, secret,
                                                    reclaim_older_than_ms=self._poll.reclaim_older_than_ms)
            except BridgeFatalError as exc:
                if self._reconnecting or (env, secret) != (self.environment_id, self._secret):
                    await self._settled.wait()  # re-registering (the old secret is refused meanwhile)
                    continue
                if exc.status in (404, 410) and recreated < MAX_ENV_RECREATIONS:
                    recreated += 1
                    self._set_state("reconnecting", "environment lost, recreating session")
                    if not await self._do_reconnect():
                        self._fail("reconnection failed")
                        return
                    continue
                self._fail("session expired · /remote-control to reconnect" if exc.expired or exc.status == 410
                           else exc.message)
                return
            except (ApiUnavailable, ApiError, ProtocolError) as exc:
                decision = backoff.failure(self._clock(), self._rnd, getattr(exc, "retry_after", None))
                if decision.delay is None:
                    self._fail("connection to server lost")
                    return
                if self._transport is None:
                    self._set_state("reconnecting", f"poll failed: {exc.message}")
                if self._work is not None:
                    await self._heartbeat()
                await asyncio.sleep(decision.delay)
                continue
            backoff.success(self._clock())
            recreated = 0
            if work is not None:
                await self._handle_work(work)
                continue
            if self._transport is None and self.status.state == "reconnecting":
                self._set_state("ready")
            if self._work is None:
                interval = self._poll.poll_interval_ms_not_at_capacity / 1000.0
                await wait_event(self._wake, max(0.0, interval - (self._clock() - started)))

    async def _at_capacity(self) -> bool:
        """Heartbeat the work until the at-capacity interval ends (False: poll now) or the work
        changes (True). A sleep that overran (the machine slept) ends it at once: poll now."""
        hb = heartbeat_interval_s(self._poll, self.server_config.lease_ttl_seconds)
        deadline = self._clock() + self._poll.poll_interval_ms_at_capacity / 1000.0
        while self._work is not None and self._clock() < deadline:
            before = self._clock()
            if await wait_event(self._wake, hb):
                return True
            if overslept(hb, self._clock() - before, self.config.oversleep_s):
                log.info("a %.0f s wait took %.0f s (the machine slept?): polling now", hb, self._clock() - before)
                await self._heartbeat()
                return self._work is None
            await self._heartbeat()
            if self._work is None:
                return True
        return False

    async def _heartbeat(self) -> None:
        work = self._work
        if work is None or self.environment_id is None:
            return
        try:
            await self.api.heartbeat_work(self.environment_id, work.id, work.token)
        except BridgeFatalError as exc:
            log.info("heartbeat of work %s refused (%s): asking for a fresh work item", work.id, exc.message)
            await self._lease_lost()
        except (ApiError, ApiUnavailable, ProtocolError) as exc:
            log.info("heartbeat failed: %s", exc.message)

    async def _lease_lost(self) -> None:
        """The work item is gone (lease lapsed, token expired, superseded): drop its transport and
        have the session re-queued (E7) so the next poll brings a fresh item in seconds."""
        self._set_state("reconnecting", "Work item lease expired, fetching fresh token")
        self._work = None
        await self._drop_transport()
        if self.environment_id is not None and self.session_id is not None:
            try:
                await self.api.reconnect_session(self.environment_id, self.session_id)
            except BridgeFatalError as exc:
                if exc.status == 404:  # the session (archived elsewhere) or the environment is gone
                    log.info("cannot re-queue %s (%s): reconnecting", self.session_id, exc.message)
                    if not await self._do_reconnect():
                        self._fail("reconnection failed")
                    return
                log.warning("bridge/reconnect failed: %s", exc.message)
            except TetherError as exc:
                log.warning("bridge/reconnect failed (%s); the server re-queues the session when the lease lapses",
                            exc.message)
        self._wake.set()

    # ---- work ------------------------------------------------------------------------------------

    async def _handle_work(self, work: WorkItem) -> None:
        assert self.environment_id is not None
        try:
            secret = decode_work_secret(work.secret)
        except WorkSecretError as exc:
            log.warning("work %s has a bad secret (%s); releasing it", work.id, exc)
            with contextlib.suppress(TetherError):
                await self.api.stop_work(self.environment_id, work.id, force=False)
            return
        token = secret.session_ingress_token
        try:
            await self.api.acknowledge_work(self.environment_id, work.id, token)
        except BridgeFatalError as exc:
            log.info("work %s is gone (%s)", work.id, exc.message)
            return
        except (ApiError, ApiUnavailable, ProtocolError) as exc:
            log.info("ack of %s failed (%s); going on", work.id, exc.message)
        if work.data_type != "session":
            return  # healthcheck: acknowledged, nothing to run
        if (self.session_id is None or not is_valid_id(work.data_id)
                or not same_session_id(work.data_id, self.session_id)):
            log.warning("work %s is for session %s, not ours (%s); ignoring it", work.id, work.data_id,
                        self.session_id)
            return
        if self._pointer_written:
            pointers.refresh_pointer(self.options.directory, self.options.home)
        if self._work is not None and self._work.id == work.id:
            return  # the same item again (its ack was lost)
        self._work = _Work(work.id, token)
        await self._drop_transport()
        try:
            transport = await self._make_transport(work.data_id, secret)
        except (TetherError, ValueError) as exc:
            log.warning("no transport for work %s: %s", work.id, exc)
            self._work = None
            with contextlib.suppress(TetherError):
                await self.api.stop_work(self.environment_id, work.id, force=False)
            return
        self._install(transport)

    async def _make_transport(self, session_id: str, secret: Any) -> SessionTransport:
        cfg = self.config
        if secret.use_code_sessions:  # CCR v2: the worker token, registered for a new epoch
            return await make_transport(secret, base_url=self.api.server, session_id=session_id,
                                        v2_config=V2Config(), from_sequence_num=self._sequence)
        hybrid = HybridConfig(ping_interval=cfg.ws_ping_s, sleep_threshold=cfg.ws_sleep_threshold_s,
                              keep_alive_interval=cfg.ws_keep_alive_s)

        def token() -> str:  # the REPL's v1 transport uses the login, re-read before each (re)connect
            current = self.api.current_access_token
            if current is None:
                raise RuntimeError("not logged in")
            return current

        return HybridTransport(self.api.server, session_id, token, config=hybrid)

    # ---- losing things ---------------------------------------------------------------------------

    async def _transport_lost(self, info: TransportClosed) -> None:
        """``handleTransportPermanentClose``: 1000 → the session ended; else reconnect."""
        if info.code == 1000:
            self._fail("session ended")
            return
        self._set_state("reconnecting", f"Remote Control connection lost (code {info.code})")
        if not await self._do_reconnect():
            self._fail("reconnection failed")

    async def _do_reconnect(self) -> bool:
        """Strategy 1: the same environment and session (nothing re-sent). Strategy 2: a new
        session on the (new) environment, which gets the whole history. One at a time (a lost
        transport and a refused heartbeat may both ask)."""
        if self._reconnecting:
            return True
        self._reconnecting = True
        self._settled.clear()
        try:
            return await self._reconnect_strategies()
        finally:
            self._reconnecting = False
            self._settled.set()

    async def _reconnect_strategies(self) -> bool:
        await self._drop_transport()
        self._work = None
        self._wake.set()
        old_env = self.environment_id
        try:
            reattached = await self._register(old_env)
        except TetherError as exc:
            log.warning("re-registering failed: %s", exc.message)
            return False
        if reattached and self.environment_id is not None and self.session_id is not None:
            try:
                await self.api.reconnect_session(self.environment_id, self.session_id)
                self._set_state("ready")
                return True
            except TetherError as exc:
                log.info("the session cannot be re-queued (%s); creating a new one", exc.message)
        if self.session_id is not None:
            await self._archive()
        old_session = self.session_id
        try:
            await self._create_session()
        except TetherError as exc:
            log.warning("creating a new session failed: %s", exc.message)
            return False
        log.info("session %s replaced by %s", old_session, self.session_id)
        self._sequence = None
        self._carried = []  # they belong to the old session; the history flush re-sends the conversation
        self._pushed_title = None
        self.filter.new_session()
        self._write_pointer()
        await self._push_initial_title()
        self._set_state("ready")
        return True

    # ---- teardown --------------------------------------------------------------------------------

    async def _teardown(self) -> None:
        if self.options.perpetual:  # local only: the lease lapses and the next start re-attaches
            if self._pointer_written:
                pointers.refresh_pointer(self.options.directory, self.options.home)
            await self._drop_transport()
            return
        await self._close_with_result()
        work, self._work = self._work, None
        stop = self._stop_work(work.id) if work is not None and self.environment_id else _nothing()
        await asyncio.gather(stop, self._archive())
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.close()
        await self._deregister()
        if self._pointer_written:
            pointers.clear_pointer(self.options.directory, self.options.home)

    async def _stop_work(self, work_id: str) -> None:
        assert self.environment_id is not None
        try:
            async with asyncio.timeout(self.config.teardown_archive_timeout_s):
                await self.api.stop_work(self.environment_id, work_id, force=True)
        except (TimeoutError, TetherError) as exc:
            log.info("stopping work %s: %s", work_id, exc)

    async def _deregister(self) -> None:
        if self.environment_id is None:
            return
        try:
            await self.api.deregister_environment(self.environment_id)
        except TetherError as exc:
            log.warning("could not deregister %s: %s", self.environment_id, exc.message)


async def _nothing() -> None:
    return None
