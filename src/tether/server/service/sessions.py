"""Sessions: create, read, rename, archive (docs/protocol.md §3, §4.2). Every write happens here, in
one transaction, and queues its own ``session_update`` frame for after the commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tether.errors import Conflict, InvalidRequest, NotFound, TetherError
from tether.protocol.archive import SUCCEEDED_ON_RESTART
from tether.protocol.ids import SessionId, new_body
from tether.protocol.messages import PERMISSION_MODES
from tether.protocol.runner_policy import (
    RunnerCandidate,
    RunnerPolicyError,
    check_auth,
    check_session_context,
    pick_runner,
)
from tether.protocol.session_status import next_status
from tether.server import jsonio
from tether.server.auth.service import Principal
from tether.server.clock import now
from tether.server.config import Config
from tether.server.hub import Hub, Ingest, Live, SessionClosed
from tether.server.service.dispatch import Dispatcher
from tether.server.service.effects import expire_pending
from tether.server.service.log import EventLog, load_session
from tether.server.store import EventIn, Store, StoredEvent, Tx
from tether.server.store.records import DeliveryState, EnvironmentRecord, InternalEvent, SessionRecord
from tether.server.views import is_online, session_update_frame

__all__ = ["NewSession", "Sessions"]

MODES = ("default", "acceptEdits", "bypassPermissions", "plan", "dontAsk")
assert set(MODES) == PERMISSION_MODES


def parse_title(body: dict[str, Any]) -> str | None:
    title = body.get("title")
    if title is None:
        return None
    if not isinstance(title, str) or len(title) > 500:
        raise InvalidRequest("'title' must be a string of at most 500 characters.")
    return title.strip()


@dataclass(frozen=True)
class NewSession:
    """The fields of S1 / C1, checked (docs/protocol.md §3)."""

    title: str | None = None
    environment_id: str | None = None
    on_runner: bool = False  # ``target: "runner"``: the org's least busy online runner
    permission_mode: str | None = None
    session_context: dict[str, Any] = field(default_factory=dict)
    auth: list[Any] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    source: str | None = None

    @classmethod
    def from_body(cls, body: dict[str, Any], max_bytes: int) -> NewSession:
        env_id = body.get("environment_id")
        if env_id is not None and (not isinstance(env_id, str) or not env_id):
            raise InvalidRequest("'environment_id' must be a non-empty string.")
        mode = body.get("permission_mode")
        if mode is not None and mode not in MODES:
            raise InvalidRequest(f"'permission_mode' must be one of {', '.join(MODES)}.")
        context = {} if body.get("session_context") is None else body["session_context"]
        if not isinstance(context, dict):
            raise InvalidRequest("'session_context' must be an object.")
        target = body.get("target")
        if target is not None and target != "runner":
            raise InvalidRequest("'target' must be 'runner' (or left out).")
        if target is not None and env_id is not None:
            raise InvalidRequest("Give 'environment_id' or 'target', not both.")
        try:
            check_session_context(context)
            auth = check_auth(body.get("auth"))
        except RunnerPolicyError as exc:
            raise InvalidRequest(str(exc)) from None
        tags = [] if body.get("tags") is None else body["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InvalidRequest("'tags' must be a list of strings.")
        source = body.get("source")
        if source is not None and not isinstance(source, str):
            raise InvalidRequest("'source' must be a string.")
        jsonio.check_size(context, max_bytes, "'session_context'")
        jsonio.check_size(tags, max_bytes, "'tags'")
        return cls(parse_title(body), env_id, target == "runner", mode, context, auth, tags, source)


class Sessions:
    def __init__(self, config: Config, store: Store, hub: Hub, log: EventLog, dispatcher: Dispatcher) -> None:
        self.config = config
        self.store = store
        self.hub = hub
        self.log = log
        self.dispatcher = dispatcher

    def _frame(self, session: SessionRecord) -> Live:
        return session_update_frame(session, now(), self.config.worker_heartbeat_ttl_s)

    # ---- reads ----------------------------------------------------------------------------
    async def get(self, body: str, org_id: str) -> tuple[SessionRecord, bool | None]:
        """The session and whether its environment is online (None: it has none)."""
        async with self.store.read() as tx:
            session = await load_session(tx, body, org_id)
            env = await tx.environments.get(session.environment_id) if session.environment_id else None
        if not session.environment_id:
            return session, None
        return session, env is not None and is_online(env, self.config.poll_interval_s, now())

    async def session(self, body: str, org_id: str) -> SessionRecord:
        """The session in the caller's organisation (404 otherwise)."""
        async with self.store.read() as tx:
            return await load_session(tx, body, org_id)

    async def of_org(self, org_id: str, *, limit: int, environment_id: str | None,
                     status: str | None) -> list[tuple[SessionRecord, bool | None]]:
        async with self.store.read() as tx:
            rows = await tx.sessions.of_org(org_id, limit=limit, environment_id=environment_id, status=status)
            envs = {e.id: e for e in await tx.environments.of_org(org_id)}
        t = now()
        out: list[tuple[SessionRecord, bool | None]] = []
        for row in rows:
            env = envs.get(row.environment_id) if row.environment_id else None
            online = is_online(env, self.config.poll_interval_s, t) if env else None
            out.append((row, online))
        return out

    async def require_writer_of(self, body: str, principal: Principal) -> None:
        """Another organisation's session is 404 whatever the caller's role (no existence oracle,
        docs/protocol.md §1); only then does a viewer learn that it may not write (403)."""
        async with self.store.read() as tx:
            await load_session(tx, body, principal.org_id)
        principal.require_writer()

    async def events_page(self, body: str, org_id: str, *, limit: int, before_id: str | None,
                          after_id: str | None) -> tuple[list[StoredEvent], bool]:
        """At most ``limit`` events and ``max_page_bytes`` of them, and whether there is more."""
        async with self.store.read() as tx:
            await load_session(tx, body, org_id)
            before = await _anchor(tx, body, before_id)
            after = await _anchor(tx, body, after_id)
            return await tx.events.page(body, limit=limit, after_seq=after, before_seq=before,
                                        max_bytes=self.config.limits.max_page_bytes)

    async def undelivered(self, body: str, org_id: str, limit: int) -> list[DeliveryState]:
        async with self.store.read() as tx:
            await load_session(tx, body, org_id)
            return await tx.events.undelivered_states(body, limit)

    async def transcript(self, body: str, org_id: str, cursor: int, limit: int) -> tuple[list[InternalEvent], bool]:
        """C3: the v2 transcript rows (subagents too), a page at a time."""
        async with self.store.read() as tx:
            await load_session(tx, body, org_id)
            return await tx.internal_events.after(body, cursor, limit, True, self.config.limits.max_page_bytes)

    # ---- writes ---------------------------------------------------------------------------
    async def create(self, principal: Principal, new: NewSession, *, kind: str,
                     initial: Sequence[EventIn] = ()) -> SessionRecord:
        """The session, its first inbound events and its work item, in one transaction."""
        t = now()
        async with self.store.write() as tx:
            env_id = await self._pick_runner(tx, principal.org_id) if new.on_runner else new.environment_id
            env = await tx.environments.get(env_id) if env_id is not None else None
            if env_id is not None and (env is None or env.org_id != principal.org_id):
                raise NotFound("No such environment.")
            session = SessionRecord(
                id=SessionId(new_body()), org_id=principal.org_id, user_id=principal.user_id,
                environment_id=env.id if env is not None else None, kind=kind, title=new.title or "",
                title_explicit=bool(new.title), status="idle", source=new.source,
                permission_mode=new.permission_mode, session_context=new.session_context, tags=new.tags,
                worker_epoch=0, worker_status=None, worker_last_seen=None, external_metadata={},
                internal_metadata={"_runner_auth": new.auth} if new.auth else {}, last_seq=0, created_at=t,
                updated_at=t, archived_at=None, archive_reason=None, successor_id=None)
            await tx.sessions.insert(session)
            if env is not None:
                await _link_predecessor(tx, env, session.id)
            await tx.audit.insert(principal.org_id, principal.user_id, "session.create", f"session_{session.id}",
                                  {"environment_id": env_id}, t)
            result = Ingest(stored=await tx.events.append(session.id, 0, initial, t))
            await self.log.client_effects(tx, session, result, principal.user_id)
            if result.stored:
                session = replace(session, status=result.status or session.status,
                                  title=result.title or session.title, last_seq=result.stored[-1].seq)
                await tx.sessions.update(session.id, status=session.status, title=session.title)
            body = session.id
            tx.after_commit(lambda: self.hub.publish(body, result))
        return session

    async def _pick_runner(self, tx: Tx, org_id: str) -> str:
        """``target: "runner"``: the organisation's online runner (``cloud`` environment) with the most
        free room; 409 ``runner_unavailable`` when none is online (a state of the organisation, not a
        server fault: clients must not retry it as a 5xx)."""
        envs = [e for e in await tx.environments.of_org(org_id) if e.kind == "cloud" and e.state == "active"]
        counts = await tx.work.active_counts([e.id for e in envs])
        t = now()
        chosen = pick_runner([RunnerCandidate(e.id, is_online(e, self.config.poll_interval_s, t),
                                              counts.get(e.id, 0), e.max_sessions) for e in envs])
        if chosen is None:
            raise TetherError("No runner is online for this organisation. Start one with `tether runner` (or "
                              "`tether server --runner`), or create the session on a machine's environment.",
                              error_type="runner_unavailable", status=409)
        return chosen

    async def rename(self, body: str, principal: Principal, title: str, explicit: bool) -> None:
        """A derived title (``explicit=False``: a REPL bridge's placeholder or summary) never
        replaces one a person chose."""
        async with self.store.write() as tx:
            session = await load_session(tx, body, principal.org_id, for_update=True)
            if not explicit and session.title_explicit:
                return
            await tx.sessions.update(session.id, title=title, title_explicit=explicit, updated_at=now())
            frame = self._frame(replace(session, title=title, title_explicit=explicit))
            tx.after_commit(lambda: self.hub.publish_frames(body, [frame]))

    async def archive(self, body: str, principal: Principal, reason: str | None) -> None:
        """The session ends: open permission requests expire, its work is superseded, its worker
        sockets close with 4001 (``SessionClosed``)."""
        t = now()
        async with self.store.write() as tx:
            session = await load_session(tx, body, principal.org_id, for_update=True)
            if session.archived_at:
                raise Conflict("The session is already archived.", error_type="already_archived")
            session = await expire_pending(tx, self.hub, session, "archived")
            status = next_status(session.status, "archived")
            await tx.sessions.update(session.id, status=status, archived_at=t, updated_at=t, archive_reason=reason)
            await self.dispatcher.supersede(tx, session.id, close_streams=False)  # SessionClosed closes: 4001
            await tx.audit.insert(principal.org_id, principal.user_id, "session.archive", f"session_{body}",
                                  {"reason": reason} if reason else None, t)
            frames: list[Live | SessionClosed] = [
                self._frame(replace(session, status=status, archived_at=t, archive_reason=reason)), SessionClosed()]
            tx.after_commit(lambda: self.hub.publish_frames(body, frames))


async def _anchor(tx: Tx, body: str, event_id: str | None) -> int | None:
    if event_id is None:
        return None
    ev = await tx.events.by_id(body, event_id)
    if ev is None:
        raise InvalidRequest(f"Unknown event id {event_id!r}.")
    return ev.seq


async def _link_predecessor(tx: Tx, env: EnvironmentRecord, body: SessionId) -> None:
    """A session created on a machine and directory whose last session ended because its bridge
    went away (or was replaced) continues it: record it as that session's successor."""
    if not env.directory:
        return
    previous = await tx.sessions.to_succeed(env.org_id, env.machine_name, env.directory,
                                            sorted(SUCCEEDED_ON_RESTART))
    if previous is not None:
        await tx.sessions.update(previous, successor_id=body)
