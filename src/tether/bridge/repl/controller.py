"""Remote control of one conversation, switched on and off by its front end (docs/protocol.md §12.1, §12.10).

:class:`RemoteControl` is what a front end holds: :meth:`~RemoteControl.start` checks the gates
(logged in, organisation policy, the dead-token backoff, a fresh login, the version floors of
``GET /v1/bridge/config``), picks the core (v2 env-less when the server turns ``repl_v2`` on, and
always in mirror mode; else v1) and runs it in the front end's task group;
:meth:`~RemoteControl.stop` tears it down. A failed bridge stays visible as ``failed`` for 10 s and
then switches off with a message; three failed starts in a row and remote control stays off for
the rest of the process. A login that keeps failing is remembered across processes
(``$TETHER_HOME/repl-bridge.json``) and not tried again until it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pathlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tether import __version__
from tether.bridge.repl.core import InitFailed, ReplBridgeCore
from tether.bridge.repl.env_based import EnvBasedBridge
from tether.bridge.repl.env_less import EnvLessBridge
from tether.bridge.repl.frontend import FrontEnd, ReplBridgeConfig, ReplBridgeOptions
from tether.client.api import ApiClient, BridgeConfig
from tether.client.credentials import CredentialsError, CredentialStore, tether_home
from tether.client.hybrid import boot_clock
from tether.errors import ApiUnavailable, BridgeFatalError, TetherError
from tether.protocol.access_token import is_expired
from tether.protocol.bridge_state import BridgeStatus, InitFailures
from tether.protocol.repl_config import DeadToken, Gate, check_gates, parse_env_less_config

log = logging.getLogger("tether.bridge.repl")
DEAD_TOKEN_FILE = "repl-bridge.json"


def _dead_token_path(home: pathlib.Path | None) -> pathlib.Path:
    return (home or tether_home()) / DEAD_TOKEN_FILE


def load_dead_token(home: pathlib.Path | None) -> DeadToken | None:
    try:
        data = json.loads(_dead_token_path(home).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    expires, count = data.get("dead_token_expires_at"), data.get("dead_token_fail_count")
    if isinstance(count, bool) or not isinstance(count, int):
        return None
    return DeadToken(float(expires) if isinstance(expires, int | float) else None, count)


def save_dead_token(home: pathlib.Path | None, record: DeadToken) -> None:
    path = _dead_token_path(home)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(json.dumps({"dead_token_expires_at": record.expires_at,
                                    "dead_token_fail_count": record.fail_count}))


class RemoteControl:
    def __init__(self, front: FrontEnd, options: ReplBridgeOptions, *, store: CredentialStore | None = None,
                 server: str | None = None, config: ReplBridgeConfig | None = None,
                 clock: Callable[[], float] = boot_clock, wall: Callable[[], float] = time.time) -> None:
        self.front = front
        self.options = options
        self.store = store or CredentialStore()
        self.server = server
        self.config = config or ReplBridgeConfig()
        self._clock = clock
        self._wall = wall
        self.failures = InitFailures()
        self.core: ReplBridgeCore | None = None
        self._task: asyncio.Task[None] | None = None
        self._status: BridgeStatus | None = None  # the last status shown (kept while failed)
        self._showing_failure = False

    @property
    def active(self) -> bool:
        """Switched on (starting, running or tearing down)."""
        return self._task is not None and not self._task.done()

    @property
    def status(self) -> BridgeStatus | None:
        return self.core.status if self.core is not None else self._status

    def start(self, tg: asyncio.TaskGroup, *, name: str | None = None, mirror: bool | None = None) -> bool:
        """Switch remote control on in the front end's task group; False when it cannot be."""
        if self.active:
            return False
        if self.failures.disabled:
            self.front.bridge_notice(self.failures.message())
            return False
        options = self.options
        if name:
            options = replace(options, name=name)
        if mirror is not None:
            options = replace(options, mirror=mirror)
        self._task = tg.create_task(self._run(options), name="remote-control")
        return True

    async def stop(self) -> None:
        """Switch remote control off (ordered teardown); returns once it is off."""
        task = self._task
        if task is None:
            return
        if self.core is not None and not self._showing_failure:
            self.core.stop()
        else:  # still checking the gates, or only showing a failure: nothing to tear down
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def rename(self, title: str) -> None:
        self.options = replace(self.options, renamed=title)
        if self.core is not None:
            self.core.rename(title)

    # ---- one run ---------------------------------------------------------------------------------

    async def _run(self, options: ReplBridgeOptions) -> None:
        self._status = BridgeStatus(auto_disable_after=self.config.auto_disable_after_s)
        self.front.bridge_changed(self._status, None)
        try:
            failure = await self._attempt(options)
            if failure is not None:
                await self._show_failure(failure)
        finally:
            self.core = None
            self._status = None
            self._showing_failure = False
            self.front.bridge_changed(None, None)

    async def _attempt(self, options: ReplBridgeOptions) -> str | None:
        """Run one bridge; the failure to show, or None (stopped normally, or skipped silently)."""
        try:
            url = self.store.server_url(self.server)
            creds = self.store.resolve(url)
        except CredentialsError as exc:
            return self._start_failed(f"{exc.message} · run `tether login`")
        store = self.store if creds is not None and creds.source == "file" else None
        async with ApiClient(url, creds, store=store) as api:
            gate, server_config = await self._check_gates(api, options)
            if gate.verdict == "skip":
                log.info("remote control not started: %s", gate.detail)
                return None
            if not gate.ok:
                return self._start_failed(gate.detail or "cannot start")
            core = self._make_core(gate, api, options, server_config)
            self.core = core
            try:
                await core.run()
            except InitFailed as exc:
                self._count_dead_token(api, exc)
                return self._start_failed(exc.message)
            except Exception as exc:  # a bug in the bridge must not take the front end down
                log.exception("the REPL bridge failed")
                return f"internal error: {exc!r}"
            self.failures.succeeded()
            return core.failure

    async def _check_gates(self, api: ApiClient, options: ReplBridgeOptions) -> tuple[Gate, BridgeConfig | None]:
        creds = api.credentials
        if creds is None:
            return Gate("failed", "not logged in · run `tether login`"), None
        dead = load_dead_token(options.home)
        expired = is_expired(now=self._wall(), expires_at=creds.expires_at)
        if expired and not (dead is not None and dead.blocks(creds.expires_at)):
            with contextlib.suppress(TetherError):
                await api.force_refresh()
            fresh = api.credentials
            expired = fresh is None or is_expired(now=self._wall(), expires_at=fresh.expires_at)
        try:
            me = await api.me()
            config = await api.bridge_config()
        except BridgeFatalError as exc:
            if exc.status == 401:
                self._count_dead_token(api, exc)
                return Gate("failed", "your login is no longer valid · run `tether login`"), None
            return Gate("failed", exc.message), None
        except ApiUnavailable as exc:
            return Gate("failed", f"{exc.message} Is the server running?"), None
        except TetherError as exc:
            return Gate("failed", exc.message), None
        policy = me.get("policy") if isinstance(me.get("policy"), dict) else {}
        role = me.get("role") if isinstance(me.get("role"), str) else None
        current = api.credentials
        gate = check_gates(
            logged_in=True, policy_allows=not (isinstance(policy, dict) and policy.get("allow_remote_control") is False),
            role=role, token_expired=expired, dead_token=dead,
            token_expires_at=current.expires_at if current else None, repl_v2=bool(config.raw.get("repl_v2")),
            perpetual=options.perpetual, mirror=options.mirror, version=__version__,
            min_version=config.raw.get("min_version"), v2_min_version=config.raw.get("v2_min_version"))
        if gate.verdict == "failed" and expired:
            self._count_dead_token(api, None)
        return gate, config

    def _make_core(self, gate: Gate, api: ApiClient, options: ReplBridgeOptions,
                   server_config: BridgeConfig | None) -> ReplBridgeCore:
        raw: dict[str, Any] = server_config.raw if server_config is not None else {}
        cap = raw.get("initial_history_cap")
        history_cap = cap if isinstance(cap, int) and not isinstance(cap, bool) else None
        if gate.core == "v2":
            parsed = parse_env_less_config(raw.get("repl_v2_config"))
            if parsed.fell_back:
                log.warning("repl_v2_config rejected, using defaults: %s", "; ".join(parsed.problems))
            return EnvLessBridge(api, self.front, options, self.config, env_less=parsed.config,
                                 history_cap=history_cap, clock=self._clock)
        assert server_config is not None
        return EnvBasedBridge(api, self.front, options, self.config, server_config=server_config,
                              history_cap=history_cap, clock=self._clock)

    def _count_dead_token(self, api: ApiClient, exc: TetherError | None) -> None:
        """A login that failed: remembered so that a dead one is not tried forever."""
        if exc is not None and not (isinstance(exc, BridgeFatalError) and exc.status == 401):
            return
        creds = api.credentials
        expires_at = creds.expires_at if creds is not None else None
        record = (load_dead_token(self.options.home) or DeadToken(None)).after_failure(expires_at)
        save_dead_token(self.options.home, record)

    def _start_failed(self, reason: str) -> str:
        if self.failures.failed(reason):
            return f"{reason} · {self.failures.message()}"
        return reason

    async def _show_failure(self, detail: str) -> None:
        """``failed`` stays in the footer for ``auto_disable_after_s``, then remote control is off."""
        status = self.core.status if self.core is not None else self._status
        if status is None:
            return
        status.update("failed", detail, self._clock())
        self._status = status
        self._showing_failure = True
        self.front.bridge_changed(status, self.core.info() if self.core is not None else None)
        self.front.bridge_notice(f"Remote Control failed · {detail}")
        due = status.auto_disable_at()
        if due is not None:
            await asyncio.sleep(max(0.0, due - self._clock()))
        self.front.bridge_notice("Remote Control is off (it failed; /remote-control to try again).")

