"""A loopback TLS-intercepting proxy (``mitmdump`` with tests/support/mitm_addon.py) that poses as
``api.anthropic.com`` and forwards only to a local `tether server` (plain HTTP); every other host is
refused before anything is dialled. mitmproxy lives in its own venv (``.tools/mitmproxy``,
installed by scripts/install-test-deps): it pins an h11 that Tether's own dependencies cannot use.

Its throwaway CA (generated into a temporary ``confdir``) goes to the client through
``NODE_EXTRA_CA_CERTS``; the client reaches the proxy through ``HTTPS_PROXY``.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from tests.support.server import ROOT, free_port, wait_until

MITMDUMP = ROOT / ".tools" / "mitmproxy" / "bin" / "mitmdump"
ADDON = ROOT / "tests" / "support" / "mitm_addon.py"


def mitmdump_bin() -> pathlib.Path:
    if not os.access(MITMDUMP, os.X_OK):
        raise RuntimeError(f"mitmproxy is not installed at {MITMDUMP}; run scripts/install-test-deps")
    return MITMDUMP


@dataclass
class Exchange:
    """One request the client made and the status it got (None: no answer recorded)."""

    id: int
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int | None = None
    response_body: str | None = None

    @property
    def route(self) -> str:
        """The path below the session URL, e.g. ``/worker/events`` (query dropped)."""
        path = self.path.split("?", 1)[0]
        marker = path.find("/worker")
        return path[marker:] if marker >= 0 else path


@dataclass
class Traffic:
    exchanges: list[Exchange] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def by_route(self) -> dict[str, list[Exchange]]:
        out: dict[str, list[Exchange]] = defaultdict(list)
        for ex in self.exchanges:
            out[f"{ex.method} {ex.route}"].append(ex)
        return out


class Interceptor:
    def __init__(self, workdir: pathlib.Path, upstream_port: int, allowed_host: str = "api.anthropic.com") -> None:
        self.workdir = workdir
        self.upstream_port = upstream_port
        self.allowed_host = allowed_host
        self.port = free_port()
        self.confdir = workdir / "mitm-conf"
        self.log_path = workdir / "mitm-requests.jsonl"
        self.out_path = workdir / "mitm.out"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ca_cert(self) -> pathlib.Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_env(self) -> dict[str, str]:
        return {"HTTPS_PROXY": self.proxy_url, "HTTP_PROXY": self.proxy_url, "https_proxy": self.proxy_url,
                "http_proxy": self.proxy_url, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
                "NODE_EXTRA_CA_CERTS": str(self.ca_cert)}

    def start(self) -> Interceptor:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env.update(TETHER_MITM_UPSTREAM=f"127.0.0.1:{self.upstream_port}", TETHER_MITM_LOG=str(self.log_path),
                   TETHER_MITM_ALLOWED_HOST=self.allowed_host, HOME=str(self.workdir))
        with open(self.out_path, "wb") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [str(mitmdump_bin()), "--listen-host", "127.0.0.1", "--listen-port", str(self.port),
                 "--set", f"confdir={self.confdir}", "--set", "connection_strategy=lazy",
                 "--set", "upstream_cert=false", "--set", "termlog_verbosity=warn", "-q", "-s", str(ADDON)],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir)

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"mitmdump exited early:\n{self.out_path.read_text()[-3000:]}")
            if not self.ca_cert.exists():
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            except OSError:
                return False
            return True

        wait_until(ready, 30, 0.05, "mitmdump to listen")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> Interceptor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def traffic(self) -> Traffic:
        out = Traffic()
        if not self.log_path.exists():
            return out
        by_id: dict[int, Exchange] = {}
        for line in self.log_path.read_text().splitlines():
            rec = json.loads(line)
            kind = rec["kind"]
            if kind == "request":
                ex = Exchange(rec["id"], rec["method"], rec["path"], rec["headers"], rec["body"])
                by_id[ex.id] = ex
                out.exchanges.append(ex)
            elif kind == "response" and rec["id"] in by_id:
                by_id[rec["id"]].status = rec["status"]
                by_id[rec["id"]].response_body = rec.get("body")
            elif kind.startswith("refused"):
                out.refused.append(rec)
            elif kind == "error":
                out.errors.append(rec)
        return out
