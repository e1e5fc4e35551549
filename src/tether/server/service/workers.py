"""A session's worker: who may act as it, its presence and epochs, its v2 state, deliveries and
transcript (docs/protocol.md §4.4, §4.5). Presence changes — a v1 socket opening or closing, a v2
worker stating its status, registering, heartbeating or falling silent past the heartbeat TTL —
each publish a ``session_update`` carrying the worker's health (§8.4)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from tether.errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound
from tether.protocol import epochs
from tether.protocol import session_status as presence
from tether.protocol.merge_patch import merge_one_level
from tether.server import jsonio
from tether.server.auth.secrets import kind_of
from tether.server.auth.service import Auth, Principal
from tether.server.auth.worker_jwt import WorkerClaims
from tether.server.clock import now
from tether.server.config import Config
from tether.server.delivery import DeliveryRecorder
from tether.server.hub import Hub, Live
from tether.server.service.dispatch import Dispatcher
from tether.server.service.log import load_session
from tether.server.service.presence import V1Presence
from tether.server.store import Store, StoredEvent
from tether.server.store.records import InternalEvent, SessionRecord
from tether.server.streams import kid_key, token_key, user_key, work_key
from tether.server.views import session_update_frame

log = logging.getLogger("tether.server.workers")

__all__ = ["Caller", "WorkerConnection", "WorkerConnections", "WorkerState", "Workers", "worker_keys"]

DELIVERY_STATES = ("received", "processing", "processed")


@dataclass(frozen=True)
class Caller:
    """Who holds a session-ingress connection: a worker token, or a person (REPL v1 bridge)."""

    secret: str
    claims: WorkerClaims | None = None
    principal: Principal | None = None

    @property
    def actor(self) -> str:
        return self.principal.user_id if self.principal is not None else "worker"

    def keys(self) -> list[str]:
        """What revokes it (streams.py): the token and its user, or the worker's work item and the
        token's signing key."""
        if self.principal is not None:
            return [token_key(self.principal.token_id), user_key(self.principal.user_id)]
        return worker_keys(self.claims) if self.claims is not None else []


def worker_keys(claims: WorkerClaims) -> list[str]:
    """What closes a worker's stream (streams.py): its work item ending, its token's key retired."""
    keys = [work_key(claims.work_id)] if claims.work_id else []
    return [*keys, kid_key(claims.kid)] if claims.kid else keys


class WorkerConnection:
    """One open v1 worker socket: the control messages sent on it that are not confirmed yet.

    A worker that sent ``X-Tether-Receipts`` at the upgrade (Tether's transport) confirms each one
    with a receipt frame; for the others (the stock CLI) the legacy rule applies: confirmed once
    the worker speaks after it was sent — unsound when the socket dies with the frame unread
    (output posted meanwhile may predate it), which is why Tether's workers send receipts."""

    def __init__(self, body: str, caller: Caller, receipts: bool = False) -> None:
        self.body = body
        self.caller = caller
        self.receipts = receipts
        self.unconfirmed: list[StoredEvent] = []  # control messages sent on this socket


class WorkerConnections:
    """The open v1 worker sockets of each session (one process's: sockets are local)."""

    def __init__(self) -> None:
        self._by_session: dict[str, set[WorkerConnection]] = {}

    def add(self, conn: WorkerConnection) -> bool:
        """Register ``conn``; True when it is the session's first open socket."""
        conns = self._by_session.setdefault(conn.body, set())
        conns.add(conn)
        return len(conns) == 1

    def remove(self, conn: WorkerConnection) -> bool:
        """Forget ``conn``; True when the session has no open socket left."""
        conns = self._by_session.get(conn.body)
        if conns is None or conn not in conns:
            return False
        conns.discard(conn)
        if conns:
            return False
        del self._by_session[conn.body]
        return True

    def of(self, body: str) -> Collection[WorkerConnection]:
        """The session's open sockets (the live set: iterate it without awaiting)."""
        return self._by_session.get(body, ())

    def sessions(self) -> Collection[str]:
        """The sessions with a socket open here (the live set: copy it before awaiting)."""
        return self._by_session.keys()


@dataclass(frozen=True)
class WorkerState:
    """A v2 worker's ``PUT /worker`` (W2), checked."""

    epoch: int
    status: presence.WorkerStatus | None = None
    disconnecting: bool = False
    external_metadata: Mapping[str, Any] | None = None
    internal_metadata: Mapping[str, Any] | None = None


class Workers:
    def __init__(self, config: Config, store: Store, hub: Hub, auth: Auth, dispatcher: Dispatcher,
                 recorder: DeliveryRecorder) -> None:
        self.config = config
        self.store = store
        self.hub = hub
        self.auth = auth
        self.dispatcher = dispatcher
        self.recorder = recorder
        self.connections = WorkerConnections()
        self.v1_presence = V1Presence(config, store, hub, self._frame, self.connections.sessions)

    def _frame(self, session: SessionRecord) -> Live:
        return session_update_frame(session, now(), self.config.worker_heartbeat_ttl_s)

    # ---- who is calling ---------------------------------------------------------------------
    async def session_of(self, body: str, claims: WorkerClaims) -> SessionRecord:
        """The session a worker token names (in its organisation)."""
        async with self.store.read() as tx:
            return await load_session(tx, body, claims.org_id)

    async def caller(self, token: str | None, body: str, *, write: bool, check_session: bool = True,
                     check_work: bool = True) -> Caller:
        """A worker token of this session whose work is live, or a user credential of its org.

        A worker token is signed for exactly one session, so the hot write path skips the
        session lookup (``check_session=False``): appending finds a missing or archived session
        anyway, and the work check is a cached look-up (dispatch.py). ``check_work=False``: the
        caller's write transaction checks the worker token's work item (EventLog.checks_work_in_tx).
        """
        if not token:
            raise AuthenticationFailed("Session ingress needs 'Authorization: Bearer <token>'.")
        if kind_of(token) == "jwt" or token.startswith("sk-ant-si-"):
            claims = self.auth.worker_for_session(token, body)
            if write:
                if check_work:
                    await self.dispatcher.check_worker_write(claims)
            else:
                await self.dispatcher.check_worker_read(claims)
            caller = Caller(token, claims=claims)
            if not check_session:
                return caller
            org_id = claims.org_id
        else:
            principal = await self.auth.principal(token)
            org_id = principal.org_id
            caller = Caller(token, principal=principal)
        async with self.store.read() as tx:
            session = await load_session(tx, body, org_id)  # before any role check: no existence oracle
        if session.archived_at:
            raise NotFound("The session is archived.")
        if caller.principal is not None:
            caller.principal.require_writer()
        return caller

    # ---- presence ---------------------------------------------------------------------------
    async def reset_presence(self) -> None:
        """At start: v1 worker sockets do not survive a restart, so this instance's are gone
        (another instance's are not: presence.py)."""
        await self.v1_presence.start()

    async def run_presence_sweep(self) -> None:
        """Until cancelled: every ``lease_check_interval_s``, tell clients of workers that fell silent."""
        interval = self.config.lease_check_interval_s
        while True:
            await asyncio.sleep(interval)  # a period, not a wait for a condition
            try:
                await self.sweep_presence(lookback_s=3 * interval)
            except Exception:  # the sweep must outlive one bad pass
                log.exception("worker presence sweep failed")

    # ---- v1 sockets -------------------------------------------------------------------------
    async def socket_opened(self, conn: WorkerConnection) -> None:
        self.connections.add(conn)
        await self.v1_presence.set(conn.body, "connected")

    async def socket_closed(self, conn: WorkerConnection) -> None:
        if self.connections.remove(conn):
            await self.v1_presence.set(conn.body, "disconnected")

    def confirm_sent_controls(self, body: str) -> None:
        """Legacy v1 rule (workers without receipts): a control message is confirmed once the worker
        speaks after it was sent (written with the next batch of delivery states, server/delivery.py)."""
        for conn in self.connections.of(body):
            if not conn.receipts and conn.unconfirmed:
                sent, conn.unconfirmed = conn.unconfirmed, []
                for ev in sent:
                    self.recorder.moved(ev, "processed")

    def confirm_receipts(self, conn: WorkerConnection, uuids: list[str]) -> None:
        """The worker confirmed reading these control messages (a receipt frame on this socket)."""
        wanted = set(uuids)
        confirmed = [ev for ev in conn.unconfirmed if ev.uuid in wanted]
        if confirmed:
            conn.unconfirmed = [ev for ev in conn.unconfirmed if ev.uuid not in wanted]
            for ev in confirmed:
                self.recorder.moved(ev, "processed")

    # ---- v2 ---------------------------------------------------------------------------------
    def check_epoch(self, session: SessionRecord, epoch: int) -> None:
        """Only the current worker writes (409 ``epoch_superseded``), and never to an archived session."""
        try:
            epochs.check_epoch(session.worker_epoch, epoch)
        except epochs.EpochSuperseded as exc:
            raise Conflict(f"A newer worker (epoch {exc.current}) superseded epoch {exc.presented}.",
                           error_type="epoch_superseded") from None
        if session.archived_at:
            raise Conflict("The session is archived.", error_type="already_archived")

    async def register(self, body: str) -> int:
        """A new worker of the session (W1, C2): the next epoch, which supersedes the last one."""
        async with self.store.write() as tx:
            session = await load_session(tx, body, for_update=True)
            if session.archived_at:
                raise Conflict("The session is archived.", error_type="already_archived")
            epoch = epochs.next_epoch(session.worker_epoch)
            t = now()
            await tx.sessions.update(session.id, worker_epoch=epoch, worker_last_seen=t, worker_status="idle")
            frame = self._frame(replace(session, worker_epoch=epoch, worker_status="idle", worker_last_seen=t))
            tx.after_commit(lambda: self.hub.publish_frames(body, [frame]))
        return epoch

    async def bridge(self, body: str, principal: Principal) -> tuple[str, int]:
        """C2 ``/bridge``: a new epoch and a worker token for it (no work item: env-less v2)."""
        async with self.store.read() as tx:
            session = await load_session(tx, body, principal.org_id)  # before any role check
        principal.require_writer()
        principal.require_policy()
        epoch = await self.register(body)
        assert self.auth.keys is not None
        token, _ = self.auth.keys.mint(session_body=body, org_id=principal.org_id,
                                       environment_id=session.environment_id, epoch=epoch, work_id=None,
                                       now=now(), ttl=self.config.worker_token_ttl_s)
        async with self.store.write() as tx:
            await tx.audit.insert(principal.org_id, principal.user_id, "session.bridge", f"cse_{body}",
                                  {"epoch": epoch}, now())
        return token, epoch

    async def report(self, body: str, state: WorkerState) -> None:
        """W2 ``PUT /worker``: status and metadata; the session's status follows the worker's word."""
        async with self.store.write() as tx:
            session = await load_session(tx, body, for_update=True)
            self.check_epoch(session, state.epoch)
            updates: dict[str, Any] = {"worker_last_seen": now()}
            for key, patch, current in (("external_metadata", state.external_metadata, session.external_metadata),
                                        ("internal_metadata", state.internal_metadata, session.internal_metadata)):
                if patch is not None:
                    updates[key] = merge_one_level(current, dict(patch))
                    jsonio.check_size(updates[key], self.config.limits.max_event_bytes, f"'{key}' (merged)")
            updates["worker_status"] = presence.presence_on_report(session.worker_status, state.status,
                                                                   state.disconnecting)
            updates["status"] = presence.reported_status(session.status, state.status)
            changed = (updates["status"], updates["worker_status"]) != (session.status, session.worker_status)
            await tx.sessions.update(session.id, **updates, updated_at=now())
            if changed:
                frame = self._frame(replace(session, **updates))
                tx.after_commit(lambda: self.hub.publish_frames(body, [frame]))

    async def heartbeat(self, body: str, epoch: int) -> None:
        async with self.store.write() as tx:
            session = await load_session(tx, body, for_update=True)
            self.check_epoch(session, epoch)
            values: dict[str, Any] = {"worker_last_seen": now()}
            revived = presence.presence_on_heartbeat(session.worker_status)
            if revived is not None:
                values["worker_status"] = revived
            await tx.sessions.update(session.id, **values)
            if revived is not None or not self._connected(session):  # back from silence: tell the clients
                frame = self._frame(replace(session, **values))
                tx.after_commit(lambda: self.hub.publish_frames(body, [frame]))

    def _connected(self, session: SessionRecord) -> bool:
        return presence.worker_connected(session.worker_status, session.worker_last_seen, now(),
                                         self.config.worker_heartbeat_ttl_s)

    async def sweep_presence(self, lookback_s: float) -> int:
        """Tell the clients of v2 workers that fell silent past the heartbeat TTL within the last
        ``lookback_s`` (a frame equal to the last one sent is dropped by the hub): the number told."""
        t = now()
        ttl = self.config.worker_heartbeat_ttl_s
        async with self.store.read() as tx:
            lapsed = await tx.sessions.with_silent_workers(t - ttl - lookback_s, t - ttl)
        for session in lapsed:
            self.hub.publish_frames(session.id, [self._frame(session)])
        return len(lapsed)

    async def deliveries(self, body: str, by_status: Mapping[str, list[str]]) -> None:
        """W9: inbound events move forward (received → processing → processed), never back."""
        async with self.store.write() as tx:
            moved: list[StoredEvent] = []
            for status in DELIVERY_STATES:  # in order, so a batch may carry received then processed
                ids = by_status.get(status)
                if ids:
                    moved += await tx.events.set_delivery(body, uuids=ids, event_ids=ids, status=status)
            # written before the answer (the worker acknowledged them); subscribers hear of a move
            # once, though a stream may have told them already (server/delivery.py)
            if moved:
                tx.after_commit(lambda: self.hub.publish_frames(body, self.recorder.saved(moved)))

    async def append_internal(self, rows: list[InternalEvent]) -> None:
        """W7: v2 transcript rows (deduplicated by uuid)."""
        async with self.store.write() as tx:
            await tx.internal_events.append(rows)

    async def internal_events(self, body: str, cursor: int, subagents: bool) -> tuple[list[InternalEvent], bool]:
        async with self.store.read() as tx:
            return await tx.internal_events.after(body, cursor, 500, subagents, self.config.limits.max_page_bytes)


def parse_state(payload: Mapping[str, Any], epoch: int) -> WorkerState:
    """W2's body, checked (400 on a wrong field)."""
    status = payload.get("worker_status")
    if status is not None and status not in presence.WORKER_STATUSES:
        raise InvalidRequest(f"'worker_status' must be one of {', '.join(presence.WORKER_STATUSES)}.")
    metadata = {}
    for key in ("external_metadata", "internal_metadata"):
        if key in payload:
            if not isinstance(payload[key], dict):
                raise InvalidRequest(f"'{key}' must be an object.")
            metadata[key] = payload[key]
    details = payload.get("requires_action_details")
    if details is not None and not isinstance(details, dict):
        raise InvalidRequest("'requires_action_details' must be an object or null.")
    return WorkerState(epoch, status, payload.get("connection_status") == "disconnected",
                       metadata.get("external_metadata"), metadata.get("internal_metadata"))
