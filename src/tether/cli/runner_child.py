"""`tether server --runner`: the runner as a child process of the server CLI.

The server never imports runner (bridge) code: the runner is a separate ``tether runner`` process,
started once the server listens, with a personal token the server CLI minted in its own data
directory (the way ``tether up`` logs its bridge in) handed over in ``TETHER_TOKEN`` (never on the
command line). On SIGINT/SIGTERM the runner stops *first* — its teardown stops work, removes session
directories, archives and deregisters, which needs the server — and the server exits after it
(or after :data:`RUNNER_STOP_S`). A second signal kills the runner and stops the server at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Final

log = logging.getLogger("tether.server.runner")

RUNNER_STOP_S: Final = 60.0


def runner_argv(server_data: pathlib.Path, *, agent: str | None, capacity: int | None,
                allow_local: Sequence[pathlib.Path], time_limit: float | None) -> list[str]:
    """``tether runner`` for the server's data directory: sessions under ``<data>/runner``, and
    the server's data (its database) hidden from sandboxed agents."""
    data = pathlib.Path(os.path.realpath(server_data))
    argv = [sys.executable, "-m", "tether.cli.main", "runner", "--data-dir", str(data / "runner"),
            "--hide", str(data), "--json"]
    if agent:
        argv += ["--agent", agent]
    if capacity:
        argv += ["--capacity", str(capacity)]
    for path in allow_local:
        argv += ["--allow-local", str(path)]
    if time_limit is not None:
        argv += ["--time-limit", str(time_limit)]
    return argv


def local_url(host: str, port: int, tls: bool, public_url: str | None) -> str:
    """How the runner on this machine reaches the server: loopback over plain HTTP; with TLS the
    configured URL (the certificate names it)."""
    if tls:
        if public_url:
            return public_url.rstrip("/")
        return f"https://{host}:{port}"
    wildcard = host in ("0.0.0.0", "::", "")
    name = "127.0.0.1" if wildcard else (f"[{host}]" if ":" in host else host)
    return f"http://{name}:{port}"


class RunnerChild:
    def __init__(self, argv: list[str], *, server_url: str, token: str, data_dir: pathlib.Path) -> None:
        self.argv = argv
        self.server_url = server_url
        self.token = token
        self.log_path = data_dir / "runner.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._lock = threading.Lock()

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_TOKEN")}
        env.update(TETHER_SERVER=self.server_url, TETHER_TOKEN=self.token, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)  # signals reach it from us, in order
        print(f"Runner started (pid {self.proc.pid}; log: {self.log_path})", flush=True)
        threading.Thread(target=self._watch, name="runner-watch", daemon=True).start()

    def _watch(self) -> None:
        assert self.proc is not None
        code = self.proc.wait()
        if not self._stopping:
            log.error("the runner exited on its own (status %s); see %s. Sessions cannot be created on this "
                      "server until it runs again (restart `tether server --runner`).", code, self.log_path)

    def stop_first(self, then: Callable[[], None]) -> bool:
        """Ask the runner to stop and call ``then`` once it has (from a thread). False when there is
        nothing to wait for — the caller exits now (a second signal kills the runner)."""
        with self._lock:
            proc = self.proc
            if proc is None or proc.poll() is not None:
                return False
            if self._stopping:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                return False
            self._stopping = True
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)

        def wait_then() -> None:
            try:
                proc.wait(RUNNER_STOP_S)
            except subprocess.TimeoutExpired:
                log.warning("the runner did not stop within %.0f s; killing it", RUNNER_STOP_S)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            then()

        threading.Thread(target=wait_then, name="runner-stop", daemon=True).start()
        return True
