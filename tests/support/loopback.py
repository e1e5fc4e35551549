"""An asyncio TCP server on a free loopback port, in the test's own event loop: the part
:class:`tests.support.fake_http.FakeHTTP` and :class:`tests.support.cut_proxy.CutProxy` share."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self


class LoopbackServer:
    """Subclasses implement :meth:`_serve` (one call per connection).

    Connection handlers are tracked so that leaving the ``async with`` cancels the ones still
    running (a streaming reply or a piped connection would otherwise outlive the test).
    """

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._tracked, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        # a connection accepted just before close has its handler task created but not started:
        # one turn of the loop lets it register (and so be cancelled into its finally, which
        # closes the socket) instead of being dropped with the transport open
        await asyncio.sleep(0)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _tracked(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError
