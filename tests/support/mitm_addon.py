"""mitmproxy addon for the stock-CLI conformance test (loaded by ``mitmdump -s``; imports nothing of Tether).

* ``CONNECT`` to any host but the allowed one (``api.anthropic.com``) is refused with 403 before
  anything is dialled, so nothing can leave the machine;
* requests to the allowed host are rewritten to the local ``tether server``
  (``TETHER_MITM_UPSTREAM=127.0.0.1:<port>``, plain HTTP); any other request is answered 403;
* every request is appended to ``TETHER_MITM_LOG`` as one JSON line: method, path, request body,
  then (a second line keyed by the same id) the status the server answered;
* responses are streamed (the SSE stream must not be buffered).

Run with ``--set connection_strategy=lazy --set upstream_cert=false`` so mitmproxy never
connects to the real host on its own (the default eager strategy dials it on CONNECT).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from typing import Any

from mitmproxy import http

ALLOWED = os.environ.get("TETHER_MITM_ALLOWED_HOST", "api.anthropic.com")
UPSTREAM_HOST, _, UPSTREAM_PORT = os.environ["TETHER_MITM_UPSTREAM"].rpartition(":")
LOG = os.environ["TETHER_MITM_LOG"]
_ids = itertools.count(1)
_lock = threading.Lock()


def _write(record: dict[str, Any]) -> None:
    line = json.dumps(record, separators=(",", ":")) + "\n"
    with _lock, open(LOG, "a", encoding="utf-8") as fh:
        fh.write(line)


def _body(flow: http.HTTPFlow) -> Any:
    raw = flow.request.get_content(strict=False) or b""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw[:2000].decode("utf-8", "replace")


class Interceptor:
    def http_connect(self, flow: http.HTTPFlow) -> None:
        host = flow.request.host
        if host != ALLOWED:
            _write({"kind": "refused_connect", "host": host, "port": flow.request.port})
            flow.response = http.Response.make(403, b"refused by the test proxy\n")

    def request(self, flow: http.HTTPFlow) -> None:
        rid = next(_ids)
        flow.metadata["tether_id"] = rid
        host = flow.request.pretty_host
        if host != ALLOWED:
            _write({"kind": "refused_request", "id": rid, "host": host, "method": flow.request.method,
                    "path": flow.request.path})
            flow.response = http.Response.make(403, b"refused by the test proxy\n")
            return
        _write({"kind": "request", "id": rid, "method": flow.request.method, "path": flow.request.path,
                "headers": {k.lower(): v for k, v in flow.request.headers.items()}, "body": _body(flow)})
        flow.request.scheme = "http"
        flow.request.host = UPSTREAM_HOST
        flow.request.port = int(UPSTREAM_PORT)
        flow.request.headers["host"] = f"{UPSTREAM_HOST}:{UPSTREAM_PORT}"

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        if "text/event-stream" in flow.response.headers.get("content-type", ""):
            flow.response.stream = True  # an SSE stream must flow through, not be buffered
            self._log_response(flow, None)

    def response(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        if flow.response.stream:
            return
        body = None
        if flow.response.status_code >= 400:
            body = (flow.response.get_content(strict=False) or b"")[:2000].decode("utf-8", "replace")
        self._log_response(flow, body)

    def _log_response(self, flow: http.HTTPFlow, body: str | None) -> None:
        assert flow.response is not None
        rid = flow.metadata.get("tether_id")
        if rid is not None:
            _write({"kind": "response", "id": rid, "status": flow.response.status_code,
                    "content_type": flow.response.headers.get("content-type", ""), "body": body})

    def error(self, flow: http.HTTPFlow) -> None:
        rid = flow.metadata.get("tether_id")
        _write({"kind": "error", "id": rid, "error": str(flow.error)})


addons = [Interceptor()]
